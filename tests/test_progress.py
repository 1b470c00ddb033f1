"""Progress lines: rewriting on a terminal, plain rate-limited lines in logs (no control characters)."""

from __future__ import annotations

import io
import os
import select
import sys

import numpy as np
import pytest
import soundfile as sf

from edgeser.adapt.progress import Progress
from edgeser.manifest import Clip


def test_log_gets_plain_lines(monkeypatch) -> None:
    err = io.StringIO()  # not a terminal, like a CI log or a redirected stderr
    monkeypatch.setattr(sys, "stderr", err)
    with Progress(500, "epoch 1/2") as p:
        for _ in range(500):
            p.update(1, loss=0.25)
    text = err.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 2 and lines[-1].startswith("epoch 1/2: 500/500") and "loss 0.25" in lines[-1]


def test_terminal_gets_one_rewritten_line(monkeypatch) -> None:
    master, slave = os.openpty()  # a real pseudo-terminal: isatty() is true
    try:
        tty = os.fdopen(slave, "w", buffering=1)
        monkeypatch.setattr(sys, "stderr", tty)
        with Progress(3, "loading", every_s=0.0) as p:
            for _ in range(3):
                p.update(1)
        tty.flush()
        out = ""  # the pty hands the bytes over in pieces: read up to the final newline
        while not out.endswith("\n") and select.select([master], [], [], 5.0)[0]:
            out += os.read(master, 65536).decode()
    finally:
        os.close(master)
        tty.close()
    assert out.replace("\r\n", "\n").count("\r") == 3 and "\x1b[K" in out and "loading: 3/3" in out
    assert out.replace("\r\n", "\n").endswith("\n")


def test_log_gets_the_last_position_when_the_work_stops_early(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with pytest.raises(KeyboardInterrupt), Progress(100, "teacher") as p:
        for _ in range(37):
            p.update(1, cached=3)
        raise KeyboardInterrupt
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("teacher: 37/100") and lines[0].endswith("cached 3"), lines


def test_log_lines_follow_the_rate_limit(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Progress(50, "x", log_every_s=0.0) as p:  # no limit: one line per update, none repeated at the end
        for _ in range(50):
            p.update(1)
    assert len(err.getvalue().splitlines()) == 50


def _clean_log(text: str) -> list[str]:
    assert "\r" not in text and "\x1b" not in text, repr(text[:300])
    return text.splitlines()


def test_loading_clips_into_a_log_has_no_control_characters(monkeypatch, tmp_path) -> None:
    from edgeser.adapt.data import load_clips, load_target_audio

    clips = []
    for i in range(200):  # progress shows from 200 clips on
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.full(1600, 0.01 * (i % 7), np.float32), 16000)
        clips.append(Clip(path, "neutral"))
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    load_clips(clips, what="source clips")
    load_target_audio(clips[:-1] + [Clip(tmp_path / "missing.wav", None)], what="target clips")
    lines = _clean_log(err.getvalue())
    assert lines[0].startswith("loading source clips: 200/200"), lines
    assert lines[1].startswith("loading target clips: 200/200"), lines


def test_lalm_progress_into_a_log_has_no_control_characters(monkeypatch, tmp_path) -> None:
    from edgeser.adapt.teachers import LALMTeacher
    from edgeser.testing.openai_server import serve

    server, thread, url = serve(lambda audio, prompt, temperature, n: ["angry"] * n)
    try:
        clips = []
        for i in range(3):
            path = tmp_path / f"{i}.wav"
            sf.write(path, np.full(4000 + 800 * i, 0.01, np.float32), 16000)
            clips.append(Clip(path, None))
        teacher = LALMTeacher(
            url, "stand-in", ["neutral", "angry"], cache_path=tmp_path / "cache.sqlite", timeout_s=5.0, progress=True
        )
        err = io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        samples = teacher.sample(clips, 2)
    finally:
        server.shutdown()
        server.server_close()
    assert np.allclose(samples[..., 1], 1.0)
    lines = _clean_log(err.getvalue())
    assert len(lines) == 1 and lines[0].startswith("lalm:stand-in: 3/3 clips") and "calls" in lines[0], lines
