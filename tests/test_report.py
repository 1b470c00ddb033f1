"""Evaluation report: JSON, PNG plots, missing matplotlib, terminal table."""

import json
import sys

import numpy as np
import pytest

from edgeser import metrics as M
from edgeser.report import format_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = ["angry", "happy", "neutral", "sad"]
PROBS = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.2, 0.6, 0.1, 0.1],
        [0.1, 0.5, 0.2, 0.2],
        [0.1, 0.1, 0.1, 0.7],
        [0.4, 0.1, 0.1, 0.4],  # tie: argmax takes angry
    ]
)
REF = np.array([0, 1, 3, 3, 0])  # no "neutral" in the reference


@pytest.fixture
def metrics():
    return M.evaluate(PROBS, LABELS, REF)


def test_write_report_json_and_pngs(tmp_path, metrics):
    pytest.importorskip("matplotlib")
    res = write_report(tmp_path / "out", metrics, PROBS, REF, LABELS)
    assert res.note is None
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data == metrics
    # predictions [0, 1, 1, 3, 0]: recall angry 2/2, happy 1/1, sad 1/2 -> UA 2.5/3, WA 4/5
    assert data["ua"] == pytest.approx(2.5 / 3) and data["wa"] == pytest.approx(0.8)
    assert data["per_class_recall"] == {"angry": 1.0, "happy": 1.0, "sad": 0.5}
    assert data["confusion_matrix"] == [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]]
    assert data["n"] == 5
    for name in ("confusion_matrix.png", "reliability.png"):
        path = tmp_path / "out" / name
        assert path in res.plots
        blob = path.read_bytes()
        assert blob[:8] == PNG_MAGIC
        assert len(blob) > 10_000


def test_write_report_without_matplotlib(tmp_path, metrics, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    res = write_report(tmp_path, metrics, PROBS, REF, LABELS)
    assert res.plots == [] and "matplotlib" in res.note and "skipped" in res.note
    assert json.loads((tmp_path / "report.json").read_text())["ua"] == pytest.approx(2.5 / 3)
    assert not (tmp_path / "confusion_matrix.png").exists()
    assert not (tmp_path / "reliability.png").exists()


def test_format_table(metrics):
    text = format_table(metrics, LABELS)
    assert "UA (mean recall)" in text and f"{2.5 / 3:.4f}" in text
    assert "WA (accuracy)" in text and "0.8000" in text
    rows = text.splitlines()
    start = rows.index("per-class recall")
    assert [ln.split() for ln in rows[start + 1 : start + 4]] == [
        ["angry", "1.0000"],
        ["happy", "1.0000"],
        ["sad", "0.5000"],
    ]
    assert rows[start + 4] == ""  # "neutral" is absent from the reference: no recall line
    header = next(i for i, ln in enumerate(rows) if ln.startswith("confusion matrix"))
    assert rows[header + 1].split() == LABELS
    assert rows[header + 5].split() == ["sad", "0", "1", "0", "1"]
