"""edgeser in a pipecat voice agent: :class:`EmotionProcessor` listens to the user's audio and pushes
:class:`EmotionFrame` s downstream, leaving every frame it receives unchanged.

In a voice agent::

    pipeline = Pipeline([transport.input(), stt, EmotionProcessor(), user_aggregator, llm, tts, transport.output()])

>>> proc = EmotionProcessor()              # the bundled model; a FrameProcessor like any other
>>> isinstance(proc, FrameProcessor), proc.recognizer.labels
(True, ['angry', 'happy', 'neutral', 'sad'])

Needs ``pip install 'edgeser[pipecat]'`` (pipecat-ai, Python >= 3.11).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InputAudioRawFrame,
        SystemFrame,
        TranscriptionFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"edgeser.integrations.pipecat needs pipecat ({e}): pip install 'edgeser[pipecat]'") from e

import numpy as np

from ..runtime.distribution import Distribution
from ..runtime.events import TopTracker
from ..runtime.pcm import PCMDecoder, PCMFormat

#: key of the emotion annotation in ``TranscriptionFrame.metadata``
METADATA_KEY = "edgeser_emotion"

_END = object()


@dataclass
class EmotionFrame(SystemFrame):
    """One emotion event of the user's audio (a system frame: never dropped by interruptions).

    ``event`` is the :class:`edgeser.runtime.StreamEvent` (``time_s`` counts the user's audio since the
    start, ``distribution`` is ``None`` for no speech); ``top`` is the top emotion with hysteresis
    (see :class:`edgeser.runtime.events.TopTracker`), ``changed`` says it changed at this event,
    from ``previous_top``; ``user_id`` is the audio frames' user, when the transport names one."""

    event: Any
    top: str | None
    changed: bool = False
    previous_top: str | None = None
    user_id: str = ""

    @property
    def distribution(self) -> Distribution | None:
        return self.event.distribution

    def to_dict(self) -> dict:
        """JSON-ready (e.g. for an RTVI server message to the app's UI)."""
        return {
            "top": self.top,
            "changed": self.changed,
            "previous_top": self.previous_top,
            "user_id": self.user_id,
            **self.event.to_dict(),
        }

    def __str__(self) -> str:
        return f"{self.name}(time: {self.event.time_s:.2f}s, top: {self.top}, changed: {self.changed})"


class EmotionProcessor(FrameProcessor):
    """Speech emotion of the user's input audio, as frames in the pipeline.

    Every frame goes on unchanged and first; each ``InputAudioRawFrame`` (and ``UserAudioRawFrame``)
    travelling downstream is also queued for a worker task that feeds an ``EmotionStream`` in a
    thread (the event loop is never blocked), and each stream event is pushed downstream as an
    :class:`EmotionFrame`. At ``EndFrame`` the stream is flushed and its last events are pushed
    before the ``EndFrame``. With ``annotate_transcriptions=True``, each ``TranscriptionFrame`` passing
    through gets ``metadata["edgeser_emotion"]``, once the audio received before it has been analysed:
    ``top`` (with hysteresis) and ``distribution``, the mean of the speech events since the previous
    transcription (what the user's turn sounded like), with its ``turn_top``.

    Event handlers (pipecat style, run in order before the frame is pushed)::

        @emotion.event_handler("on_emotion")            # (processor, frame) for every EmotionFrame
        @emotion.event_handler("on_emotion_change")     # (processor, old_top, new_top, frame)

    ``recognizer`` defaults to the bundled model; ``stream_options`` (``hop_s``, ``window_s``,
    ``smoothing``, ``gate``) go to ``Recognizer.stream``; ``margin`` / ``persist`` set the
    hysteresis of ``top``. Audio waits in a queue of ``max_pending`` frames for the worker; if
    inference falls that far behind, the processor waits for room (audio is never dropped) and the
    frames after it are delayed. A change of sample rate or channel count starts a new stream. If the
    analysis fails, an ``ErrorFrame`` (non-fatal) goes upstream, ``failed`` holds the exception and
    the audio keeps flowing, unanalysed."""

    def __init__(
        self,
        recognizer=None,
        *,
        margin: float = 0.1,
        persist: int = 2,
        annotate_transcriptions: bool = False,
        max_pending: int = 256,
        stream_options: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if recognizer is None:
            from ..runtime import Recognizer

            recognizer = Recognizer.load()
        self.recognizer = recognizer
        self.stream_options = dict(stream_options or {})
        recognizer.stream(16000, **self.stream_options)  # bad options fail here, not in the running pipeline
        self.annotate_transcriptions = annotate_transcriptions
        self.max_pending = int(max_pending)
        self.tracker = TopTracker(margin=margin, persist=persist)
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._format: tuple[int, int] | None = None
        self._turn_sum: np.ndarray | None = None
        self._turn_n = 0
        #: the exception that stopped the analysis (reported upstream as an ErrorFrame), else None
        self.failed: Exception | None = None
        self._register_event_handler("on_emotion", sync=True)
        self._register_event_handler("on_emotion_change", sync=True)

    @property
    def top(self) -> str | None:
        """The user's current top emotion (with hysteresis), ``None`` before the first."""
        return self.tracker.top

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)  # the audio goes on first, untouched
            await self._analyse(frame)
        elif isinstance(frame, EndFrame):
            await self._finish()  # the last emotion events go before the EndFrame
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        else:
            if self.annotate_transcriptions and isinstance(frame, TranscriptionFrame):
                await self._catch_up()
                self._annotate(frame)
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop()

    # ------------------------------------------------------------------ internals

    async def _analyse(self, frame: InputAudioRawFrame) -> None:
        if self.failed is not None:
            return
        fmt = (int(frame.sample_rate), int(frame.num_channels))
        if self._worker is None or fmt != self._format:
            await self._finish()
            self._format = fmt
            self._queue = asyncio.Queue(self.max_pending)
            stream = self.recognizer.stream(fmt[0], **self.stream_options)
            self._worker = self.create_task(
                self._run(stream, self._queue, fmt, getattr(frame, "user_id", "")), name=f"{self}::emotion"
            )
        await self._queue.put(frame.audio)

    async def _run(self, stream, queue: asyncio.Queue, fmt: tuple[int, int], user_id: str) -> None:
        """The worker: chunks in order, each decoded and analysed in a thread; barriers are set once the
        audio queued before them has been analysed and its events pushed."""
        decoder = PCMDecoder(PCMFormat(*fmt))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, asyncio.Event):
                    item.set()
                    continue
                if item is _END:
                    events = await asyncio.to_thread(lambda: list(stream.flush()))
                else:
                    events = await asyncio.to_thread(lambda b=item: list(stream.feed(decoder.decode(b))))
                for ev in events:
                    await self._emit(ev, user_id)
                if item is _END:
                    return
        except Exception as e:  # noqa: BLE001 - reported in the pipeline; the audio keeps flowing
            self.failed = e
            while not queue.empty():  # release whoever waits on a barrier
                item = queue.get_nowait()
                if isinstance(item, asyncio.Event):
                    item.set()
            await self.push_error(f"edgeser emotion analysis stopped: {e}", exception=e)

    async def _emit(self, ev, user_id: str) -> None:
        change = self.tracker.update(ev.distribution)
        if ev.distribution is not None:
            p = ev.distribution.probs.astype(np.float64)
            self._turn_sum = p if self._turn_sum is None else self._turn_sum + p
            self._turn_n += 1
        frame = EmotionFrame(
            event=ev,
            top=self.tracker.top,
            changed=change is not None,
            previous_top=change[0] if change else None,
            user_id=user_id,
        )
        await self._call_event_handler("on_emotion", frame)
        if change is not None:
            await self._call_event_handler("on_emotion_change", change[0], change[1], frame)
        await self.push_frame(frame)

    def _annotate(self, frame: TranscriptionFrame) -> None:
        if self._turn_n == 0:
            return
        mean = Distribution(self.recognizer.labels, self._turn_sum / self._turn_n)
        frame.metadata[METADATA_KEY] = {
            "top": self.tracker.top,
            "turn_top": mean.top,
            "distribution": mean.to_dict(),
            "events": self._turn_n,
        }
        self._turn_sum, self._turn_n = None, 0

    async def _catch_up(self) -> None:
        """Wait until the audio received so far has been analysed and its events pushed."""
        if self._worker is not None and not self._worker.done():
            barrier = asyncio.Event()
            await self._queue.put(barrier)
            await barrier.wait()

    async def _finish(self) -> None:
        """End of the audio: flush the stream, wait until its last events are pushed."""
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            await self._queue.put(_END)
            await worker

    async def _stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await self.cancel_task(worker)
