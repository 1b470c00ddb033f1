"""Data-parallel adaptation (issue 11, item 2): the same ``edgeser adapt`` (MI-Fuse, library defaults) run
as one process and as ``torchrun --nproc-per-node 2 --no-python edgeser adapt ... --device cpu`` (gloo),
for each seed; each student is exported to ONNX and scored with the runtime on the test half.

    python benchmarks/scale/data_parallel.py                    # EmoDB -> nEMO, strong regime, seeds 0 1 2
    python benchmarks/scale/data_parallel.py --work /tmp/rb/work --seeds 0 1

The transfer, its speaker-disjoint adaptation / test halves, the source models and the LALM stand-in are
those of ``benchmarks/cross_corpus/regime_bench.py`` in quick mode (a work folder of that benchmark is
reused: its source models and LALM answers). The LALM's answers reach the CLI as a predictions file, so
both runs train on the same answers. Both runs get the machine's 2 cores: the one process 2 threads, each
of the 2 processes 1 thread. Results: ``data_parallel.{md,json}`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "cross_corpus"))
from common import machine, write_manifest  # noqa: E402

CMD = "python benchmarks/scale/data_parallel.py"


def edgeser_exe() -> str:
    exe = shutil.which("edgeser", path=str(Path(sys.executable).parent)) or shutil.which("edgeser")
    if exe is None:
        sys.exit("error: the edgeser console script is not installed next to this Python")
    return exe


def write_predictions(clips, samples: np.ndarray, path: Path) -> Path:
    """The stand-in's answers as a predictions file (``--lalm-predictions``): one JSON object per clip."""
    with path.open("w") as f:
        for c, s in zip(clips, samples):
            rows = [None if not np.all(np.isfinite(r)) else [float(v) for v in r] for r in s]
            f.write(json.dumps({"path": str(c.path), "samples": rows}) + "\n")
    return path


def run_cli(args: list[str], procs: int, log: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // procs))}
    exe = edgeser_exe()
    cmd = [exe, *args]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
               "--no-python", *cmd]  # fmt: skip
    t0 = time.monotonic()
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {r.returncode}); see {log}")
    return time.monotonic() - t0


def score_onnx(onnx: Path, test_c, labels: list[str]) -> float:
    from edgeser.adapt.data import load_clips
    from edgeser.metrics import unweighted_accuracy
    from edgeser.runtime import Recognizer

    rec = Recognizer.load(onnx)
    wavs = load_clips(test_c, 16000, "test clips", progress=False)
    pred = [int(np.argmax(rec.predict(w, 16000).probs)) for w in wavs]
    y = [labels.index(c.label) for c in test_c]
    return float(unweighted_accuracy(np.array(y), np.array(pred), len(labels)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "regimes" / "quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--transfer", default="emodb_nemo")
    ap.add_argument("--regime", default="strong")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reuse", action="store_true", help="keep the runs already done (each run's result.json)")
    args = ap.parse_args()

    from regime_bench import CAPS, RegimeBench
    from run import LABELS, TRANSFERS

    from edgeser.adapt.registry import METHODS as ADAPT_METHODS
    from edgeser.adapt.train import TrainConfig

    bench = RegimeBench(
        args.work,
        args.regime,
        mode="quick",
        adapt_epochs=ADAPT_METHODS["mifuse"].config().epochs,
        source_epochs=TrainConfig().epochs,
        caps=CAPS["quick"],
        onnx_check=False,
    )
    src, tgt, _ = TRANSFERS[args.transfer]
    adapt_c, test_c, info = bench.target_sets(tgt)
    out_dir = args.work / "data_parallel" / args.transfer
    out_dir.mkdir(parents=True, exist_ok=True)
    samples, _, _ = bench.lalm_samples(args.transfer, adapt_c, test_c)
    bench.close()
    manifest = write_manifest(adapt_c, out_dir / "adapt.csv")
    preds = write_predictions(adapt_c, samples, out_dir / "lalm_predictions.jsonl")
    runs = []
    for seed in args.seeds:
        source, _ = bench.source_model(src, seed)
        for procs in args.procs:
            d = out_dir / f"seed{seed}" / f"procs{procs}"
            d.mkdir(parents=True, exist_ok=True)
            student = d / "student.pt"
            done = d / "result.json"
            if args.reuse and done.exists():
                row = json.loads(done.read_text())
                from edgeser.adapt.checkpoint import read_checkpoint

                row.setdefault("adapt_ua_reported", read_checkpoint(student)["summary"].get("final_target_ua"))
                runs.append(row)
                print(f"seed {seed}, {procs} process(es): reused {done}", flush=True)
                continue
            adapt_args = ["adapt", "--source-model", str(source), "--target", str(manifest), "--lalm-predictions",
                          str(preds), "--out", str(student), "--seed", str(seed), "--device", "cpu", "--fresh"]  # fmt: skip
            print(f"seed {seed}, {procs} process(es): adapting", flush=True)
            seconds = run_cli(adapt_args, procs, d / "adapt.log")
            onnx = d / "student.onnx"
            run_cli(["export", str(student), "-o", str(onnx)], 1, d / "export.log")
            ua = score_onnx(onnx, test_c, LABELS)
            from edgeser.adapt.checkpoint import read_checkpoint

            summary = read_checkpoint(student)["summary"]
            row = {
                "seed": seed,
                "processes": procs,
                "summary_processes": summary.get("processes"),
                "test_ua": ua,
                # UA on the adaptation half (the clips it adapted on; labels only reported, never trained on)
                "adapt_ua_reported": summary.get("final_target_ua"),
                "seconds": round(seconds, 1),
                "epoch_seconds": round(sum(h.get("seconds", 0) for h in summary["history"]), 1),
                "epochs": summary["epochs"],
                "git": machine().get("git_commit"),
            }
            print(json.dumps(row), flush=True)
            done.write_text(json.dumps(row) + "\n")
            runs.append(row)
    write_results(args, info, runs)


def write_results(args, info: dict, runs: list[dict]) -> None:
    by = {p: [r for r in runs if r["processes"] == p] for p in args.procs}

    def ms(xs):
        return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else None

    stats = {}
    for p, rs in by.items():
        m, s = ms([r["test_ua"] for r in rs])
        am, asd = ms([r["adapt_ua_reported"] for r in rs])
        stats[p] = {"ua_mean": m, "ua_std": s, "adapt_ua_mean": am, "adapt_ua_std": asd,
                    "seconds_mean": float(np.mean([r["seconds"] for r in rs]))}  # fmt: skip
    base = stats[args.procs[0]]["seconds_mean"]
    import torch

    meta = {
        "command": CMD + " " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "torch": torch.__version__,
        "transfer": args.transfer,
        "regime": args.regime,
        "data": {k: info[k] for k in ("n_adapt", "n_test")},
    }
    (HERE / "data_parallel.json").write_text(json.dumps({**meta, "runs": runs, "stats": stats}, indent=1) + "\n")
    m = meta["machine"]
    lines = [
        "# Data-parallel adaptation: 1 process vs torchrun with 2 processes (CPU, gloo)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; git {m.get('git_commit', '?')}; {m.get('cpu', '?')} ({m['cores']} cores, shared with "
        f"other jobs: compare the rows of one run); Python {m['python']}, torch {meta['torch']}, ONNX Runtime "
        f"{m.get('onnxruntime')}.",
        "",
        f"Transfer {args.transfer} (regime-benchmark quick caps: {info['n_adapt']} adaptation clips, {info['n_test']} "
        f"test clips, speaker-disjoint), `edgeser adapt` with library defaults (MI-Fuse), the {args.regime} LALM "
        "stand-in's answers as a predictions file, the student exported to ONNX and scored with the runtime.",
        "",
        "| seed | "
        + " | ".join(f"{p} process{'es' if p > 1 else ''}: test UA / adaptation-half UA (wall s)" for p in args.procs)
        + " |",
        "|---" * (len(args.procs) + 1) + "|",
    ]
    for seed in args.seeds:
        cells = [
            next(
                (
                    f"{r['test_ua']:.3f} / {r['adapt_ua_reported']:.3f} ({r['seconds']:.0f})"
                    for r in by[p]
                    if r["seed"] == seed
                ),
                "-",
            )
            for p in args.procs
        ]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| processes | test UA mean ± seed std | adaptation-half UA mean ± seed std | wall seconds (mean) | ratio to 1 "
        "process |",
        "|---|---|---|---|---|",
    ]
    for p in args.procs:
        s = stats[p]
        std = f" ± {s['ua_std']:.3f}" if s["ua_std"] is not None else ""
        astd = f" ± {s['adapt_ua_std']:.3f}" if s["adapt_ua_std"] is not None else ""
        lines.append(
            f"| {p} | {s['ua_mean']:.3f}{std} | {s['adapt_ua_mean']:.3f}{astd} | {s['seconds_mean']:.0f} | "
            f"{s['seconds_mean'] / base:.2f} |"
        )
    (HERE / "data_parallel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
