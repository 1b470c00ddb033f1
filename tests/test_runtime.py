import numpy as np
import pytest
import soundfile as sf

from edgeser.audio import iter_audio_blocks
from edgeser.demo import demo_clips
from edgeser.errors import AudioError, ModelError
from edgeser.runtime import Distribution, Recognizer
from edgeser.runtime import recognizer as recognizer_module


@pytest.fixture(scope="module")
def rec(tiny_onnx):
    return Recognizer.load(tiny_onnx)


@pytest.fixture(scope="module")
def clip():
    x, sr = sf.read(str(demo_clips()[0]), dtype="float32")
    return x, sr


def test_distribution_mapping():
    d = Distribution(["a", "b"], np.array([0.25, 0.75]))
    assert d.top == "b" and d["a"] == 0.25 and list(d) == ["a", "b"] and d.confidence == 0.75
    assert d.entropy == pytest.approx(0.811278, abs=1e-5)
    with pytest.raises(KeyError):
        d["c"]


def test_predict_is_a_distribution(rec, clip):
    d = rec.predict(*clip)
    assert set(d) == set(rec.labels)
    assert np.isclose(d.probs.sum(), 1.0, atol=1e-5) and (d.probs >= 0).all()
    assert d.speech_fraction > 0.5


def test_any_rate_channels_and_dtype(rec, clip):
    import soxr

    x, sr = clip
    base = rec.predict(x, sr).probs
    for rate in (8000, 22050, 44100, 48000):
        y = soxr.resample(x, sr, rate)
        assert np.abs(rec.predict(y, rate).probs - base).max() < 0.05
    stereo = np.stack([x, x], axis=1)
    assert np.abs(rec.predict(stereo, sr).probs - base).max() < 1e-5
    pcm = (x * 32767).astype(np.int16)
    assert np.abs(rec.predict(pcm, sr).probs - base).max() < 1e-3


def test_bad_arrays_raise_clear_errors(rec):
    with pytest.raises(AudioError, match="empty"):
        rec.predict(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        rec.predict(np.array([0.0, np.nan, 0.1] * 1000, np.float32), 16000)
    with pytest.raises(AudioError, match="sample rate"):
        rec.predict(np.zeros(100, np.float32), 0)


def test_silence_and_short_audio(rec):
    d = rec.predict(np.zeros(16000, np.float32), 16000)
    assert d.speech_fraction == 0.0
    short = rec.predict(np.random.default_rng(0).standard_normal(800).astype(np.float32) * 0.1, 16000)  # 50 ms
    assert np.isclose(short.probs.sum(), 1.0, atol=1e-5)


def test_predict_files_reports_bad_files_and_continues(rec, tmp_path, clip):
    x, sr = clip
    good = demo_clips()[0]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    eight_bit = tmp_path / "u8.wav"
    sf.write(eight_bit, x, sr, subtype="PCM_U8")
    multi = tmp_path / "six.flac"
    sf.write(multi, np.stack([x] * 6, 1), sr)
    clipped = tmp_path / "clipped.wav"
    sf.write(clipped, np.clip(x * 30, -1, 1), sr)
    results = list(rec.predict_files([good, corrupt, tmp_path / "missing.wav", empty, eight_bit, multi, clipped]))
    ok = [r for r in results if r.error is None]
    bad = {r.path: r.error for r in results if r.error}
    assert len(ok) == 4 and len(bad) == 3
    assert all("\n" not in e for e in bad.values())
    assert "no such file" in bad[str(tmp_path / "missing.wav")]
    assert "cannot decode" in bad[str(corrupt)]
    assert "no audio" in bad[str(empty)]
    assert any("clipped" in w for w in results[-1].warnings)
    assert np.abs(results[4].distribution.probs - results[0].distribution.probs).max() < 0.1  # 8-bit ~ same


def test_long_files_use_bounded_segments(rec, tmp_path, monkeypatch, clip):
    x, sr = clip
    long = tmp_path / "long.flac"
    sf.write(long, np.tile(x, 12), sr)  # ~17 s
    monkeypatch.setattr(recognizer_module, "MAX_WHOLE_S", 4.0)
    monkeypatch.setattr(recognizer_module, "SEGMENT_S", 2.0)
    blocks = []
    real = recognizer_module.iter_audio_blocks

    def spy(*a, **k):
        for b in real(*a, **k):
            blocks.append(len(b))
            yield b

    monkeypatch.setattr(recognizer_module, "iter_audio_blocks", spy)
    d = rec.predict_file(long)
    assert np.isclose(d.probs.sum(), 1.0, atol=1e-5)
    assert len(blocks) >= 8 and max(blocks) <= 2.0 * 16000 + 1


def test_iter_audio_blocks_resamples_whole_file(tmp_path, clip):
    x, sr = clip
    p = tmp_path / "a44.wav"
    import soxr

    sf.write(p, soxr.resample(x, sr, 44100), 44100)
    total = sum(len(b) for b in iter_audio_blocks(p, 16000, block_s=0.3))
    assert abs(total - len(x)) <= 2


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelError, match="no such model"):
        Recognizer.load(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a loadable ONNX"):
        Recognizer.load(junk)


def test_stream_matches_whole_window_model(rec, clip):
    x, sr = clip
    x = np.tile(x, 3)
    st = rec.stream(sample_rate=sr, smoothing=0.0, gate=False, hop_s=0.3)
    events = list(st.events(x[i : i + 999] for i in range(0, len(x), 999)))
    assert len(events) >= 8
    worst = 0.0
    for ev in events:
        a = int(round(ev.start_s * sr))
        b = a + int(round(ev.window_s * sr))
        worst = max(worst, np.abs(rec.predict(x[a:b], sr).probs - ev.raw.probs).max())
    assert worst < 1e-4
    # hop spacing and window bounded by the model's window
    times = [e.time_s for e in events[:-1]]
    assert np.allclose(np.diff(times), st.hop / 16000, atol=1e-6)
    assert max(e.window_s for e in events) <= st.window_s + 1e-6


def test_stream_any_rate_and_chunk_size_same_events(rec, clip):
    x, sr = clip
    import soxr

    y = soxr.resample(x, sr, 44100)
    a = [e.raw.probs for e in rec.stream(44100, gate=False, smoothing=0).events([y])]
    b = [
        e.raw.probs
        for e in rec.stream(44100, gate=False, smoothing=0).events(y[i : i + 37] for i in range(0, len(y), 37))
    ]
    assert len(a) == len(b) > 0
    assert max(np.abs(p - q).max() for p, q in zip(a, b)) < 1e-3


def test_stream_gate_smoothing_and_reset(rec, clip):
    x, sr = clip
    st = rec.stream(sr, smoothing=0.8)
    silent = st.feed(np.zeros(3 * sr, np.float32))
    assert silent and all(not e.speech and e.distribution is None for e in silent)
    st.reset()
    ev = [e for e in st.events([x]) if e.speech]
    assert ev, "speech must be detected in a real clip"
    # smoothing: the emitted distribution lags the raw one
    if len(ev) >= 2:
        e = ev[1]
        assert not np.allclose(e.distribution.probs, e.raw.probs)
    st.reset()
    assert st.feed(x[:100]) == []
