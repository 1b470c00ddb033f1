"""Callbacks for apps that push audio: ``on_event`` for every distribution, ``on_change`` when the top
emotion changes, with hysteresis so that a UI does not flicker between two close labels.

>>> import numpy as np
>>> from edgeser.audio import load_audio
>>> from edgeser.demo import DEMO_DIR
>>> from edgeser.runtime import Recognizer
>>> rec, shown = Recognizer.load(), []
>>> cb = EmotionCallbacks(rec.stream(16000), on_change=lambda old, new, ev: shown.append(new))
>>> for clip in ("03a02Wc.flac", "08b10Tc.flac"):    # angry, then sad: pushed as the app gets audio
...     _ = cb.push(load_audio(DEMO_DIR / clip, 16000))
>>> shown
['angry', 'sad']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .distribution import Distribution

OnEvent = Callable[[Any], None]
OnChange = Callable[[str | None, str, Any], None]


class TopTracker:
    """The top label of a sequence of distributions, with hysteresis.

    A new label ``c`` replaces the reported top ``t`` only when, on ``persist`` consecutive speech
    distributions, ``c`` is the most probable label and ``p[c] - p[t] >= margin`` (``p[t] = 0``
    while nothing has been reported yet). A distribution that breaks the run (``t`` back on top, a
    different challenger, or too small a lead) starts it over. ``None`` (no speech) is ignored: it
    neither changes the top nor interrupts a run. ``margin=0, persist=1`` reports every change of
    the argmax."""

    def __init__(self, margin: float = 0.1, persist: int = 2):
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        if int(persist) != persist or persist < 1:
            raise ValueError(f"persist must be an integer >= 1, got {persist}")
        self.margin, self.persist = float(margin), int(persist)
        self.reset()

    def reset(self) -> None:
        """Forget the reported top and any pending challenger."""
        self.top: str | None = None
        self._challenger: str | None = None
        self._run = 0

    def update(self, dist: Distribution | None) -> tuple[str | None, str] | None:
        """Take one distribution; return ``(old_top, new_top)`` when the reported top changes, else ``None``."""
        if dist is None:
            return None
        c = dist.top
        if c == self.top:
            self._challenger, self._run = None, 0
            return None
        lead = dist[c] - (dist[self.top] if self.top is not None else 0.0)
        if lead < self.margin:
            self._challenger, self._run = None, 0
            return None
        self._run = self._run + 1 if c == self._challenger else 1
        self._challenger = c
        if self._run < self.persist:
            return None
        old, self.top = self.top, c
        self._challenger, self._run = None, 0
        return old, c


class EmotionCallbacks:
    """Push audio, get callbacks: ``on_event(event)`` for every event of ``stream`` and
    ``on_change(old_top, new_top, event)`` when the top of the (smoothed) distribution changes
    under :class:`TopTracker`'s hysteresis (``margin``, ``persist``). Callbacks run in the thread
    that calls :meth:`push`; an exception in a callback propagates to that caller.

    The instance is also callable on events obtained elsewhere (e.g. from ``astream``)."""

    def __init__(
        self,
        stream,
        on_event: OnEvent | None = None,
        on_change: OnChange | None = None,
        *,
        margin: float = 0.1,
        persist: int = 2,
    ):
        self.stream = stream
        self.on_event, self.on_change = on_event, on_change
        self.tracker = TopTracker(margin=margin, persist=persist)

    @property
    def top(self) -> str | None:
        """The top emotion last reported to ``on_change`` (``None`` before the first)."""
        return self.tracker.top

    def __call__(self, event) -> None:
        """Dispatch one event to the callbacks."""
        if self.on_event is not None:
            self.on_event(event)
        change = self.tracker.update(event.distribution)
        if change is not None and self.on_change is not None:
            self.on_change(change[0], change[1], event)

    def push(self, chunk) -> list:
        """Feed ``chunk`` to the stream, dispatch the events it completes and return them."""
        events = list(self.stream.feed(chunk))
        for ev in events:
            self(ev)
        return events

    def flush(self) -> list:
        """End of input: flush the stream and dispatch its last events."""
        events = list(self.stream.flush())
        for ev in events:
            self(ev)
        return events

    def reset(self) -> None:
        """Start over (stream and top); ``on_change`` is not called for the reset."""
        self.stream.reset()
        self.tracker.reset()
