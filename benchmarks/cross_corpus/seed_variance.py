"""Where MI-Fuse's seed variance comes from (issue 8): the source model, or the adaptation run from it.

    python benchmarks/cross_corpus/regime_bench.py --quick --seeds 0 1 2 --regimes strong \\
        --methods mi_fuse mf_s7 mf_s8 --variant mf_s7=mifuse:seed=7 --variant mf_s8=mifuse:seed=8 --work W
    python benchmarks/cross_corpus/seed_variance.py --work W --regime strong --methods mi_fuse mf_s7 mf_s8 --out DIR

In the regime benchmark, seed k trains the k-th source model *and* seeds the adaptation from it. The variant rows
``mf_s7`` / ``mf_s8`` adapt from the same k-th source model with a fixed adaptation seed (7, 8). Per (transfer,
source seed) cell this script scores the students on the test half and reports:

* the standard deviation across the adaptation seeds within a cell (the adaptation run's share of the variance),
  next to the standard deviation across the source seeds of each row (the benchmark's "seed std");
* two ways of spending N adaptation runs on one source model, the N students' mean probabilities (an ensemble,
  N times the runtime cost) and their uniform weight average (a "soup", one model): whether restarts would buy
  a higher or steadier student.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import machine  # noqa: E402
from run import TRANSFER_TITLES, TRANSFERS  # noqa: E402

from edgeser.adapt.checkpoint import load_model  # noqa: E402
from edgeser.adapt.data import load_clips, predict_probs  # noqa: E402
from edgeser.manifest import read_manifest  # noqa: E402
from edgeser.metrics import evaluate  # noqa: E402


def weight_soup(nets: list[torch.nn.Module]) -> torch.nn.Module:
    """The uniform average of the networks' parameters and buffers (integer buffers from the first network)."""
    soup = copy.deepcopy(nets[0])
    states = [n.state_dict() for n in nets]
    avg = {
        k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
        for k, v in states[0].items()
    }
    soup.load_state_dict(avg)
    return soup.eval()


def cell(work: Path, regime: str, transfer: str, seed: int, methods: list[str], wavs, clips) -> dict | None:
    """Test UA (%) of each student of one cell, of their ensemble and of their weight soup; None if one is missing."""
    d = work / regime / "adapt" / transfer / f"seed{seed}"
    paths = [d / f"{m}.pt" for m in methods]
    if not all(p.exists() for p in paths):
        return None
    nets = [load_model(p).eval() for p in paths]
    labels = nets[0].cfg.labels
    y = np.array([labels.index(c.label) for c in clips])
    cpu = torch.device("cpu")
    probs = [predict_probs(n, wavs, cpu) for n in nets]
    ua = [100 * evaluate(p, labels, y)["ua"] for p in probs]
    return {
        "ua": dict(zip(methods, ua)),
        "ensemble": 100 * evaluate(np.mean(probs, axis=0), labels, y)["ua"],
        "soup": 100 * evaluate(predict_probs(weight_soup(nets), wavs, cpu), labels, y)["ua"],
        "within_std": statistics.stdev(ua),
    }


def summarise(cells: dict[str, dict[int, dict]], methods: list[str]) -> dict[str, dict]:
    """Per transfer: mean and std over source seeds of each row, the ensemble and the soup; mean within-cell std."""
    out = {}
    for t, by_seed in cells.items():
        rows = {m: [c["ua"][m] for c in by_seed.values()] for m in methods}
        rows["ensemble"] = [c["ensemble"] for c in by_seed.values()]
        rows["soup"] = [c["soup"] for c in by_seed.values()]
        out[t] = {
            "mean": {k: statistics.mean(v) for k, v in rows.items()},
            "seed_std": {k: statistics.stdev(v) if len(v) > 1 else float("nan") for k, v in rows.items()},
            "within_std": statistics.mean(c["within_std"] for c in by_seed.values()),
        }
    return out


def _table_head(title: str, keys: list[str], cols: list[str]) -> list[str]:
    """A section heading and the head of its table: the key columns, ``cols``, the adaptation seeds' std."""
    head = [*keys, *cols, "std across adaptation seeds"]
    return ["", f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def report(r: dict) -> str:
    m, methods = r["machine"], r["methods"]
    cols = [*methods, "ensemble", "soup"]
    text = [
        f"# Seed variance of the adaptation ({r['regime']} regime, quick caps)",
        "",
        f"Command: `{r['command']}` (git {m.get('git_commit', '?')}), {m.get('cpu')} ({m['cores']} cores, shared), torch "
        f"{m.get('torch')}; {r['minutes']:.1f} min. Students from the same source model per (transfer, source seed); "
        f"`{methods[0]}` is the benchmark's row (adaptation seed = source seed), the others fix the adaptation seed.",
        *_table_head("Per cell: test-half UA (%)", ["transfer", "source seed"], cols),
    ]
    for t, by_seed in r["cells"].items():
        for s, c in by_seed.items():
            vals = [c["ua"][k] for k in methods] + [c["ensemble"], c["soup"]]
            text.append(
                f"| {TRANSFER_TITLES[t]} | {s} | "
                + " | ".join(f"{v:.1f}" for v in vals)
                + f" | {c['within_std']:.1f} |"
            )
    text += _table_head(
        "Per transfer: mean ± std across source seeds; mean std across adaptation seeds", ["transfer"], cols
    )
    for t, s in r["summary"].items():
        vals = [f"{s['mean'][k]:.1f} ± {s['seed_std'][k]:.1f}" for k in cols]
        text.append(f"| {TRANSFER_TITLES[t]} | " + " | ".join(vals) + f" | {s['within_std']:.1f} |")
    means = {k: statistics.mean(s["mean"][k] for s in r["summary"].values()) for k in cols}
    text.append("| mean of transfers | " + " | ".join(f"{means[k]:.1f}" for k in cols) + " | |")
    return "\n".join(text) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a regime_bench.py work directory")
    ap.add_argument("--regime", default="strong")
    ap.add_argument("--methods", nargs="+", required=True, help="rows adapted from the same source models")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None, help="folder for results_seed_variance_<regime>_quick.{md,json}")
    args = ap.parse_args()
    if len(args.methods) < 2:
        sys.exit("error: --methods needs at least two rows adapted from the same source models")
    t0 = time.monotonic()
    cells: dict[str, dict[int, dict]] = {}
    for t in TRANSFERS:
        test = args.work / "splits" / t / "test.csv"
        if not test.exists():
            continue
        clips = read_manifest(test)
        wavs = load_clips(clips, 16000, "test clips", progress=False)
        for s in args.seeds:
            c = cell(args.work, args.regime, t, s, args.methods, wavs, clips)
            if c is None:
                print(f"{t} seed {s}: skipped (a student is missing)")
                continue
            cells.setdefault(t, {})[s] = c
            print(f"{t} seed {s}: " + ", ".join(f"{k} {v:.1f}" for k, v in c["ua"].items()), flush=True)
    if not cells:
        sys.exit(f"error: no complete cell under {args.work / args.regime / 'adapt'}")
    result = {
        "command": "python benchmarks/cross_corpus/seed_variance.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "regime": args.regime,
        "methods": args.methods,
        "cells": cells,
        "summary": summarise(cells, args.methods),
        "minutes": (time.monotonic() - t0) / 60,
    }
    md = report(result)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"results_seed_variance_{args.regime}_quick"
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / f"{stem}.md").write_text(md)


if __name__ == "__main__":
    main()
