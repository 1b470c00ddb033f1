"""Scale benchmark (issue 11, item 4): adaptation throughput and peak memory against the number of clips.

    python benchmarks/scale/run.py                       # 500, 2000 and 10000 clips, disk and memory stores
    python benchmarks/scale/run.py --sizes 500 2000      # fewer sizes

Target clips are real EmoDB and nEMO recordings from ../shared/data repeated under new names (symlinks in a
temporary folder). Each (size, store) runs in a fresh process: one MI-Fuse epoch from an untrained
default-size model, the LALM's answers given as an array (``FixedSamples``, random: the teachers' quality
does not change memory or speed) and the EMA classifier teacher (K = 2 MC-dropout samples); CPU, one
thread. Recorded: peak RSS of that process (``ru_maxrss``), seconds to decode the clips and to run the
epoch, and clips per second. Results: ``results.{md,json}`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import DATA, corpus, machine, write_manifest  # noqa: E402

LABELS = ["angry", "happy", "neutral", "sad"]


def make_clips(n: int, folder: Path) -> Path:
    """A manifest of ``n`` clips: EmoDB and nEMO files (4 classes) repeated under new names."""
    pool = [c for name in ("emodb", "nemo") for c in corpus(name) if c.label in LABELS]
    pool.sort(key=lambda c: str(c.path))
    # a fixed shuffle: every size gets the same mix of corpora and clip lengths (the longest clips set the
    # size of the whole-clip passes' batches)
    order = __import__("numpy").random.default_rng(0).permutation(len(pool))
    pool = [pool[i] for i in order]
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = pool[i % len(pool)]
        link = folder / f"clip{i:06d}{c.path.suffix}"
        if not link.exists():
            link.symlink_to(c.path)
        out.append(type(c)(path=link, label=c.label, speaker=c.speaker))
    return write_manifest(out, folder / "manifest.csv")


def child(manifest: str, store: str, work: str) -> None:
    """One MI-Fuse epoch; prints a JSON line with the timings and the peak RSS."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from edgeser.adapt.data import load_target_audio
    from edgeser.adapt.mifuse import EMATeacher, MIFuseConfig, mifuse_adapt
    from edgeser.adapt.teachers import FixedSamples
    from edgeser.manifest import read_manifest
    from edgeser.testing.models import untrained_checkpoint

    clips = read_manifest(manifest)
    t0 = time.monotonic()
    load_target_audio(clips, 16000, progress=False, store=store)  # decoding alone, timed (then freed)
    decode_s = time.monotonic() - t0
    rss_after_decode = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    source = untrained_checkpoint(Path(work) / "source.pt", LABELS)
    votes = np.eye(4)[np.random.default_rng(0).integers(0, 4, (len(clips), 5))]
    cfg = MIFuseConfig(epochs=1, device="cpu", audio_store=store)
    t0 = time.monotonic()
    mifuse_adapt(
        source, clips, [FixedSamples(votes, labels=LABELS), EMATeacher(k=2)], Path(work) / "student.pt", cfg,
        progress=False, report_labels=False,
    )  # fmt: skip
    run_s = time.monotonic() - t0
    print(
        json.dumps(
            {
                "clips": len(clips),
                "store": store,
                "decode_s": round(decode_s, 1),
                "epoch_s_incl_decode": round(run_s, 1),
                "clips_per_s": round(len(clips) / run_s, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "peak_rss_after_decoding_only_mb": round(rss_after_decode / 1024, 1),
            }
        ),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 10000])
    ap.add_argument("--stores", nargs="+", default=["disk", "memory"])
    ap.add_argument("--results", type=Path, default=HERE)
    ap.add_argument("--child", nargs=3, metavar=("MANIFEST", "STORE", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeser-scale-") as tmp:
        for n in args.sizes:
            manifest = make_clips(n, Path(tmp) / f"clips{n}")
            for store in args.stores:
                work = Path(tmp) / f"work{n}_{store}"
                work.mkdir()
                print(f"[scale] {n} clips, {store} store ...", file=sys.stderr, flush=True)
                r = subprocess.run(
                    [sys.executable, __file__, "--child", str(manifest), store, str(work)],
                    capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                )  # fmt: skip
                if r.returncode != 0:
                    sys.exit(f"error: {n} clips, {store}: {r.stderr[-2000:]}")
                row = json.loads(r.stdout.strip().splitlines()[-1])
                print(f"[scale] {row}", file=sys.stderr, flush=True)
                rows.append(row)
    by = {(r["clips"], r["store"]): r for r in rows}
    ratios = {}
    for store in args.stores:
        sizes = [n for n in args.sizes if (n, store) in by]
        base = by[(sizes[0], store)]["peak_rss_mb"]
        ratios[store] = {str(n): round(by[(n, store)]["peak_rss_mb"] / base, 3) for n in sizes}
    command = "python benchmarks/scale/run.py " + " ".join(sys.argv[1:])
    m = machine()
    out = {"command": command, "data": str(DATA), "rows": rows, "peak_rss_ratio_to_smallest": ratios,
           "wall_s": round(time.monotonic() - t_start, 1), "machine": m}  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    table = ["| clips | store | decode s | epoch s (incl. decode) | clips/s | peak RSS MB | RSS / smallest |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        table.append(
            f"| {r['clips']} | {r['store']} | {r['decode_s']} | {r['epoch_s_incl_decode']} | {r['clips_per_s']} | "
            f"{r['peak_rss_mb']} | {ratios[r['store']][str(r['clips'])]} |"
        )
    md = f"""# Scale benchmark: one MI-Fuse epoch against the number of target clips

Command: `{command}`; git {m.get("git_commit", "?")}; {m.get("cpu", "?")} ({m["cores"]} cores, shared with other
jobs: absolute times are noisy, compare rows of this run), torch {m.get("torch")}, Python {m["python"]}; wall
{out["wall_s"] / 60:.1f} min.

Each row is a fresh process: decode the clips once (timed), then one MI-Fuse epoch (untrained default-size
model, random fixed LALM answers, EMA teacher with K = 2, batch 32, 3 s crops; it decodes the clips again).
Peak RSS is the process's `ru_maxrss`. Target (issue 11): peak RSS at 2,000 clips <= 1.25 x at 500.

{chr(10).join(table)}
"""
    (args.results / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
