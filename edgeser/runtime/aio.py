"""asyncio streaming: ``async for event in astream(recognizer_or_stream, chunks)`` without blocking the loop.

Inference runs in a worker thread (ONNX Runtime releases the GIL while it computes), so the event
loop keeps serving the app's other tasks (network, UI, a voice pipeline) while audio is analysed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import Executor
from contextlib import suppress
from typing import Any

from .pcm import PCMDecoder, PCMFormat

#: default bound of the queue between the task reading the source and the inference
MAX_PENDING = 8

_END = object()


class _SourceFailed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _as_stream(target: Any, sample_rate: int, options: dict):
    if hasattr(target, "feed") and hasattr(target, "flush"):
        if options:
            raise TypeError(f"stream options {sorted(options)} only apply when astream is given a Recognizer")
        return target
    if hasattr(target, "stream"):
        return target.stream(sample_rate, **options)
    raise TypeError(f"astream needs a Recognizer or an EmotionStream, got {type(target).__name__}")


async def astream(
    target: Any,
    source: AsyncIterable,
    *,
    sample_rate: int = 16000,
    channels: int | None = None,
    max_pending: int = MAX_PENDING,
    flush: bool = True,
    executor: Executor | None = None,
    **options: Any,
) -> AsyncIterator[Any]:
    """Stream events for an async iterable of audio chunks, never blocking the event loop.

    ``target`` is an ``EmotionStream`` (used as is: its state carries over between calls) or a
    ``Recognizer`` (a new stream at ``sample_rate`` with ``options`` such as ``hop_s``). Chunks are
    float/int arrays (``(T,)`` or ``(T, channels)``) or raw 16-bit little-endian PCM ``bytes`` of
    ``channels`` interleaved channels (default: the stream's ``channels``, else 1), cut anywhere.
    The events are exactly those the synchronous ``stream.feed``/``flush`` give for the same chunks,
    in order; at the end of the source the stream is flushed (unless ``flush=False``).

    Concurrency: decoding and inference run in ``executor`` (default: the loop's thread pool), one
    chunk at a time, so the stream is never used from two threads at once. When this generator
    returns, is closed or cancelled, no inference call of it is still running.

    Backpressure: a task reads the source into a queue of at most ``max_pending`` chunks, while the
    previous chunk is being analysed. When inference or the consumer of the events is slower than
    the source, the queue fills and that task waits before reading the next chunk: the source is
    read no faster than the events are consumed (plus ``max_pending`` chunks), memory stays bounded
    and nothing is dropped. A live source that cannot wait (a sound-card callback) must buffer or
    drop on its side. Closing the generator early stops reading the source."""
    stream = _as_stream(target, sample_rate, options)
    if int(max_pending) != max_pending or max_pending < 1:
        raise ValueError(f"max_pending must be an integer >= 1, got {max_pending}")
    if not hasattr(source, "__aiter__"):
        raise TypeError(
            f"astream needs an async iterable of chunks, got {type(source).__name__} "
            "(wrap a blocking source so that it does not block the event loop)"
        )
    ch = channels or getattr(stream, "channels", None) or 1
    decoder = PCMDecoder(PCMFormat(int(getattr(stream, "sample_rate", sample_rate)), int(ch)))

    def feed(chunk) -> list:
        return list(stream.feed(decoder.to_audio(chunk)))

    def finish() -> list:
        return list(stream.flush())

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(int(max_pending))

    async def read_source() -> None:
        try:
            async for chunk in source:
                await queue.put(chunk)
        except Exception as e:
            await queue.put(_SourceFailed(e))
        else:
            await queue.put(_END)

    reader = asyncio.ensure_future(read_source())
    running: asyncio.Future | None = None
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, _SourceFailed):
                raise item.exc
            running = loop.run_in_executor(executor, feed, item)
            events = await asyncio.shield(running)  # a cancelled consumer does not abandon a running call
            running = None
            for ev in events:
                yield ev
        if flush:
            running = loop.run_in_executor(executor, finish)
            events = await asyncio.shield(running)
            running = None
            for ev in events:
                yield ev
    finally:
        reader.cancel()
        with suppress(asyncio.CancelledError):
            await reader
        if running is not None:
            await asyncio.wait([running])  # let the worker thread finish with the stream
            if not running.cancelled():
                running.exception()  # retrieved: the consumer is gone, nobody else will see it
