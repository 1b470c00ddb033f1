"""Evaluation reports: ``report.json``, two PNG plots (matplotlib, optional) and a terminal table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import metrics as M


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote; ``note`` says why plots were skipped, if they were."""

    json: Path
    plots: list[Path] = field(default_factory=list)
    note: str | None = None


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def write_report(
    out_dir: str | Path, metrics_dict: dict, probs, reference, labels: Sequence[str], *, n_bins: int = 15
) -> ReportFiles:
    """Write ``report.json`` and, when matplotlib is installed, ``confusion_matrix.png`` and
    ``reliability.png`` (``n_bins`` confidence bins) into ``out_dir`` (created). Without matplotlib
    only the JSON is written and the returned ``note`` says so; no exception."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_text(
        json.dumps(metrics_dict, indent=2, default=_jsonable, allow_nan=False) + "\n", encoding="utf-8"
    )
    try:
        import matplotlib  # noqa: F401  (lazy: an optional dependency, the [eval] extra)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return ReportFiles(
            json_path,
            [],
            "plots skipped: matplotlib is not installed "
            "(the [eval] extra: pip install '.[eval]' in the edgeser checkout)",
        )
    cm = metrics_dict.get("confusion_matrix")
    if cm is None:
        p = np.asarray(probs)
        y = np.asarray(reference)
        cm = M.confusion_matrix(y.argmax(axis=1) if y.ndim == 2 else y, p.argmax(axis=1), len(labels))
    bins = M.reliability_bins(probs, reference, n_bins=n_bins)
    plots = []
    for name, draw in (
        ("confusion_matrix.png", lambda fig: _plot_confusion(fig, np.asarray(cm), labels)),
        ("reliability.png", lambda fig: _plot_reliability(fig, bins, metrics_dict.get("ece"))),
    ):
        fig = Figure(figsize=(6.4, 5.6), dpi=100)
        FigureCanvasAgg(fig)  # Agg canvas, never pyplot: no global backend state is touched
        draw(fig)
        fig.tight_layout()
        fig.savefig(out / name)
        plots.append(out / name)
    return ReportFiles(json_path, plots, None)


def _plot_confusion(fig, cm: np.ndarray, labels: Sequence[str]) -> None:
    ax = fig.add_subplot(1, 1, 1)
    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{frac[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if frac[i, j] > 0.6 else "black",
            )
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title("Confusion matrix (count, share of reference row)")


def _plot_reliability(fig, bins: dict, ece_value: float | None) -> None:
    ax, axc = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.asarray(bins["edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    count = np.asarray(bins["count"])
    on = count > 0
    acc, conf = np.asarray(bins["accuracy"]), np.asarray(bins["confidence"])
    ax.bar(centers[on], acc[on], width=width, edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    ax.hlines(
        conf[on],
        (centers - width / 2)[on],
        (centers + width / 2)[on],
        colors="tab:red",
        linewidth=2.5,
        label="mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    title = "Reliability (top label)"
    ax.set_title(title if ece_value is None else f"{title}, ECE = {ece_value:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    axc.bar(centers, count, width=width, color="gray", edgecolor="black")
    axc.set_xlabel("confidence (max probability)")
    axc.set_ylabel("clips")


def format_table(metrics: dict, labels: Sequence[str]) -> str:
    """A plain-text summary for the terminal: scalar metrics, per-class recall, confusion matrix."""
    lines = []
    names = [
        ("n", "clips"),
        ("ua", "UA (mean recall)"),
        ("wa", "WA (accuracy)"),
        ("macro_f1", "macro-F1"),
        ("nll", "NLL"),
        ("brier", "Brier"),
        ("ece", "ECE"),
        ("js", "JS divergence (bits)"),
        ("multilabel_f1", "multi-label F1"),
    ]
    for key, title in names:
        if key in metrics:
            v = metrics[key]
            lines.append(f"{title:<22}{v:>8d}" if isinstance(v, int) else f"{title:<22}{v:>8.4f}")
    recall = metrics.get("per_class_recall", {})
    if recall:
        lines += ["", "per-class recall"]
        lines += [f"  {lab:<20}{recall[lab]:>8.4f}" for lab in labels if lab in recall]
    cm = metrics.get("confusion_matrix")
    if cm is not None:
        w = max(6, *(len(lab) for lab in labels), *(len(str(v)) for row in cm for v in row)) + 1
        lines += [
            "",
            "confusion matrix (rows: reference, columns: predicted)",
            " " * w + "".join(f"{lab:>{w}}" for lab in labels),
        ]
        lines += [f"{lab:<{w}}" + "".join(f"{v:>{w}}" for v in row) for lab, row in zip(labels, cm)]
    return "\n".join(lines)
