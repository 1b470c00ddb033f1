"""edgeser.runtime.microphone against a real audio stack: a private PulseAudio server whose null
sink ``virtmic`` is played into with ``paplay`` and recorded through ALSA's pulse plugin by
PortAudio/sounddevice. No fake streams. Only skipped where the pulseaudio binaries are absent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeser.audio import load_audio, resample
from edgeser.errors import DeviceError
from edgeser.runtime import microphone
from edgeser.runtime.microphone import (
    PORTAUDIO_MISSING,
    Microphone,
    capture,
    list_devices,
    refresh_devices,
    resolve_device,
)
from edgeser.runtime.speech import SpeechGate

try:
    from tests.pulse import pulse_missing_reason, virtual_microphone
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from pulse import pulse_missing_reason, virtual_microphone

ANGRY = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb" / "audio" / "03a01Wa.flac"

_MISSING = pulse_missing_reason()


def needs_pulse(test):
    """``@pytest.mark.pulse``, skipped only where the PulseAudio binaries are not installed."""
    return pytest.mark.pulse(pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")(test))


@pytest.fixture(scope="module")
def vmic():
    with virtual_microphone() as vm:
        refresh_devices()
        yield vm
    refresh_devices()  # forget the server that is gone


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _record_while_playing(vm, mic, path, lead_blocks=3, tail_s=0.3):
    """Read ``lead_blocks`` blocks of silence, start paplay, read until it ended + ``tail_s``.
    Returns (lead chunks, chunks with the time each arrived and whether paplay was still running,
    wall seconds from the start of playback to the last chunk)."""
    lead = [next(mic)[0] for _ in range(lead_blocks)]
    t0 = time.monotonic()
    player = vm.play(path)
    got, t_end = [], None
    while True:
        chunk, sr = next(mic)
        running = player.poll() is None
        got.append((chunk, sr, time.monotonic() - t0, running))
        if not running:
            t_end = t_end or time.monotonic()
            if time.monotonic() - t_end >= tail_s:
                break
        if time.monotonic() - t0 > 15:
            pytest.fail("paplay did not finish within 15 s")
    assert player.returncode == 0, player.stderr.read().decode(errors="replace")
    return lead, got, time.monotonic() - t0


def _aligned_correlation(y: np.ndarray, ref: np.ndarray) -> tuple[float, int, int]:
    """Pearson correlation of ``ref`` with ``y`` at the best lag; (r, lag, overlap samples)."""
    n_fft = 1 << int(np.ceil(np.log2(len(y) + len(ref))))
    c = np.fft.irfft(np.fft.rfft(y, n_fft) * np.conj(np.fft.rfft(ref, n_fft)), n_fft)
    c = np.concatenate([c[n_fft - len(ref) + 1 :], c[: len(y)]])  # lags -(len(ref)-1) .. len(y)-1
    lag = int(np.argmax(np.abs(c))) - (len(ref) - 1)
    if lag >= 0:
        a, b = y[lag : lag + len(ref)], ref
    else:
        a, b = y, ref[-lag:]
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1]), lag, n


# --- no audio stack needed ------------------------------------------------------------------


def test_import_does_not_load_sounddevice():
    code = "import sys, edgeser.runtime.microphone; assert 'sounddevice' not in sys.modules"
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_portaudio_missing_is_one_line_device_error(monkeypatch):
    def fail(name, *a, **k):
        assert name == "sounddevice"
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(microphone.importlib, "import_module", fail)
    for call in (microphone.import_sounddevice, list_devices, lambda: resolve_device(None), capture):
        with pytest.raises(DeviceError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg
        assert msg.startswith(PORTAUDIO_MISSING)
        assert "libportaudio2" in msg and "brew" in msg
        assert e.value.__cause__ is None and e.value.__suppress_context__


def test_sounddevice_package_missing(monkeypatch):
    def fail(name, *a, **k):
        raise ModuleNotFoundError("No module named 'sounddevice'", name="sounddevice")

    monkeypatch.setattr(microphone.importlib, "import_module", fail)
    with pytest.raises(DeviceError, match="pip install sounddevice"):
        list_devices()


def test_bad_parameters_fail_before_opening(monkeypatch):
    fake = [microphone.InputDevice(3, "Fake Mic", 2, 48000.0, True, "ALSA")]
    monkeypatch.setattr(microphone, "list_devices", lambda: fake)
    assert resolve_device(None).index == 3
    assert resolve_device("fake").name == "Fake Mic"
    assert resolve_device("3").index == 3
    with pytest.raises(DeviceError, match="2 input channel"):
        Microphone(channels=4)
    with pytest.raises(DeviceError, match="block_s"):
        Microphone(block_s=0)
    with pytest.raises(DeviceError, match="index 7"):
        resolve_device(7)


# --- a real PulseAudio server ---------------------------------------------------------------


@needs_pulse
@pytest.mark.usefixtures("vmic")
def test_list_devices_shows_pulse():
    devices = list_devices()
    names = [d.name for d in devices]
    assert "pulse" in names and "default" in names, names
    default = [d for d in devices if d.is_default]
    assert len(default) == 1 and default[0].name in ("default", "pulse")
    assert all(d.channels >= 1 and d.default_samplerate > 0 for d in devices)
    assert resolve_device(None) == default[0]
    assert resolve_device("PULSE").name == "pulse"  # case-insensitive, exact name wins
    by_index = resolve_device(default[0].index)
    assert by_index == default[0]


@needs_pulse
@pytest.mark.usefixtures("vmic")
def test_resolve_missing_device_lists_devices():
    with pytest.raises(DeviceError) as e:
        resolve_device("no-such-device")
    msg = str(e.value)
    assert "\n" not in msg
    assert "no-such-device" in msg and "'pulse'" in msg and "'default'" in msg


@needs_pulse
def test_capture_records_played_emodb_clip(vmic):
    if not ANGRY.exists():
        pytest.skip(f"{ANGRY} not present (EmoDB data)")
    mic = capture(block_s=0.05)  # default device = pulse -> virtmic.monitor
    assert isinstance(mic, Microphone) and not mic.active
    try:
        lead, got, wall = _record_while_playing(vmic, mic, ANGRY)
        assert mic.active
    finally:
        mic.close()
    assert not mic.active
    with pytest.raises(StopIteration):
        next(mic)

    sr = got[0][1]
    assert (
        sr == mic.sample_rate == mic.samplerate == int(resolve_device(None).default_samplerate)
    )  # native rate, not resampled
    assert all(c.dtype == np.float32 and c.ndim == 1 for c, *_ in got)
    assert all(abs(len(c) - 0.05 * sr) <= 1 for c, *_ in got)

    # silence before, loud while playing, and the chunks came while paplay was still running
    assert max(_rms(c) for c in lead) < 1e-4
    live = [c for c, _, _, running in got if running]
    assert sum(_rms(c) > 0.02 for c in live) >= 10
    y = np.concatenate([c for c, *_ in got])
    assert _rms(y) > 0.05

    # real time: the audio delivered matches the wall clock
    assert abs(len(y) / sr - wall) < 0.25 * wall, (len(y) / sr, wall)
    assert mic.dropped_blocks == 0

    # the recording is the clip: waveform correlation after alignment
    ref = load_audio(ANGRY, 16000)
    r, lag, n = _aligned_correlation(resample(y, sr, 16000), ref)
    assert r > 0.9, (r, lag)
    assert n > 0.8 * len(ref)
    assert abs(lag) < 1.0 * 16000

    # the gate, at the device's own rate, hears speech in it and none in the silence
    gate = SpeechGate(sample_rate=sr)
    assert not gate.update(np.concatenate(lead))
    gate.reset()
    assert any(gate.update(c) for c in live)


@needs_pulse
def test_capture_tone_frequency_and_level(vmic, tmp_path):
    sr_file, f0, amp = 16000, 1000.0, 0.5
    t = np.arange(int(0.8 * sr_file)) / sr_file
    wav = tmp_path / "tone.wav"
    sf.write(wav, (amp * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr_file, subtype="FLOAT")

    with Microphone(block_s=0.05) as mic:
        lead, got, _ = _record_while_playing(vmic, mic, wav, tail_s=0.2)
    sr = mic.sample_rate
    y = np.concatenate([c for c, *_ in got])
    # the steady part of the tone: 10 ms frames close to the tone's RMS
    frame = sr // 100
    rms = np.sqrt(np.mean(y[: len(y) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > 0.5 * amp / np.sqrt(2))
    assert len(loud) * 0.01 > 0.5, "less than 0.5 s of the 0.8 s tone came through"
    seg = y[(loud[0] + 2) * frame : (loud[-1] - 1) * frame]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    peak = np.fft.rfftfreq(len(seg), 1 / sr)[int(np.argmax(spec))]
    assert abs(peak - f0) <= 20, peak
    level_db = 20 * np.log10(_rms(seg) / (amp / np.sqrt(2)))
    assert abs(level_db) < 3, level_db  # unity gain through paplay -> null sink -> monitor
    assert max(_rms(c) for c in lead) < 1e-4


@needs_pulse
def test_slow_consumer_drops_oldest_blocks(vmic):
    with Microphone(block_s=0.02, queue_s=0.1) as mic:  # queue of 5 blocks
        next(mic)
        # consume nothing while blocks arrive (one every 20 ms): only 5 fit, the older ones are dropped
        deadline = time.monotonic() + 10
        while mic.dropped_blocks < 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition, not a fixed wait
        assert mic.dropped_blocks >= 20
        # the queue holds the freshest blocks: draining it takes about 5 blocks, then it's live
        t = time.monotonic()
        for _ in range(5):
            next(mic)
        assert time.monotonic() - t < 0.1
        assert mic.blocks >= 25
    assert mic.overflows == mic.dropped_blocks + mic.input_overflows >= 10
    # a closed microphone can be followed by a new one on the same device
    with Microphone(block_s=0.02) as again:
        chunk, sr = next(again)
        assert chunk.size == round(0.02 * sr)


@needs_pulse
@pytest.mark.usefixtures("vmic")
def test_open_failure_is_one_line_and_stereo_is_mixed_down():
    mic = Microphone("pulse", samplerate=1)  # PortAudio refuses 1 Hz when opening
    with pytest.raises(DeviceError) as e:
        next(mic)
    msg = str(e.value)
    assert "\n" not in msg and "cannot open input device" in msg and "'pulse'" in msg
    assert "sample rate" in msg.lower()

    with Microphone("pulse", channels=2, samplerate=16000, block_s=0.1) as mic:
        chunk, sr = next(mic)
    assert sr == 16000 and chunk.shape == (1600,) and chunk.dtype == np.float32
