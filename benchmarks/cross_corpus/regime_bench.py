"""Regime benchmark (issue 8): the adaptation methods next to LALM teachers of controlled quality.

    python benchmarks/cross_corpus/regime_bench.py --quick    # subsampled sets, library-default epochs
    python benchmarks/cross_corpus/regime_bench.py            # full sets

The transfers, splits, source models and scoring are those of ``run.py`` (the same ``Bench``); the LALM is
one of the stand-ins of ``regimes.py`` (weak / mid / strong / oracle: systematic per-clip mistakes, a bias
toward "neutral", answers outside the label set, 20 % of clips never answered), served on 127.0.0.1 by
``edgeser.testing.openai_server.serve`` and asked through the real HTTP client. Rows that do not use the LALM
(source only, SHOT, NRC) run once per (transfer, seed); the others once per regime. The oracle ceiling is
LALM-SFUDA with the oracle stand-in: the student trained on the adaptation half's true labels.

Every result is one JSON file under ``<work>/<regime or shared>/results/<transfer>/seed<k>/<method>.json``;
a rerun skips what is done. Tables go to ``<results>/results_regimes[_quick].{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import REPO, machine  # noqa: E402
from regimes import REGIMES, regime_answer  # noqa: E402
from run import ALL_TRANSFERS, LABELS, TRANSFER_TITLES, TRANSFERS, Bench, log  # noqa: E402

from edgeser.adapt.data import load_clips  # noqa: E402
from edgeser.adapt.registry import METHODS as ADAPT_METHODS  # noqa: E402
from edgeser.adapt.train import TrainConfig  # noqa: E402
from edgeser.testing.openai_server import serve  # noqa: E402

#: rows that do not depend on the LALM
SHARED = ["source_only", "shot", "nrc"]
#: rows run once per regime (MI-Fuse variants: config overrides of the registry's "mifuse")
PER_REGIME = ["lalm_zero_shot", "lalm_sfuda", "mi_fuse"]
#: extra rows: name -> (registry method, config overrides); more with --variant on the command line
VARIANTS: dict[str, tuple[str, dict]] = {
    "mi_fuse_no_reliability": ("mifuse", {"reliability": "none"}),
    # the EMA teacher fused on every clip and every clip counting 1: MI-Fuse's defaults before 0.2
    "mi_fuse_paper_fusion": ("mifuse", {"moving_weight": 1.0, "partial_weight": "full"}),
    "mi_fuse_rel_budget50": ("mifuse", {"lalm_budget": "50%"}),
    "mi_fuse_rel_budget25": ("mifuse", {"lalm_budget": "25%"}),
    # measured before the reliability prior became the default: compare them with mi_fuse_no_reliability
    "mi_fuse_budget50": ("mifuse", {"lalm_budget": "50%", "reliability": "none"}),
    "mi_fuse_budget25": ("mifuse", {"lalm_budget": "25%", "reliability": "none"}),
}
TITLES = {
    "source_only": "Source only",
    "shot": "SHOT",
    "nrc": "NRC",
    "lalm_zero_shot": "LALM zero-shot",
    "lalm_sfuda": "LALM-SFUDA",
    "mi_fuse": "MI-Fuse",
    "mi_fuse_no_reliability": "MI-Fuse without the reliability prior",
    "mi_fuse_paper_fusion": "MI-Fuse, the EMA teacher fused on every clip (before 0.2)",
    "mi_fuse_rel_budget50": "MI-Fuse, LALM budget 50 %",
    "mi_fuse_rel_budget25": "MI-Fuse, LALM budget 25 %",
    "mi_fuse_budget50": "MI-Fuse without the reliability prior, LALM budget 50 %",
    "mi_fuse_budget25": "MI-Fuse without the reliability prior, LALM budget 25 %",
}
CAPS = {"quick": {"source_train": 300, "source_val": 100, "adapt": 200, "test": 240}, "full": None}


class RegimeBench(Bench):
    """``Bench`` with a regime stand-in as the LALM (``regime=None``: the rows that use no LALM)."""

    def __init__(self, base: Path, regime: str | None, **kw):
        super().__init__(work=base, **kw)
        self.regime = regime
        sub = base / (regime or "shared")
        self.sources_dir = base / "sources"
        self.results_dir = sub / "results"

    def lalm_description(self, transfer: str) -> dict:
        return {"regime": REGIMES[self.regime].to_dict(), "model_name": f"regime-{self.regime}"}

    def lalm_samples(self, transfer: str, adapt_c, test_c):
        if transfer in self.lalm:
            return self.lalm[transfer]
        regime = REGIMES[self.regime]
        clips = adapt_c + test_c
        audios = load_clips(clips, 16000, "LALM stand-in clips", progress=False)
        y = [LABELS.index(c.label) for c in clips]
        name = f"regime-{regime.name}"
        server = serve(regime_answer(regime, audios, y, LABELS), "127.0.0.1", 0, model_name=name)
        self.servers[f"{name}-{transfer}"] = server
        self.lalm[transfer] = self.ask_lalm(
            transfer, name, server[2], name, self.work / f"lalm_regimes_{transfer}.sqlite", adapt_c, test_c
        )
        return self.lalm[transfer]


def register_variants() -> None:
    """MI-Fuse variants are extra rows of ``run.py``'s tables: register them there too."""
    import run

    for k, (method, over) in VARIANTS.items():
        run.VARIANTS[k] = (method, over)
        run.METHOD_TITLES[k] = TITLES.setdefault(k, k)
        if method == "mifuse":
            run.MIFUSE_ROWS.append(k)
            run.MIFUSE_VARIANTS[k] = over


#: training recipes to compare side by side (``--recipe NAME``): FitConfig fields for every training of a run
RECIPES: dict[str, dict] = {
    # edgeser 0.1's: no speed perturbation, room or telephone channel, the last weights (no averaging); the source
    # checkpoint chosen by validation UA, no mixup
    "v0.1": {"speed_prob": 0.0, "reverb_prob": 0.0, "band_prob": 0.0, "average": 0.0, "select": "best", "mixup": 0.0},
}


def parse_recipe(text: str) -> dict:
    """A recipe name of :data:`RECIPES`, or ``key=value,...`` FitConfig fields (values as JSON when they parse)."""
    if text in RECIPES:
        return dict(RECIPES[text])
    return parse_variant(f"recipe=x:{text}")[2]


def _stand_in(regime: str) -> str:
    acc = REGIMES[regime].accuracy
    if acc is None:
        return f'{regime}: deaf (what it perceives does not depend on the class; mostly "neutral")'
    return f"{regime}: accuracy {acc}"


def parse_variant(text: str) -> tuple[str, str, dict]:
    """``name=method:key=value,key=value`` (values parsed as JSON when they parse, else strings)."""
    name, _, rest = text.partition("=")
    method, _, opts = rest.partition(":")
    over = {}
    for kv in filter(None, opts.split(",")):
        k, _, v = kv.partition("=")
        try:
            over[k] = json.loads(v)
        except json.JSONDecodeError:
            over[k] = v
    return name, method, over


# -------------------------------------------------------------------------------------------- report


def collect(base: Path, transfers: list[str], seeds: list[int], regimes: list[str], methods: list[str]) -> dict:
    """``{regime: {method: {transfer: {seed: result}}}}``; shared rows appear under every regime."""
    out: dict = {}
    for r in regimes:
        for m in methods:
            sub = base / ("shared" if m in SHARED else r) / "results"
            for t in transfers:
                for s in seeds:
                    p = sub / t / f"seed{s}" / f"{m}.json"
                    if p.exists():
                        out.setdefault(r, {}).setdefault(m, {}).setdefault(t, {})[s] = json.loads(p.read_text())
    return out


def stats(res: dict, regime: str, method: str, transfers: list[str], seeds: list[int]) -> dict:
    cell = res.get(regime, {}).get(method, {})
    per_t = {}
    for t in transfers:
        xs = [cell[t][s]["ua"] for s in seeds if s in cell.get(t, {})]
        per_t[t] = {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else None, "n": len(xs)}
    full = [s for s in seeds if all(s in cell.get(t, {}) for t in transfers)]
    avg = [float(np.mean([cell[t][s]["ua"] for t in transfers])) for s in full]
    return {
        "per_transfer": per_t if any(v["n"] for v in per_t.values()) else {},
        "average": float(np.mean(avg)) if avg else None,
        "average_std": float(np.std(avg, ddof=1)) if len(avg) > 1 else None,
        "max_transfer_std": max((v["std"] for v in per_t.values() if v.get("std") is not None), default=None),
    }


def _is_mifuse(m: str) -> bool:
    return m == "mi_fuse" or VARIANTS.get(m, ("",))[0] == "mifuse"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def weights_of(res: dict, regime: str, method: str) -> dict:
    """Mean final fusion weight per teacher (over transfers and seeds)."""
    acc: dict[str, list[float]] = {}
    for ts in res.get(regime, {}).get(method, {}).values():
        for r in ts.values():
            last = ((r.get("diagnostics") or {}).get("per_epoch") or [{}])[-1]
            for n, w in (last.get("weights") or {}).items():
                acc.setdefault(n, []).append(w)
    return {n: float(np.mean(v)) for n, v in acc.items()}


def kappas_of(res: dict, regime: str, method: str) -> dict:
    """Mean reliability kappa and prior per teacher (over transfers and seeds), from the checkpoints' histories."""
    from edgeser.adapt.checkpoint import read_checkpoint

    acc: dict[str, dict[str, list[float]]] = {}
    for ts in res.get(regime, {}).get(method, {}).values():
        for r in ts.values():
            path = r.get("checkpoint")
            if not path or not Path(path).exists():
                continue
            hist = read_checkpoint(path)["summary"].get("history") or [{}]
            for n, v in (hist[0].get("reliability") or {}).items():
                acc.setdefault(n, {"kappa": [], "prior": []})
                acc[n]["kappa"].append(v["kappa"])
                acc[n]["prior"].append(v["prior"])
    return {n: {k: float(np.mean(x)) for k, x in v.items()} for n, v in acc.items()}


def report(base: Path, results: Path, mode: str, transfers, seeds, regimes, methods, wall_s: float) -> None:
    res = collect(base, transfers, seeds, regimes, methods)
    numbers = {r: {m: stats(res, r, m, transfers, seeds) for m in methods} for r in regimes}
    head = "| method | " + " | ".join(regimes) + " |"
    rows = [head, "|" + "---|" * (len(regimes) + 1)]
    for m in methods:
        cells = []
        for r in regimes:
            s = numbers[r][m]
            cells.append(
                "–"
                if s["average"] is None
                else f"{pct(s['average'])}" + (f" ± {pct(s['average_std'])}" if s["average_std"] is not None else "")
            )
        rows.append(f"| {TITLES[m]} | " + " | ".join(cells) + " |")
    per_transfer = []
    for r in regimes:
        per_transfer.append(f"\n### {r}\n")
        per_transfer.append("| method | " + " | ".join(TRANSFER_TITLES[t] for t in transfers) + " |")
        per_transfer.append("|" + "---|" * (len(transfers) + 1))
        for m in methods:
            pt = numbers[r][m]["per_transfer"]
            cells = [
                "–"
                if t not in pt or not pt[t]["n"]
                else pct(pt[t]["mean"]) + (f" ± {pct(pt[t]['std'])}" if pt[t]["std"] is not None else "")
                for t in transfers
            ]
            per_transfer.append(f"| {TITLES[m]} | " + " | ".join(cells) + " |")
    wrows = ["| regime | " + " | ".join(TITLES[m] for m in methods if _is_mifuse(m)) + " |"]
    wrows.append("|" + "---|" * (1 + sum(_is_mifuse(m) for m in methods)))
    weights = {r: {m: weights_of(res, r, m) for m in methods if _is_mifuse(m)} for r in regimes}
    for r in regimes:
        wrows.append(
            f"| {r} | "
            + " | ".join(
                " / ".join(f"{n} {w:.2f}" for n, w in weights[r][m].items()) or "–" for m in methods if _is_mifuse(m)
            )
            + " |"
        )
    kappas = {r: {m: kappas_of(res, r, m) for m in methods if _is_mifuse(m)} for r in regimes}
    krows = ["| regime | variant | kappa (prior) per teacher |", "|---|---|---|"]
    for r in regimes:
        for m, kv in kappas[r].items():
            if kv:
                krows.append(
                    f"| {r} | {TITLES[m]} | "
                    + " / ".join(f"{n} {v['kappa']:.2f} ({v['prior']:.2f})" for n, v in kv.items())
                    + " |"
                )
    command = "python benchmarks/cross_corpus/regime_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    m = machine()
    name = "results_regimes_quick" if mode == "quick" else "results_regimes"
    out = {
        "command": command,
        "mode": mode,
        "caps": CAPS[mode],
        "seeds": seeds,
        "transfers": transfers,
        "regimes": {r: REGIMES[r].to_dict() for r in regimes},
        "methods": methods,
        "variants": VARIANTS,
        "library_default_epochs": {
            "source": TrainConfig().epochs,
            **{k: s.config().epochs for k, s in ADAPT_METHODS.items()},
        },
        "ua": numbers,
        "final_fusion_weights": weights,
        "reliability_kappas": kappas,
        "per_seed": {
            r: {
                mm: {t: {str(s): v["ua"] for s, v in ts.items()} for t, ts in mt.items()}
                for mm, mt in res.get(r, {}).items()
            }
            for r in regimes
        },
        "wall_seconds_this_invocation": round(wall_s, 1),
        "machine": m,
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    caps = CAPS[mode]
    md = f"""# Regime benchmark ({mode})

Command: `{command}`; git {m.get("git_commit", "?")}; {m.get("cpu", "?")} ({m["cores"]} cores, shared), torch
{m.get("torch")}, Python {m["python"]}; {wall_s / 60:.1f} min this invocation. Seeds {", ".join(map(str, seeds))};
transfers {", ".join(TRANSFER_TITLES[t] for t in transfers)}; library-default epochs (source
{TrainConfig().epochs}, adaptation {ADAPT_METHODS["mifuse"].config().epochs}).
{
        ""
        if caps is None
        else f"Quick mode: at most {caps['source_train']} source-training, {caps['source_val']} "
        f"source-validation, {caps['adapt']} adaptation and {caps['test']} test clips per transfer."
    }

## Test-half UA (%), mean over the transfers, ± std over seeds (of that mean)

{chr(10).join(rows)}

The LALM stand-ins (`regimes.py`): {"; ".join(_stand_in(r) for r in regimes)}
(of the perceived class; every stand-in but the oracle also has a 40 % share of its errors on "neutral", 10 %
answers outside the label set, 20 % of clips refused, vote purity 0.8). LALM-SFUDA with the oracle is the
**oracle ceiling**: the student trained on the adaptation half's true labels.

## Per transfer (mean ± std over seeds)
{chr(10).join(per_transfer)}

## MI-Fuse's final fusion weights (mean over transfers and seeds)

{chr(10).join(wrows)}

## Teacher reliability (variants with `reliability="referee"`; mean over transfers and seeds)

{chr(10).join(krows) if len(krows) > 2 else "no such variant in this run"}
"""
    (results / f"{name}.md").write_text(md)
    log(f"wrote {results / (name + '.md')} and .json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="subsampled sets (library-default epochs all the same)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--transfers",
        nargs="+",
        choices=list(ALL_TRANSFERS),
        default=list(TRANSFERS),
        help="default: the four corpus pairs; loco_*: the source is the other two corpora",
    )
    ap.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    ap.add_argument("--methods", nargs="+", default=None, help="default: every row")
    ap.add_argument("--work", type=Path, help="default: runs/regimes/<quick|full>")
    ap.add_argument("--results", type=Path, default=HERE)
    ap.add_argument("--variant", action="append", default=[], help="extra row: name=method:key=value,...")
    ap.add_argument("--report-only", action="store_true", help="only write the tables from what is done")
    ap.add_argument(
        "--recipe",
        default="",
        help="FitConfig fields for the source training and every method, key=value,... or a name: "
        + ", ".join(RECIPES),
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    for text in args.variant:
        name, method, over = parse_variant(text)
        VARIANTS[name] = (method, over)
    register_variants()
    methods = args.methods or [*SHARED, *PER_REGIME, *VARIANTS]
    mode = "quick" if args.quick else "full"
    base = args.work or REPO / "runs" / "regimes" / mode
    kw = dict(
        mode=mode,
        adapt_epochs=ADAPT_METHODS["mifuse"].config().epochs,
        source_epochs=TrainConfig().epochs,
        caps=CAPS[mode],
        onnx_check=False,
        recipe=parse_recipe(args.recipe),
    )
    t0 = time.monotonic()
    if not args.report_only:
        benches = {r: RegimeBench(base, r, **kw) for r in [None, *args.regimes]}
        try:
            for seed in args.seeds:
                for transfer in args.transfers:
                    for m in methods:
                        for r in [None] if m in SHARED else args.regimes:
                            benches[r].run_one(transfer, seed, m)
        finally:
            for b in benches.values():
                b.close()
    report(base, args.results, mode, args.transfers, args.seeds, args.regimes, methods, time.monotonic() - t0)


if __name__ == "__main__":
    main()
