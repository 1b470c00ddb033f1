"""PredictionsTeacher: JSON-lines samples or labels, matched by manifest key or absolute path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgeser.adapt.teachers import PredictionsTeacher
from edgeser.errors import ManifestError
from edgeser.manifest import Clip

LABELS = ["neutral", "happy", "sad", "angry"]


def write(path: Path, *objs: object, raw: str = "") -> Path:
    path.write_text("\n".join(json.dumps(o) for o in objs) + ("\n" + raw if raw else "") + "\n")
    return path


def clip(tmp_path: Path, key: str) -> Clip:
    return Clip(path=(tmp_path / key).resolve(), key=key)


def test_samples_and_labels_formats(tmp_path: Path) -> None:
    f = write(
        tmp_path / "p.jsonl",
        {"path": "a.wav", "samples": [[0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0], None, [float("nan")] * 4]},
        {"path": "b.wav", "labels": ["Angry", "sadness", "fearful", '{"label": "joy"}']},
    )
    t = PredictionsTeacher(f, LABELS)
    out = t.sample([clip(tmp_path, "a.wav"), clip(tmp_path, "b.wav")], k=4)
    assert out.shape == (2, 4, 4) and out.dtype == np.float64
    np.testing.assert_allclose(out[0, 0], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(out[0, 1], [1, 0, 0, 0])
    assert np.isnan(out[0, 2]).all() and np.isnan(out[0, 3]).all()
    np.testing.assert_array_equal(out[1, 0], [0, 0, 0, 1])
    np.testing.assert_array_equal(out[1, 1], [0, 0, 1, 0])
    assert np.isnan(out[1, 2]).all()  # fearful is not in the label set
    np.testing.assert_array_equal(out[1, 3], [0, 1, 0, 0])
    assert t.unknown_labels == 1
    assert t.name == "predictions:p.jsonl"


def test_matches_key_then_absolute_path(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    f = write(
        tmp_path / "p.jsonl",
        {"path": "audio/x.wav", "labels": ["happy"]},  # relative to the file's folder
        {"path": str(audio / "y.wav"), "labels": ["sad"]},  # absolute
        {"path": "z.wav", "labels": ["angry"]},
    )  # as written in the manifest
    t = PredictionsTeacher(f, LABELS)
    clips = [
        Clip(path=audio / "x.wav", key="x.wav"),
        Clip(path=audio / "y.wav", key="y.wav"),
        Clip(path=tmp_path / "elsewhere" / "z.wav", key="z.wav"),
    ]
    out = t.sample(clips, k=1)
    np.testing.assert_array_equal(out[:, 0].argmax(1), [1, 2, 3])


def test_more_samples_are_cut_fewer_are_padded_with_one_warning(tmp_path: Path) -> None:
    f = write(
        tmp_path / "p.jsonl",
        {"path": "a", "labels": ["sad", "happy", "angry"]},
        {"path": "b", "labels": ["sad"]},
        {"path": "c", "labels": ["neutral"]},
    )
    t = PredictionsTeacher(f, LABELS)
    clips = [clip(tmp_path, "a"), clip(tmp_path, "b"), clip(tmp_path, "c")]
    np.testing.assert_array_equal(t.sample(clips[:1], k=2)[0].argmax(1), [2, 1])
    with pytest.warns(UserWarning, match="2 clip.* fewer than k=2"):
        out = t.sample(clips, k=2)
    assert np.isnan(out[1, 1]).all() and np.isnan(out[2, 1]).all() and not np.isnan(out[0]).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per teacher
        t.sample(clips, k=2)


def test_missing_clip_is_a_manifest_error_naming_it(tmp_path: Path) -> None:
    t = PredictionsTeacher(write(tmp_path / "p.jsonl", {"path": "a.wav", "labels": ["sad"]}), LABELS)
    with pytest.raises(ManifestError, match="no predictions for b.wav"):
        t.sample([clip(tmp_path, "a.wav"), clip(tmp_path, "b.wav")], k=1)


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"path": "b", "samples": [[0.5, 0.5, 0]]}', r"p.jsonl:2: sample 0 must be a list of 4 probabilities"),
        ('{"path": "b", "samples": [[1.5, -0.5, 0, 0]]}', r"p.jsonl:2: sample 0 has negative"),
        ('{"path": "b", "samples": [[2.0, 1.0, 0, 0]]}', r"p.jsonl:2: sample 0 sums to 3"),
        ('{"path": "b", "samples": [[0.5, NaN, 0.5, 0]]}', r"p.jsonl:2: sample 0 has negative, NaN"),
        ('{"path": "b", "samples": [["a", 0, 0, 1]]}', r"p.jsonl:2: sample 0 has a non-numeric"),
        ('{"path": "b", "samples": []}', r"p.jsonl:2: 'samples' must be a non-empty list"),
        ('{"path": "b", "labels": [3]}', r"p.jsonl:2: label 0 must be a string"),
        ('{"path": "b"}', r"p.jsonl:2: needs exactly one of"),
        ('{"path": "b", "labels": ["sad"], "samples": [[1, 0, 0, 0]]}', r"p.jsonl:2: needs exactly one of"),
        ('{"samples": [[1, 0, 0, 0]]}', r"p.jsonl:2: expected an object with a non-empty string 'path'"),
        ('{"path": "a", "labels": ["sad"]}', r"p.jsonl:2: duplicate path 'a' \(first on line 1\)"),
        ('{"path": "b", "labels": ', r"p.jsonl:2: not valid JSON"),
    ],
)
def test_validation_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    f = write(tmp_path / "p.jsonl", {"path": "a", "labels": ["sad"]}, raw=line)
    with pytest.raises(ManifestError, match=message) as e:
        PredictionsTeacher(f, LABELS)
    assert "\n" not in str(e.value)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such predictions file"):
        PredictionsTeacher(tmp_path / "nope.jsonl", LABELS)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ManifestError, match="has no entries"):
        PredictionsTeacher(tmp_path / "empty.jsonl", LABELS)
    t = PredictionsTeacher(write(tmp_path / "p.jsonl", {"path": "a", "labels": ["sad"]}), LABELS)
    with pytest.raises(ValueError, match="positive integer"):
        t.sample([clip(tmp_path, "a")], k=0)
    assert t.sample([], k=3).shape == (0, 3, 4)


def test_rows_are_renormalised_within_tolerance(tmp_path: Path) -> None:
    f = write(tmp_path / "p.jsonl", {"path": "a", "samples": [[0.25, 0.25, 0.25, 0.2501]]})
    row = PredictionsTeacher(f, LABELS).sample([clip(tmp_path, "a")], k=1)[0, 0]
    assert row.sum() == pytest.approx(1.0, abs=1e-12)
