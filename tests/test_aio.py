"""astream: the synchronous stream's events exactly, inference off the event loop, bounded read-ahead."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import numpy as np
import pytest
import soxr

from edgeser.audio import load_audio
from edgeser.demo import demo_clips
from edgeser.runtime import Recognizer
from edgeser.runtime.aio import astream
from edgeser.runtime.pcm import PCMDecoder, PCMFormat

HANDSHAKE_TIMEOUT_S = 30.0  # only reached when the loop is blocked (the failure this test looks for)


@pytest.fixture(scope="module")
def rec():
    return Recognizer.load()


@pytest.fixture(scope="module")
def speech(rec):
    """The angry and the sad demo clip, back to back, at the model's rate."""
    names = ("08a02Wc.flac", "03b03Tc.flac")
    return np.concatenate([load_audio(next(c for c in demo_clips() if c.name == n), rec.sample_rate) for n in names])


def same(a, b) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.to_dict() == y.to_dict()
        for p, q in ((x.distribution, y.distribution), (x.raw, y.raw)):
            assert (p is None) == (q is None)
            if p is not None:
                assert np.array_equal(p.probs, q.probs)


async def agen(items):
    for x in items:
        yield x


async def collect(aiter):
    return [ev async for ev in aiter]


def cut(n: int, rng: np.random.Generator, lo: int, hi: int) -> list[tuple[int, int]]:
    edges = [0]
    while edges[-1] < n:
        edges.append(min(n, edges[-1] + int(rng.integers(lo, hi))))
    return list(itertools.pairwise(edges))


def test_same_events_as_the_sync_stream(rec, speech):
    rng = np.random.default_rng(0)
    chunks = [speech[a:b] for a, b in cut(len(speech), rng, 1, 4000)]
    ref = list(rec.stream(rec.sample_rate, hop_s=0.1).events(chunks))
    got = asyncio.run(collect(astream(rec, agen(chunks), sample_rate=rec.sample_rate, hop_s=0.1)))
    same(got, ref)
    # a stream given as is keeps its own settings and state
    st = rec.stream(rec.sample_rate, hop_s=0.25)
    got = asyncio.run(collect(astream(st, agen(chunks), max_pending=1)))
    same(got, list(rec.stream(rec.sample_rate, hop_s=0.25).events(chunks)))


def test_pcm_bytes_cut_anywhere(rec, speech):
    # 48 kHz stereo int16, as a WebRTC transport would deliver it, in chunks of odd byte sizes
    x48 = soxr.resample(speech, rec.sample_rate, 48000)
    pcm = np.clip(np.round(np.stack([x48, 0.5 * x48], axis=1) * 32768), -32768, 32767).astype("<i2").tobytes()
    rng = np.random.default_rng(1)
    chunks = [pcm[a:b] for a, b in cut(len(pcm), rng, 1, 9001)]
    assert any(len(c) % 4 for c in chunks)
    got = asyncio.run(collect(astream(rec, agen(chunks), sample_rate=48000, channels=2, hop_s=0.1)))
    dec = PCMDecoder(PCMFormat(48000, 2))
    ref = list(rec.stream(48000, hop_s=0.1).events([dec.decode(c) for c in chunks]))
    same(got, ref)
    assert got[-1].time_s == pytest.approx(len(speech) / rec.sample_rate, abs=0.02)


class Instrumented:
    """The real stream, plus a record of the threads and of the event loop's progress during ``feed``."""

    def __init__(self, stream, ticks: list[int], timeout: float = HANDSHAKE_TIMEOUT_S):
        self.stream, self.ticks, self.timeout = stream, ticks, timeout
        self.sample_rate = stream.sample_rate
        self.threads: set[int] = set()
        self.feeds = 0
        self.handshakes_failed = 0

    def feed(self, chunk):
        self.feeds += 1
        self.threads.add(threading.get_ident())
        # the loop must keep ticking while we are in here: wait for two ticks (a condition polled each ms)
        start, end = self.ticks[0], time.monotonic() + self.timeout
        while self.ticks[0] < start + 2 and time.monotonic() < end:
            time.sleep(0.001)
        self.handshakes_failed += self.ticks[0] < start + 2
        return self.stream.feed(chunk)

    def flush(self):
        return self.stream.flush()

    def reset(self):
        self.stream.reset()


def test_event_loop_keeps_running_during_inference(rec, speech):
    chunks = [speech[i : i + 8000] for i in range(0, len(speech), 8000)]

    async def main():
        ticks = [0]
        stop = asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks[0] += 1
                await asyncio.sleep(0.0005)

        inst = Instrumented(rec.stream(rec.sample_rate, hop_s=0.1), ticks)
        t = asyncio.ensure_future(ticker())
        events = await collect(astream(inst, agen(chunks)))
        stop.set()
        await t
        return inst, events, threading.get_ident()

    inst, events, loop_thread = asyncio.run(main())
    assert inst.feeds == len(chunks) and inst.handshakes_failed == 0
    assert loop_thread not in inst.threads
    same(events, list(rec.stream(rec.sample_rate, hop_s=0.1).events(chunks)))


def test_the_handshake_detects_a_blocked_loop(rec, speech):
    """Control: feeding on the loop itself (what astream must not do) fails the handshake."""

    async def blocking(stream, source):
        async for c in source:
            for ev in stream.feed(c):
                yield ev

    async def main():
        ticks = [0]

        async def ticker():
            while True:
                ticks[0] += 1
                await asyncio.sleep(0.0005)

        inst = Instrumented(rec.stream(rec.sample_rate), ticks, timeout=0.05)
        t = asyncio.ensure_future(ticker())
        await collect(blocking(inst, agen([speech[:1600]] * 3)))
        t.cancel()
        return inst

    inst = asyncio.run(main())
    assert inst.handshakes_failed == 3


def test_backpressure_bounds_the_read_ahead(rec, speech):
    max_pending = 3

    async def main():
        reads = [0]
        closed = asyncio.Event()

        async def endless():
            try:
                while True:
                    reads[0] += 1
                    yield speech[:1600]  # a live source: never ends by itself
            finally:
                closed.set()

        inst = Instrumented(rec.stream(rec.sample_rate, hop_s=0.1), [0], timeout=0)
        gen = astream(inst, endless(), max_pending=max_pending)
        first = await gen.__anext__()
        # the consumer is now slow: it holds the first event while the loop goes round many times
        for _ in range(500):
            await asyncio.sleep(0)
        held = reads[0], inst.feeds
        for _ in range(500):
            await asyncio.sleep(0)
        assert (reads[0], inst.feeds) == held  # nothing more is read or analysed while nobody consumes
        await gen.aclose()
        await asyncio.wait_for(closed.wait(), 10)
        return first, held

    first, (reads, feeds) = asyncio.run(main())
    assert first.time_s == pytest.approx(1.0)  # min_window_s of audio: ten chunks of 0.1 s
    # fed chunks + a full queue + the one chunk waiting to be put
    assert feeds == 10 and reads == feeds + max_pending + 1


def test_cancelling_the_consumer_waits_for_the_running_call(rec, speech):
    entered, release, exited = threading.Event(), threading.Event(), threading.Event()

    class Held:
        sample_rate = rec.sample_rate

        def __init__(self):
            self.stream = rec.stream(rec.sample_rate)

        def feed(self, chunk):
            entered.set()
            release.wait(HANDSHAKE_TIMEOUT_S)
            out = self.stream.feed(chunk)
            exited.set()
            return out

        def flush(self):
            return self.stream.flush()

    async def main():
        task = asyncio.ensure_future(collect(astream(Held(), agen([speech[:16000]]))))
        await asyncio.to_thread(entered.wait, HANDSHAKE_TIMEOUT_S)
        task.cancel()
        for _ in range(100):
            await asyncio.sleep(0)
        still_waiting = not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return still_waiting, exited.is_set()

    still_waiting, finished = asyncio.run(main())
    assert still_waiting and finished


def test_errors(rec, speech):
    async def failing():
        yield speech[:1600]
        raise ConnectionError("transport closed")

    with pytest.raises(ConnectionError, match="transport closed"):
        asyncio.run(collect(astream(rec, failing())))
    with pytest.raises(TypeError, match="async iterable"):
        asyncio.run(collect(astream(rec, [speech])))
    with pytest.raises(TypeError, match="Recognizer or an EmotionStream"):
        asyncio.run(collect(astream(object(), agen([speech]))))
    with pytest.raises(TypeError, match="only apply"):
        asyncio.run(collect(astream(rec.stream(), agen([speech]), hop_s=0.1)))
    with pytest.raises(ValueError, match="max_pending"):
        asyncio.run(collect(astream(rec, agen([speech]), max_pending=0)))
    from edgeser.errors import AudioError

    with pytest.raises(AudioError, match="NaN"):
        asyncio.run(collect(astream(rec, agen([np.full(1600, np.nan, np.float32)]))))
