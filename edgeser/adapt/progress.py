"""Minimal progress reporting on stderr (no dependency): a counter line that rewrites itself."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "adapting") as p: p.update(n, loss=0.3)``. Silent when ``enabled`` is False."""

    def __init__(self, total: int, desc: str, enabled: bool = True, every_s: float = 0.5):
        self.total, self.desc, self.enabled, self.every_s = total, desc, enabled, every_s
        self.done, self._t0, self._last = 0, time.monotonic(), 0.0

    def update(self, n: int = 1, **info: float | str) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.every_s or self.done >= self.total):
            self._last = now
            extra = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
            rate = self.done / max(now - self._t0, 1e-9)
            print(f"\r{self.desc}: {self.done}/{self.total} ({rate:.1f}/s) {extra}\033[K", end="",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            print(file=sys.stderr, flush=True)


def log(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)
