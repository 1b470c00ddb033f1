"""Runtime and export faults from the outside audit (issue 9, items 5, 6, 9, 11): each fails clearly,
at once, with a one-line error, and a batch goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from edgeser.audio import load_audio
from edgeser.demo import DEMO_DIR
from edgeser.errors import AudioError, ModelError
from edgeser.runtime import EmotionStream, OnnxModel, Recognizer


@pytest.fixture(scope="module")
def rec(tiny_onnx) -> Recognizer:
    return Recognizer.load(tiny_onnx)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(DEMO_DIR / "03a02Wc.flac", 16000)


# ---------------------------------------------------------------- item 5: channels-first arrays


@pytest.mark.parametrize("channels", [2, 6])
def test_channels_first_arrays_are_refused(rec, speech, channels) -> None:
    x = np.stack([speech] * channels)  # (C, T): the layout torch and librosa use
    with pytest.raises(AudioError, match=r"looks like \(channels, samples\).*x\.T"):
        rec.predict(x, 16000)
    with pytest.raises(AudioError, match="channels, samples"):
        rec.stream(16000).feed(x)
    np.testing.assert_allclose(rec.predict(x.T, 16000).probs, rec.predict(speech, 16000).probs, atol=1e-6)


def test_arrays_with_no_channel_are_refused(rec) -> None:
    # (T, 0) used to average over no channel and report "16000 NaN/inf samples"
    with pytest.raises(AudioError, match=r"shape \(16000, 0\) has no channel"):
        rec.predict(np.zeros((16000, 0), np.float32), 16000)
    with pytest.raises(AudioError, match="no channel"):
        rec.stream(16000).feed(np.zeros((1600, 0), np.float32))


def test_tiny_multichannel_chunks_are_still_frames(rec, speech) -> None:
    stereo = np.stack([speech, speech], axis=1)
    a = [e.raw.probs for e in rec.stream(16000, gate=False).events(stereo[i : i + 1] for i in range(0, 40000))]
    b = [e.raw.probs for e in rec.stream(16000, gate=False).events([speech[:40000]])]
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_int_pcm_with_channels_is_scaled_like_mono(rec, speech) -> None:
    pcm = np.round(speech * 32767).astype(np.int16)
    mono = rec.predict(pcm, 16000).probs
    np.testing.assert_allclose(rec.predict(np.stack([pcm, pcm], axis=1), 16000).probs, mono, atol=1e-6)
    np.testing.assert_allclose(rec.predict(speech, 16000).probs, mono, atol=1e-4)
    from edgeser.audio import to_mono

    assert to_mono(np.array([[16384, -16384], [-32768, -32768]], np.int16)).tolist() == [0.0, -1.0]


# ---------------------------------------------------------------- item 6: metadata checked at load


def _with_metadata(src: Path, dst: Path, **changes) -> Path:
    m = onnx.load(str(src))
    meta = json.loads(m.metadata_props[0].value)
    meta.update(changes)
    m.metadata_props[0].value = json.dumps(meta)
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"labels": ["angry", "happy", "sad"]}, "3 labels in the metadata but the model outputs 4"),
        ({"labels": ["angry", "angry", "happy", "sad"]}, "duplicates"),
        ({"sample_rate": 16000.5}, "'sample_rate' must be a positive integer"),
        ({"embedding_stride": 0}, "'embedding_stride' must be a positive integer"),
        ({"embedding_dim": 7}, "embedding_dim 7 in the metadata but the graph's cache has 16 channels"),
        ({"receptive_field": 100}, "embedding_stride 320 exceeds the receptive field 100"),
        ({"window_s": -1}, "'window_s' must be a positive number"),
    ],
)
def test_bad_metadata_fails_at_load(tiny_onnx, tmp_path, changes, message) -> None:
    bad = _with_metadata(tiny_onnx, tmp_path / "bad.onnx", **changes)
    with pytest.raises(ModelError, match=message):
        OnnxModel(bad)
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", "predict", "-m", str(bad), str(DEMO_DIR / "03a02Wc.flac")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "field, factor, message",
    [
        ("receptive_field", -1, "the graph fails on|gives"),  # one stride short: the graph cannot run it
        ("receptive_field", +1, r"gives \d+ embeddings for \d+ samples"),  # one stride long: silently shifted windows
        ("embedding_stride", 0.5, r"gives 1 embeddings for \d+ samples.*says 2"),
        ("embedding_stride", 2, r"gives 3 embeddings for \d+ samples.*says 2"),
    ],
)
def test_receptive_field_and_stride_are_checked_against_the_graph(tiny_onnx, tmp_path, field, factor, message) -> None:
    meta = OnnxModel(tiny_onnx).metadata
    value = meta[field] + factor * meta["embedding_stride"] if field == "receptive_field" else meta[field] * factor
    bad = _with_metadata(tiny_onnx, tmp_path / "bad.onnx", **{field: int(value)})
    with pytest.raises(ModelError, match=message) as e:
        OnnxModel(bad)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- item 9: export checks its output first


def test_export_checks_the_output_folder_before_any_work(tmp_path) -> None:
    from edgeser.export import export_onnx
    from edgeser.export.incremental import export_incremental

    # the checkpoint does not even exist: the folder is checked first
    with pytest.raises(ModelError, match="no such folder"):
        export_onnx(tmp_path / "nothing.pt", tmp_path / "missing" / "x.onnx")
    with pytest.raises(ModelError, match="is a folder"):
        export_onnx(tmp_path / "nothing.pt", tmp_path)
    with pytest.raises(ModelError, match="no such folder"):  # the incremental form (the CLI's default) alike
        export_incremental(tmp_path / "nothing.pt", tmp_path / "missing" / "x.onnx")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeser.cli",
            "export",
            str(tmp_path / "nothing.pt"),
            "-o",
            str(tmp_path / "missing" / "x.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "no such folder" in r.stderr


def test_export_refuses_duplicate_labels(tiny_checkpoint, tmp_path) -> None:
    from edgeser.adapt.checkpoint import load_model, save_checkpoint
    from edgeser.export import export_onnx

    net = load_model(tiny_checkpoint)
    net.cfg.labels = ["angry", "angry", "neutral", "sad"]
    save_checkpoint(tmp_path / "dup.pt", net)
    with pytest.raises(ModelError, match="duplicates"):
        export_onnx(tmp_path / "dup.pt", tmp_path / "dup.onnx")
    assert not (tmp_path / "dup.onnx").exists()


def test_export_prints_no_torchvision_noise(tiny_checkpoint, tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", "export", str(tiny_checkpoint), "-o", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "torchvision" not in r.stderr and r.stderr.strip() == "", r.stderr


def test_export_hides_only_the_known_exporter_noise(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    import torch

    from edgeser.export import export_onnx

    real = torch.onnx.export

    def warning_export(*args, **kwargs):  # the real exporter, after a warning of the kind users must see
        warnings.warn("a real problem in the model", UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", warning_export)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    messages = [str(w.message) for w in seen]
    assert "a real problem in the model" in messages
    assert not [m for m in messages if "LeafSpec" in m or "will not be used" in m], messages


# ---------------------------------------------------------------- item 11: the smaller ones


def test_clipping_is_reported_for_long_files_too(rec, tmp_path) -> None:
    t = np.arange(35 * 16000) / 16000
    loud = np.clip(1.6 * np.sin(2 * np.pi * 220 * t), -1, 1).astype(np.float32)  # clipped, longer than 30 s
    sf.write(tmp_path / "loud.wav", loud, 16000)
    (res,) = list(rec.predict_files([tmp_path / "loud.wav"]))
    assert res.error is None and any("clipped" in w for w in res.warnings), res.warnings


def test_a_non_path_item_does_not_end_the_batch(rec) -> None:
    good = DEMO_DIR / "03a02Wc.flac"
    res = list(rec.predict_files([123, good, None]))
    assert [r.error is None for r in res] == [False, True, False]
    assert "not a file path" in res[0].error


@pytest.mark.parametrize("rate", [None, 16000.7, 0, -8000, "16000", float("nan")])
def test_bad_rates_are_clear_errors(rec, speech, rate) -> None:
    with pytest.raises(AudioError, match="positive whole number of Hz"):
        rec.predict(speech, rate)
    with pytest.raises(AudioError, match="positive whole number of Hz"):
        rec.stream(sample_rate=rate)
    assert rec.predict(speech, 16000.0).top  # a whole float is fine


def test_fifo_is_refused_not_waited_on(rec, tmp_path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    out: list = []
    th = threading.Thread(target=lambda: out.append(list(rec.predict_files([fifo]))[0]), daemon=True)
    th.start()
    th.join(timeout=30)  # a regression would block forever on open(); the condition is the thread's end
    if th.is_alive():
        with open(fifo, "wb"):  # release the blocked reader so the test process can end
            pass
        pytest.fail("predict blocked on a FIFO")
    assert "not a regular file" in out[0].error


def test_one_sample_at_44k_is_too_short_not_empty(rec, tmp_path) -> None:
    sf.write(tmp_path / "one.wav", np.array([0.5], np.float32), 44100)
    (res,) = list(rec.predict_files([tmp_path / "one.wav"]))
    assert "too short (1 sample at 44100 Hz)" in res.error


@pytest.mark.parametrize("opt", [{"hop_s": 0}, {"window_s": 0}, {"min_window_s": 0}, {"hop_s": -0.5}])
def test_zero_hop_or_window_is_an_error_not_the_default(rec, opt) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        rec.stream(16000, **opt)


def test_a_hop_longer_than_the_window_is_refused(rec) -> None:
    # each event pools the hop's new embeddings: a hop beyond the window would pool more than the window it reports
    with pytest.raises(ValueError, match="longer than the window"):
        rec.stream(16000, hop_s=3.0, window_s=2.0)
    assert rec.stream(16000, hop_s=2.0, window_s=3.0).hop == 32000


def test_stream_takes_the_model_and_a_custom_gate(tiny_onnx, speech) -> None:
    class AlwaysSpeech:
        def update(self, chunk):
            return True

        def is_speech(self):
            return True

        def speech_fraction(self):
            return 1.0

        def reset(self):
            pass

    st = EmotionStream(OnnxModel(tiny_onnx), sample_rate=16000, gate=AlwaysSpeech())
    events = st.feed(np.zeros(40000, np.float32))  # silence, but this gate says speech
    assert events and all(e.speech and e.distribution is not None for e in events)
    with pytest.raises(TypeError, match="gate must provide"):
        EmotionStream(OnnxModel(tiny_onnx), gate=object())


@pytest.mark.parametrize("wrong", ["recognizer", "path"])
def test_stream_given_something_else_than_a_model_says_what_to_pass(rec, tiny_onnx, wrong) -> None:
    with pytest.raises(
        TypeError, match=r"needs a loaded OnnxModel, got (Recognizer|PosixPath).*Recognizer\.stream\(\)"
    ):
        EmotionStream(rec if wrong == "recognizer" else tiny_onnx)
