"""What the outside audit found working, kept working (issue 9): streaming is the same for any chunk size,
one Recognizer serves several threads, and a training run killed with SIGKILL resumes to the same
weights as an uninterrupted one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edgeser.audio import load_audio
from edgeser.demo import DEMO_DIR, demo_manifest
from edgeser.runtime import Recognizer


@pytest.fixture(scope="module")
def rec(tiny_onnx) -> Recognizer:
    return Recognizer.load(tiny_onnx)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return np.concatenate([load_audio(p, 16000) for p in sorted(DEMO_DIR.glob("*.flac"))[:3]])


@pytest.mark.parametrize("chunk", [1, 7, 160, 4096, 100_000])
def test_streamed_events_do_not_depend_on_the_chunk_size(rec, speech, chunk) -> None:
    x = speech[:80_000] if chunk == 1 else speech  # one sample at a time: 5 s are enough
    whole = [e.raw.probs for e in rec.stream(16000, gate=False, smoothing=0).events([x])]
    cut = [
        e.raw.probs
        for e in rec.stream(16000, gate=False, smoothing=0).events(x[i : i + chunk] for i in range(0, len(x), chunk))
    ]
    assert len(whole) == len(cut) > 0
    np.testing.assert_allclose(cut, whole, atol=1e-6)


def test_one_recognizer_serves_several_threads(rec, speech) -> None:
    pieces = [speech[i : i + 24_000] for i in range(0, len(speech) - 24_000, 8_000)][:12]
    serial = [rec.predict(p, 16000).probs for p in pieces]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda p: rec.predict(p, 16000).probs, pieces * 8))
    np.testing.assert_allclose(threaded, serial * 8, atol=1e-6)


def _train(out: Path, cwd: Path) -> subprocess.Popen:
    """``edgeser train`` in a subprocess; its stderr goes to ``<out>.log`` (read with :func:`_log`)."""
    cmd = [
        sys.executable,
        "-m",
        "edgeser.cli",
        "train",
        "--train",
        str(demo_manifest()),
        "--out",
        str(out),
        "--epochs",
        "4",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    log = open(out.with_name(out.name + ".log"), "a")  # a file, not a pipe nobody reads while it runs
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log, text=True)


def _log(out: Path) -> str:
    return out.with_name(out.name + ".log").read_text()


def test_train_killed_with_sigkill_resumes_to_the_same_weights(tmp_path) -> None:
    from edgeser.adapt.checkpoint import load_state, read_checkpoint

    full = _train(tmp_path / "full.pt", tmp_path)
    assert full.wait(timeout=600) == 0, _log(tmp_path / "full.pt")

    cut = _train(tmp_path / "cut.pt", tmp_path)
    state = tmp_path / "cut.pt.state"
    deadline = time.monotonic() + 600
    while not state.exists():  # the condition: the first epoch's state is on disk
        assert cut.poll() is None, f"training ended before it could be killed: {_log(tmp_path / 'cut.pt')}"
        assert time.monotonic() < deadline, "no training state appeared"
        time.sleep(0.05)
    cut.send_signal(signal.SIGKILL)
    cut.wait(timeout=60)
    done = load_state(state)["epoch"]
    assert 1 <= done < 4, done  # killed mid-run (an epoch or more saved, not all)

    again = _train(tmp_path / "cut.pt", tmp_path)
    assert again.wait(timeout=600) == 0, _log(tmp_path / "cut.pt")
    assert f"after epoch {done}/4" in _log(tmp_path / "cut.pt")  # resumed, not restarted
    a, b = read_checkpoint(tmp_path / "full.pt")["state_dict"], read_checkpoint(tmp_path / "cut.pt")["state_dict"]
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
