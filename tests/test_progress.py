"""Progress lines: rewriting on a terminal, plain rate-limited lines in logs (no control characters)."""

from __future__ import annotations

import io
import os
import sys

import pytest

from edgeser.adapt.progress import Progress


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
        out = os.read(master, 65536).decode()
    finally:
        os.close(master)
        tty.close()
    assert out.replace("\r\n", "\n").count("\r") == 3 and "\x1b[K" in out and "loading: 3/3" in out
    assert out.replace("\r\n", "\n").endswith("\n")


def test_log_gets_the_last_position_when_the_work_stops_early(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with pytest.raises(KeyboardInterrupt):
        with Progress(100, "teacher") as p:
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
