"""`edgeser listen` against a real audio device: a PulseAudio null sink whose monitor is the default
source, with real EmoDB clips played into it by paplay. Uses the bundled default model."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from edgeser.demo import DEMO_DIR
from edgeser.runtime import DEFAULT_MODEL

try:
    from tests.pulse import pulse_missing_reason, virtual_microphone
except ImportError:
    from pulse import pulse_missing_reason, virtual_microphone

pytestmark = [
    pytest.mark.pulse,
    pytest.mark.skipif(pulse_missing_reason() is not None, reason=pulse_missing_reason() or ""),
]


def _concat(names, path, pause_s=0.3):
    parts = []
    for n in names:
        x, sr = sf.read(str(DEMO_DIR / n), dtype="float32")
        parts += [x, np.zeros(int(pause_s * sr), np.float32)]
    sf.write(path, np.concatenate(parts), sr)
    return sum(len(p) for p in parts) / sr


def test_listen_jsonl_real_device(tmp_path):
    assert DEFAULT_MODEL.exists(), "the bundled default model is part of the package"
    angry = tmp_path / "angry.wav"
    sad = tmp_path / "sad.wav"
    _concat(["03a02Wc.flac", "08a02Wc.flac", "03a02Wc.flac", "08a02Wc.flac"], angry)
    _concat(["03b03Tc.flac", "08b10Tc.flac"], sad)
    with virtual_microphone() as vm:
        cmd = [
            sys.executable,
            "-m",
            "edgeser.cli",
            "listen",
            "--jsonl",
            "--seconds",
            "30",
            "--hop",
            "0.25",
            "--smoothing",
            "0",
        ]
        proc = subprocess.Popen(cmd, env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events: list[tuple[float, dict]] = []
        arrived = threading.Condition()

        def reader():
            for line in proc.stdout:
                with arrived:
                    events.append((time.monotonic(), json.loads(line)))
                    arrived.notify_all()

        def wait_for(condition, what: str, timeout: float = 30.0) -> None:
            with arrived:
                if (
                    not arrived.wait_for(lambda: condition() or proc.poll() is not None, timeout=timeout)
                    or not condition()
                ):
                    proc.terminate()
                    raise AssertionError(f"no {what} (exit code {proc.wait(timeout=10)}): {proc.stderr.read()}")

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        # the stream is open and has judged some silence: three events before anything is played
        wait_for(lambda: len(events) >= 3, "the first events of silence")
        marks = {"angry_start": time.monotonic()}
        vm.play(angry).wait(timeout=30)
        marks["angry_end"] = marks["sad_start"] = time.monotonic()
        vm.play(sad).wait(timeout=30)
        marks["sad_end"] = time.monotonic()
        # the windows that end after the last clip have arrived
        wait_for(lambda: sum(a > marks["sad_end"] for a, _ in events) >= 3, "the events after playback")
        proc.terminate()
        proc.wait(timeout=10)
        t.join(timeout=5)
        err = proc.stderr.read()
    assert "Traceback" not in err, err
    assert len(events) > 20, f"too few events: {len(events)}; stderr: {err}"

    # real time: distributions arrive while audio plays, one every hop, not in a burst at the end
    arrivals = np.array([a for a, _ in events])
    gaps = np.diff(arrivals)
    assert np.median(gaps) == pytest.approx(0.25, abs=0.1)
    assert sum(marks["angry_start"] < a < marks["angry_end"] for a in arrivals) >= 10

    # silence before playback is "no speech"
    before = [e for a, e in events if a < marks["angry_start"]]
    assert before and all(not e["speech"] and e["distribution"] is None for e in before)

    # the played emotion shows up: angry clips give more 'angry' than the sad clips do, and vice versa
    def window(a0, a1):
        rows = [e["distribution"] for a, e in events if a0 + 1.5 < a < a1 + 0.3 and e["speech"]]
        assert rows, "speech must be detected while clips play"
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    during_angry = window(marks["angry_start"], marks["angry_end"])
    during_sad = window(marks["sad_start"], marks["sad_end"])
    assert during_angry["angry"] > during_sad["angry"] + 0.2, (during_angry, during_sad)
    assert during_sad["sad"] > during_angry["sad"] + 0.2, (during_angry, during_sad)
    assert max(during_angry, key=during_angry.get) == "angry", during_angry
