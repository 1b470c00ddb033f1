"""Training recipes side by side (issue 8, item 3): each recipe's source models, oracle ceiling and MI-Fuse.

    python benchmarks/cross_corpus/recipe_bench.py --recipe v0.1 --recipe default --work /tmp/recipes --jobs 2

A recipe is a set of training-config fields, each set for every training whose config has it (``select`` and
``mixup`` for the source training, ``reverb_prob`` for it and every method): a name of ``regime_bench.RECIPES``,
``default`` for the library defaults, or ``key=value,...``. Each recipe runs the regime benchmark (quick caps,
library-default epochs) in its own work directory, ``--jobs`` recipes at a time: source only (from one corpus,
and leave-one-corpus-out from the other two) and the oracle ceiling (LALM-SFUDA on the true labels), then MI-Fuse
and LALM-SFUDA with the ``--mifuse-regimes`` stand-ins. Rows compare the recipes on the same seeds, transfers
and splits; the paired difference to the first recipe (per seed and transfer) is the figure to read on a noisy
benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import machine  # noqa: E402
from regime_bench import collect, parse_recipe, pct, stats  # noqa: E402
from run import LABELS, LOCO_TRANSFERS, TRANSFER_TITLES, TRANSFERS  # noqa: E402

from edgeser.adapt.checkpoint import load_model  # noqa: E402
from edgeser.adapt.data import load_clips, predict_probs  # noqa: E402
from edgeser.adapt.loader import reverberate, room_response, telephone  # noqa: E402
from edgeser.manifest import read_manifest  # noqa: E402
from edgeser.metrics import unweighted_accuracy  # noqa: E402

#: (regime, method, metric, title, transfers) of the columns: "pairs" are the --transfers (one corpus as the source),
#: "loco" the leave-one-corpus-out transfers (the other two corpora as the source)
COLUMNS = [
    ("oracle", "source_only", "ua", "Source only", "pairs"),
    ("oracle", "source_only", "ua", "Source only, leave-one-corpus-out", "loco"),
    ("oracle", "source_only", "telephone", "Source only, telephone", "pairs"),
    ("oracle", "source_only", "room", "Source only, room", "pairs"),
    ("oracle", "lalm_sfuda", "ua", "Oracle ceiling", "pairs"),
    ("weak", "mi_fuse", "ua", "MI-Fuse (weak LALM)", "pairs"),
    ("weak", "lalm_sfuda", "ua", "LALM-SFUDA (weak)", "pairs"),
    ("mid", "mi_fuse", "ua", "MI-Fuse (mid LALM)", "pairs"),
    ("mid", "lalm_sfuda", "ua", "LALM-SFUDA (mid)", "pairs"),
    ("strong", "mi_fuse", "ua", "MI-Fuse (strong LALM)", "pairs"),
    ("strong", "lalm_sfuda", "ua", "LALM-SFUDA (strong)", "pairs"),
    ("strong", "mi_fuse", "telephone", "MI-Fuse (strong), telephone", "pairs"),
]


def bench_commands(spec: str, work: Path, seeds: list[int], mifuse_regimes: list[str]) -> list[list[str]]:
    """The regime-benchmark runs of one recipe."""
    base = [sys.executable, str(HERE / "regime_bench.py"), "--quick", "--seeds", *map(str, seeds)]
    rec = [] if spec == "default" else ["--recipe", spec]
    tables = ["--work", str(work), "--results", str(work / "tables")]
    cmds = [base + ["--regimes", "oracle", "--methods", "source_only", "lalm_sfuda", *rec, *tables]]
    loco = ["--transfers", *LOCO_TRANSFERS]
    cmds.append(base + ["--regimes", "oracle", "--methods", "source_only", *loco, *rec, *tables])
    if mifuse_regimes:
        cmds.append(base + ["--regimes", *mifuse_regimes, "--methods", "mi_fuse", "lalm_sfuda", *rec, *tables])
    return cmds


def run_recipes(recipes: dict[str, str], work: Path, seeds, mifuse_regimes, jobs: int) -> None:
    """Each recipe's runs in order, ``jobs`` recipes at a time (one torch thread each)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    queue = list(recipes.items())
    running: list[tuple[str, subprocess.Popen]] = []
    while queue or running:
        while queue and len(running) < jobs:
            name, spec = queue.pop(0)
            d = work / name
            d.mkdir(parents=True, exist_ok=True)
            script = " && ".join(shlex.join(c) for c in bench_commands(spec, d, seeds, mifuse_regimes))
            log = open(d / "log.txt", "a")
            print(f"[recipes] {name}: {script}", file=sys.stderr, flush=True)
            running.append((name, subprocess.Popen(["bash", "-c", script], env=env, stdout=log, stderr=log)))
        name, proc = running[0]
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            running.append(running.pop(0))
            continue
        running.pop(0)
        if proc.returncode != 0:
            raise SystemExit(f"recipe {name} failed (exit {proc.returncode}); see {work / name / 'log.txt'}")
        print(f"[recipes] {name} done", file=sys.stderr, flush=True)


#: the test clips through other channels (the hidden domains' microphones, rooms and phones): how robust the
#: model is to what the corpora do not vary; each condition is fixed per clip (seeded), the same for every model
CHANNELS = ("telephone", "room")


def channel_wavs(transfer: str, work: Path) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """``(the classes of the transfer's test clips, the clips through each of CHANNELS)``; the room (RT60
    0.3-0.8 s) is seeded per clip."""
    clips = read_manifest(work / "splits" / transfer / "test.csv")
    clean = load_clips(clips, 16000, "test clips", progress=False)
    rooms = []
    for i, w in enumerate(clean):
        rng = np.random.default_rng([i, 2026])
        rooms.append(reverberate(w, room_response(float(rng.uniform(0.3, 0.8)), 16000, rng)))
    truth = np.array([LABELS.index(c.label) for c in clips])
    return truth, {"telephone": [telephone(w, 16000) for w in clean], "room": rooms}


def channel_scores(results: dict, work: Path) -> None:
    """Adds ``result["channel_ua"]`` (test UA per channel of :data:`CHANNELS`) to every result of
    ``results`` (:func:`regime_bench.collect`'s nesting) that has a checkpoint; computed once per checkpoint
    file and cached in ``<work>/channel_ua.json``."""
    path = work / "channel_ua.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    sets: dict = {}
    each = (
        (transfer, r)
        for by_method in results.values()
        for by_transfer in by_method.values()
        for transfer, by_seed in by_transfer.items()
        for r in by_seed.values()
    )
    for transfer, r in each:
        ckpt = r.get("checkpoint")
        if not ckpt or not Path(ckpt).exists():
            continue
        # the source model is shared by both transfers from its corpus: the test set is in the key
        key = f"{transfer}:{ckpt}@{Path(ckpt).stat().st_mtime_ns}"
        if key not in done:
            if transfer not in sets:
                sets[transfer] = channel_wavs(transfer, work)
            truth, channels = sets[transfer]
            net = load_model(ckpt)
            done[key] = {
                ch: float(
                    unweighted_accuracy(
                        truth, predict_probs(net, wavs, torch.device("cpu")).argmax(axis=1), len(LABELS)
                    )
                )
                for ch, wavs in channels.items()
            }
            path.write_text(json.dumps(done, indent=1) + "\n")
        r["channel_ua"] = done[key]


def as_metric(results: dict, metric: str) -> dict:
    """``results`` with each result's ``ua`` replaced by ``metric`` ("ua" or a channel of CHANNELS); results
    without that score are left out."""
    if metric == "ua":
        return results
    return {
        r: {
            m: {
                t: {s: {**x, "ua": x["channel_ua"][metric]} for s, x in bs.items() if "channel_ua" in x}
                for t, bs in bt.items()
            }
            for m, bt in bm.items()
        }
        for r, bm in results.items()
    }


def paired(a: dict, b: dict, transfers, seeds) -> dict | None:
    """Mean and std of ``b - a`` over the (transfer, seed) pairs both have, in UA points."""
    d = [b[t][s]["ua"] - a[t][s]["ua"] for t in transfers for s in seeds if s in a.get(t, {}) and s in b.get(t, {})]
    if not d:
        return None
    return {"mean": float(np.mean(d)), "std": float(np.std(d, ddof=1)) if len(d) > 1 else None, "n": len(d)}


def report(recipes: dict[str, str], work: Path, out: Path, seeds, transfers, wall_s: float) -> None:
    sets = {"pairs": list(transfers), "loco": list(LOCO_TRANSFERS)}
    res = {
        name: collect(
            work / name,
            sets["pairs"] + sets["loco"],
            seeds,
            sorted({c[0] for c in COLUMNS}),
            ["source_only", "lalm_sfuda", "mi_fuse"],
        )
        for name in recipes
    }
    for name in recipes:
        channel_scores(res[name], work / name)

    def present(col: tuple) -> bool:
        r, m, *_, kind = col
        return any(t in res[n].get(r, {}).get(m, {}) for n in recipes for t in sets[kind])

    cols = [c for c in COLUMNS if present(c)]
    first = next(iter(recipes))
    numbers: dict = {}
    head = "| recipe | " + " | ".join(c[3] for c in cols) + " |"
    rows = [head, "|" + "---|" * (len(cols) + 1)]
    for name in recipes:
        numbers[name] = {"recipe": parse_recipe(recipes[name]) if recipes[name] != "default" else {}, "columns": {}}
        cells = []
        for r, m, metric, title, kind in cols:
            mine, base = as_metric(res[name], metric), as_metric(res[first], metric)
            s = stats(mine, r, m, sets[kind], seeds)
            d = paired(base.get(r, {}).get(m, {}), mine.get(r, {}).get(m, {}), sets[kind], seeds)
            numbers[name]["columns"][title] = {**s, "paired_vs_first": d}
            cell = "–" if s["average"] is None else pct(s["average"])
            if s["average_std"] is not None:
                cell += f" ± {pct(s['average_std'])}"
            if s["max_transfer_std"] is not None:
                cell += f" (max {pct(s['max_transfer_std'])})"
            if name != first and d is not None:
                cell += f"; {100 * d['mean']:+.1f}"
            cells.append(cell)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    per = []
    for *_, title, kind in cols:
        ts = sets[kind]
        per += [f"\n### {title}\n", "| recipe | " + " | ".join(TRANSFER_TITLES[t] for t in ts) + " |"]
        per.append("|" + "---|" * (len(ts) + 1))
        for name in recipes:
            pt = numbers[name]["columns"][title]["per_transfer"]
            per.append(
                f"| {name} | "
                + " | ".join(
                    "–"
                    if not pt.get(t, {}).get("n")
                    else pct(pt[t]["mean"]) + (f" ± {pct(pt[t]['std'])}" if pt[t]["std"] is not None else "")
                    for t in ts
                )
                + " |"
            )
    command = "python benchmarks/cross_corpus/recipe_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    specs = "\n".join(f"- `{n}`: `{recipes[n]}` = {json.dumps(numbers[n]['recipe'])}" for n in recipes)
    m = machine()
    md = f"""# Training recipes side by side (quick caps)

Command: `{command}`; git {str(m.get("git_commit", "?"))[:7]}; {m.get("cpu", "?")} ({m.get("cores")} cores, shared), torch {m.get("torch", "?")}, Python
{m.get("python", "?")}; {wall_s / 60:.1f} min this invocation. Seeds {", ".join(map(str, seeds))}; transfers
{", ".join(TRANSFER_TITLES[t] for t in transfers)}; library-default epochs; at most 300 source-training, 100
source-validation, 200 adaptation and 240 test clips per transfer (the regime benchmark's quick caps).

Recipes (training-config fields, each for every training whose config has it):
{specs}

## Test-half UA (%), mean over the transfers ± std over seeds (max: the largest per-transfer seed std); after
the semicolon, the paired difference to `{first}` (mean over seeds and transfers, points)

{chr(10).join(rows)}

## Per transfer (mean ± std over seeds)
{chr(10).join(per)}
"""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results_recipe_quick.md").write_text(md)
    (out / "results_recipe_quick.json").write_text(
        json.dumps(
            {"command": command, "machine": m, "seeds": seeds, "transfers": transfers, "recipes": numbers}, indent=1
        )
        + "\n"
    )
    print(f"[recipes] wrote {out / 'results_recipe_quick.md'}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", action="append", required=True, help="NAME or NAME=key=value,... (first: the baseline)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--results", type=Path, default=HERE)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--transfers", nargs="+", choices=list(TRANSFERS), default=list(TRANSFERS))
    ap.add_argument("--mifuse-regimes", nargs="*", default=["strong"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    recipes = {}
    for text in args.recipe:
        name, _, spec = text.partition("=")
        recipes[name] = spec or name
    t0 = time.monotonic()
    if not args.report_only:
        run_recipes(recipes, args.work, args.seeds, args.mifuse_regimes, args.jobs)
    report(recipes, args.work, args.results, args.seeds, args.transfers, time.monotonic() - t0)


if __name__ == "__main__":
    main()
