"""Cold start of the runtime (issue 10, item 2): ``import edgeser`` + ``Recognizer.load()`` (the bundled model)
in a fresh interpreter, timed from before the import to the loaded recognizer, and the process's peak RSS
after it; each repetition is a new process. Targets: <= 0.25 s and <= 70 MB.

    python benchmarks/runtime/cold_start.py [--repeats 9] [--out benchmarks/runtime]

Results: ``cold_start.{md,json}`` in ``--out``. ``--git-ref REF`` also measures the package as it was at
``REF`` (a ``git worktree`` in a temporary folder), interleaved with the working tree's, for a side-by-side
ratio on this noisy machine."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import machine  # noqa: E402

PROBE = """
import resource, sys, time
t0 = time.perf_counter()
import edgeser
from edgeser.runtime import Recognizer
rec = Recognizer.load()
t = time.perf_counter() - t0
heavy = [m for m in ("torch", "asyncio", "soundfile") if m in sys.modules]
print(t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, ",".join(heavy) or "-")
"""


def probe(root: Path) -> tuple[float, float, str]:
    env = {"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    if r.returncode != 0:
        sys.exit(f"error: the probe failed: {r.stderr.strip().splitlines()[-1]}")
    t, rss, heavy = r.stdout.split()
    return float(t), float(rss), heavy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--git-ref", help="also measure the package at this git ref, interleaved")
    args = ap.parse_args()
    roots = {"working tree": REPO}
    tmp = None
    if args.git_ref:
        tmp = Path(tempfile.mkdtemp(prefix="edgeser-cold-"))
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmp / "ref"), args.git_ref],
                       check=True, capture_output=True)  # fmt: skip
        roots[args.git_ref] = tmp / "ref"
    runs: dict[str, list] = {k: [] for k in roots}
    try:
        for _ in range(args.repeats):
            for name, root in roots.items():
                runs[name].append(probe(root))
    finally:
        if tmp is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "ref")], check=False)
    stats = {
        name: {
            "load_s_median": statistics.median(r[0] for r in rs),
            "load_s_range": [min(r[0] for r in rs), max(r[0] for r in rs)],
            "peak_rss_mb_median": statistics.median(r[1] for r in rs),
            "heavy_modules": sorted({r[2] for r in rs}),
        }
        for name, rs in runs.items()
    }
    m = machine()
    cmd = "python benchmarks/runtime/cold_start.py " + " ".join(sys.argv[1:])
    meta = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": m}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.json").write_text(json.dumps({**meta, "stats": stats, "runs": runs}, indent=1) + "\n")
    lines = [
        "# Runtime cold start: `import edgeser` + `Recognizer.load()` in a fresh process",
        "",
        f"Command: `{cmd}`; {meta['date']}; git {m.get('git_commit', '?')}; {m.get('cpu', '?')} ({m['cores']} cores, "
        f"shared); Python {m['python']}, ONNX Runtime {m.get('onnxruntime')}, numpy {m.get('numpy')}.",
        f"{args.repeats} fresh processes per row (interleaved), one thread; time from before `import edgeser` to the "
        "loaded bundled model; peak RSS (`ru_maxrss`) after loading. Targets (issue 10): <= 0.25 s, <= 70 MB.",
        "",
        "| package | import + load, median (range) | peak RSS, median | heavy modules imported |",
        "|---|---|---|---|",
    ]
    for name, s in stats.items():
        lo, hi = s["load_s_range"]
        lines.append(
            f"| {name} | {s['load_s_median']:.3f} s ({lo:.3f}-{hi:.3f}) | {s['peak_rss_mb_median']:.1f} MB | "
            f"{', '.join(s['heavy_modules'])} |"
        )
    (args.out / "cold_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
