"""Terminal rendering of distributions and stream events (no dependencies)."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from .runtime.distribution import Distribution
from .runtime.stream import StreamEvent


def bar(p: float, width: int = 24) -> str:
    """A horizontal bar for a probability (eighth-block resolution)."""
    p = min(max(p, 0.0), 1.0)
    full, rest = divmod(int(round(p * width * 8)), 8)
    return ("█" * full + ("▏▎▍▌▋▊▉"[rest - 1] if rest else "")).ljust(width)


def distribution_line(d: Distribution) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in d.items())


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain left-aligned text table."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*[str(c) for c in r]) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


class EventPrinter:
    """Prints stream events: JSON lines, live bars redrawn in place on a terminal, or one line each."""

    def __init__(self, labels: list[str], jsonl: bool = False, out: TextIO | None = None, live: bool | None = None):
        self.out = out or sys.stdout
        self.labels, self.jsonl = labels, jsonl
        self.live = (self.out.isatty() if live is None else live) and not jsonl
        self._drawn = 0

    def __call__(self, ev: StreamEvent) -> None:
        if self.jsonl:
            self.out.write(json.dumps(ev.to_dict()) + "\n")
        elif self.live:
            lines = [f"{ev.time_s:7.2f}s  " + (f"{ev.distribution.top}" if ev.distribution else "(no speech)")]
            for lab in self.labels:
                p = ev.distribution[lab] if ev.distribution else 0.0
                lines.append(f"  {lab:>10} {bar(p)} {p:5.2f}")
            if self._drawn:
                self.out.write(f"\033[{self._drawn}F")
            self.out.write("\n".join(line + "\033[K" for line in lines) + "\n")
            self._drawn = len(lines)
        else:
            body = (
                f"{ev.distribution.top:<10} {distribution_line(ev.distribution)}" if ev.distribution else "(no speech)"
            )
            self.out.write(f"{ev.time_s:7.2f}s  {body}\n")
        self.out.flush()
