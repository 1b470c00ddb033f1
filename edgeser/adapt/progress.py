"""Minimal progress reporting on stderr (no dependency).

On a terminal the counter line rewrites itself; into a log (stderr not a TTY) it prints plain lines,
at most one every ``log_every_s`` seconds plus the last one (also when the work stops early), with no
control characters."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "adapting") as p: p.update(n, loss=0.3)``. Silent when ``enabled`` is False;
    ``unit`` (e.g. "clips") follows the count."""

    def __init__(
        self,
        total: int,
        desc: str,
        enabled: bool = True,
        every_s: float = 0.5,
        log_every_s: float = 10.0,
        unit: str = "",
    ):
        self.total, self.desc, self.enabled, self.unit = total, desc, enabled, unit
        self.tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.every_s = every_s if self.tty else log_every_s
        self.done, self._t0, self._last = 0, time.monotonic(), time.monotonic() if not self.tty else 0.0
        self._printed = False
        self._shown, self._info = 0, {}  # what the last line showed / the latest extra values

    def line(self, **info: float | str) -> str:
        """The text of the progress line (no control characters)."""
        extra = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        rate = self.done / max(time.monotonic() - self._t0, 1e-9)
        unit = f" {self.unit}" if self.unit else ""
        left = self.total - self.done
        eta = f", ETA {format_eta(left / rate)}" if 0 < left and self.done and rate > 0 else ""
        return f"{self.desc}: {self.done}/{self.total}{unit} ({rate:.1f}/s{eta}) {extra}".rstrip()

    def update(self, n: int = 1, **info: float | str) -> None:
        self.done += n
        self._info = info
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.every_s or self.done >= self.total):
            self._last, self._shown = now, self.done
            if self.tty:
                print(f"\r{self.line(**info)}\033[K", end="", file=sys.stderr, flush=True)
                self._printed = True
            else:
                print(self.line(**info), file=sys.stderr, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        if self.tty and self._printed:
            print(file=sys.stderr, flush=True)
        elif not self.tty and self.done != self._shown:  # stopped early (error, Ctrl-C): where it got to
            print(self.line(**self._info), file=sys.stderr, flush=True)


def format_eta(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: the time left, to the second below an hour."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def log(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)
