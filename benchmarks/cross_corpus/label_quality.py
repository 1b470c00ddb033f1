"""How good are MI-Fuse's labels, and how much of it reaches the student? (issue 8)

    python benchmarks/cross_corpus/label_quality.py --work /tmp/rb/work   # a regime benchmark's work directory

For every regime, transfer and seed of a regime-benchmark run (``regime_bench.py --quick``: its source models
and cached LALM answers; nothing is trained here) this scores, against the adaptation half's true labels
(which MI-Fuse never sees), the labels MI-Fuse's first epoch trains on:

* the LALM's votes, on the clips it answered;
* the source classifier (the EMA teacher at the start: MC-dropout mean);
* the referee (``edgeser.adapt.mifuse.referee_labels``) and the teachers' kappas against it;
* the fused labels with the library's defaults, on every clip and on the clips the LALM answered;

next to the test-half UA that MI-Fuse's and LALM-SFUDA's students reached in that run (when present). The
gap between the fused labels and the student is what the student loses in learning them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import machine  # noqa: E402
from regime_bench import CAPS, RegimeBench  # noqa: E402
from run import LABELS, TRANSFER_TITLES, TRANSFERS, log  # noqa: E402

from edgeser.adapt.checkpoint import load_model  # noqa: E402
from edgeser.adapt.data import load_clips  # noqa: E402
from edgeser.adapt.fusion import fuse  # noqa: E402
from edgeser.adapt.mifuse import EMATeacher, MIFuseConfig, referee_labels  # noqa: E402
from edgeser.adapt.reliability import reliability_prior, teacher_kappas  # noqa: E402
from edgeser.adapt.teachers.classifier import ClassifierTeacher  # noqa: E402
from edgeser.adapt.train import TrainConfig  # noqa: E402

COLUMNS = {
    "lalm": "LALM votes (clips it answered)",
    "classifier": "source classifier",
    "referee": "referee",
    "fused": "fused labels, every clip",
    "fused_answered": "fused labels, clips the LALM answered",
    "mi_fuse": "MI-Fuse student (test half)",
    "lalm_sfuda": "LALM-SFUDA student (test half)",
}


def ua(y: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    """Unweighted accuracy of ``pred`` over the clips in ``mask`` (classes present there)."""
    y, pred = y[mask], pred[mask]
    return float(np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)]))


def score_cell(bench: RegimeBench, transfer: str, seed: int, work: Path, regime: str) -> dict:
    src, tgt, _ = TRANSFERS[transfer]
    adapt_c, test_c, _ = bench.target_sets(tgt)
    lalm, _, _ = bench.lalm_samples(transfer, adapt_c, test_c)
    y = np.array([LABELS.index(c.label) for c in adapt_c])
    wavs = load_clips(adapt_c, 16000, "adaptation clips", progress=False)
    net = load_model(work / "sources" / src / f"seed{seed}" / "model.pt")
    cfg = MIFuseConfig(seed=seed)
    clf = ClassifierTeacher(net, "cpu", seed=seed).sample_wavs(wavs, EMATeacher().k)
    referee = referee_labels(net, wavs, [lalm], seed=seed)
    start = fuse([lalm, clf], cfg.fusion, cfg.tau, uncertainty=cfg.uncertainty, relative=cfg.relative_uncertainty)
    kappas = teacher_kappas(referee, start.means, len(LABELS))
    fused = fuse(
        [lalm, clf], cfg.fusion, cfg.tau, uncertainty=cfg.uncertainty, relative=cfg.relative_uncertainty,
        prior=reliability_prior(kappas, cfg.reliability_power),
    )  # fmt: skip
    answered = np.isfinite(start.means[:, 0]).all(axis=1)
    top = np.nan_to_num(fused.target).argmax(axis=1)
    out = {
        "lalm": ua(y, np.nan_to_num(start.means[:, 0]).argmax(axis=1), answered),
        "classifier": ua(y, start.means[:, 1].argmax(axis=1), np.ones(len(y), bool)),
        "referee": ua(y, referee, np.ones(len(y), bool)),
        "fused": ua(y, top, fused.covered),
        "fused_answered": ua(y, top, fused.covered & answered),
        "kappa_lalm": float(kappas[0]),
        "kappa_classifier": float(kappas[1]),
        "lalm_answered": float(answered.mean()),
    }
    for method in ("mi_fuse", "lalm_sfuda"):
        f = work / regime / "results" / transfer / f"seed{seed}" / f"{method}.json"
        if f.exists():
            out[method] = json.loads(f.read_text())["ua"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a regime_bench.py --quick work directory")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--regimes", nargs="+", default=["weak", "mid", "strong"])
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    t0 = time.monotonic()
    kw = dict(
        mode="quick", adapt_epochs=MIFuseConfig().epochs, source_epochs=TrainConfig().epochs, caps=CAPS["quick"],
        onnx_check=False,
    )  # fmt: skip
    cells: dict = {}
    for regime in args.regimes:
        bench = RegimeBench(args.work, regime, **kw)
        try:
            for transfer in TRANSFERS:
                for seed in args.seeds:
                    cells.setdefault(regime, {}).setdefault(transfer, {})[seed] = c = score_cell(
                        bench, transfer, seed, args.work, regime
                    )
                    log(f"{regime} {transfer} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in c.items()))
        finally:
            bench.close()
    write(cells, args, time.monotonic() - t0)


def write(cells: dict, args: argparse.Namespace, wall_s: float) -> None:
    def mean(regime: str, key: str, transfer: str | None = None) -> float | None:
        xs = [c[key] for t, per in cells[regime].items() if transfer in (None, t) for c in per.values() if key in c]
        return float(np.mean(xs)) if xs else None

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    head = "| regime | " + " | ".join(COLUMNS.values()) + " | kappa LALM / classifier |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    summary = {}
    for r in cells:
        summary[r] = {k: mean(r, k) for k in [*COLUMNS, "kappa_lalm", "kappa_classifier", "lalm_answered"]}
        rows.append(
            f"| {r} | " + " | ".join(pct(summary[r][k]) for k in COLUMNS)
            + f" | {summary[r]['kappa_lalm']:.2f} / {summary[r]['kappa_classifier']:.2f} |"
        )  # fmt: skip
    per = []
    for r in cells:
        per += [f"\n### {r}\n", "| | " + " | ".join(TRANSFER_TITLES[t] for t in TRANSFERS) + " |"]
        per.append("|" + "---|" * (len(TRANSFERS) + 1))
        for k, title in COLUMNS.items():
            per.append(f"| {title} | " + " | ".join(pct(mean(r, k, t)) for t in TRANSFERS) + " |")
    m = machine()
    command = "python benchmarks/cross_corpus/label_quality.py " + " ".join(sys.argv[1:])
    md = f"""# MI-Fuse's labels against what its student learns (quick caps)

Command: `{command}`; git {m.get("git_commit", "?")}; {m.get("cpu", "")} {m["cores"]} cores, Python {m["python"]}, torch {m.get("torch")};
{wall_s / 60:.1f} min. Seeds {", ".join(map(str, args.seeds))}; the 4 transfers; the regime benchmark's quick caps
(200 adaptation clips, 240 test clips per transfer), its source models and its cached LALM answers.

UA (%) against the adaptation half's true labels (used here only to score), mean over transfers and seeds, of the
labels MI-Fuse's first epoch trains on (library defaults: relative entropy weighting, tau 0.3, the referee's
reliability prior), and the test-half UA its student and LALM-SFUDA's reached in the same run:

{chr(10).join(rows)}

How to read it: on the clips the LALM answered the fused labels are better than its votes with the weak and mid
LALMs and as good with the strong one; what MI-Fuse loses to LALM-SFUDA with the mid LALM, and what every student loses to its labels, is
lost in training, not in the fusion. The students' UA is of the test half's speakers, the labels' of the
adaptation half's (the same clips the student trains on).

Per transfer (mean over seeds):
{chr(10).join(per)}
"""
    (args.out / "results_label_quality_quick.md").write_text(md)
    (args.out / "results_label_quality_quick.json").write_text(
        json.dumps({"command": command, "machine": m, "summary": summary, "cells": cells}, indent=1)
    )
    log(f"wrote {args.out / 'results_label_quality_quick.md'}")


if __name__ == "__main__":
    main()
