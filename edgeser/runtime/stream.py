"""``EmotionStream``: feed audio chunks of any size and rate, get an emotion distribution every hop.

Each stretch of audio is encoded once: the model's frame encoder runs only on the new hop of audio
(plus the few hundred ms of context its receptive field needs), the embeddings of the window's earlier
audio are kept in a buffer, and the model's head pools over the window. The result equals the
whole-window model's (same embeddings, same pooling) up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import soxr

from ..audio import check_audio, check_rate, to_mono
from .contract import hop_samples
from .distribution import Distribution
from .model_file import OnnxModel, softmax
from .pcm import PCMDecoder, PCMFormat
from .speech import Gate, SpeechGate


@dataclass
class StreamEvent:
    """One emitted window. ``distribution`` is ``None`` when the speech gate found no speech."""

    time_s: float  #: audio received so far, seconds since the start (or the last reset)
    start_s: float  #: the window the distribution covers: [start_s, start_s + window_s)
    window_s: float
    speech: bool
    speech_fraction: float
    distribution: Distribution | None  #: smoothed distribution (None for "no speech")
    raw: Distribution | None  #: this window's own distribution, before smoothing

    def to_dict(self) -> dict:
        return {
            "time_s": round(self.time_s, 3),
            "start_s": round(self.start_s, 3),
            "window_s": round(self.window_s, 3),
            "speech": self.speech,
            "speech_fraction": round(self.speech_fraction, 3),
            "top": self.distribution.top if self.distribution else None,
            "distribution": self.distribution.to_dict() if self.distribution else None,
            "raw": self.raw.to_dict() if self.raw else None,
        }


#: what EmotionStream uses of its model (OnnxModel has it; so does runtime.incremental.IncrementalModel)
_MODEL_INTERFACE = (
    "run",
    "labels",
    "sample_rate",
    "window_s",
    "hop_s",
    "receptive_field",
    "embedding_stride",
    "embedding_dim",
    "n_embeddings",
)


class EmotionStream:
    """Sliding-window streaming recognition with explicit state, over a loaded model (as silero-vad's
    ``VADIterator`` takes its model); ``Recognizer.stream()`` is the usual way to make one.

    ``window_s`` / ``hop_s`` default to the model's metadata (the hop is rounded to the model's
    embedding stride, 20 ms for the default model). The first event comes once ``min_window_s`` of
    audio has arrived; windows then grow to ``window_s`` and slide. ``smoothing`` in [0, 1) is the
    weight of the past in an exponential moving average of the emitted distributions (0 = none).
    ``gate`` decides speech / no speech: True for the energy :class:`SpeechGate`, any :class:`Gate`,
    or None/False for none. ``channels`` is the channel count of raw PCM ``bytes`` chunks.

    >>> from edgeser.runtime import DEFAULT_MODEL, load_model
    >>> stream = EmotionStream(load_model(DEFAULT_MODEL), sample_rate=16000)
    >>> [ev.speech for ev in stream.feed(np.zeros(32000, np.float32))]   # 2 s of silence, a hop of 0.5 s
    [False, False, False]
    """

    def __init__(
        self,
        model: OnnxModel,
        sample_rate: int = 16000,
        window_s: float | None = None,
        hop_s: float | None = None,
        min_window_s: float = 1.0,
        smoothing: float = 0.5,
        gate: Gate | None | bool = True,
        channels: int = 1,
    ):
        # an OnnxModel or a model with its interface (runtime.incremental.IncrementalModel); a Recognizer or a
        # path is a common mistake: say what to pass instead
        if not isinstance(model, OnnxModel) and not all(hasattr(model, a) for a in _MODEL_INTERFACE):
            raise TypeError(
                f"EmotionStream needs a loaded OnnxModel, got {type(model).__name__} "
                "(use Recognizer.stream(), or EmotionStream(load_model(path)))"
            )
        m = model
        self.model, self.labels = m, m.labels
        self.sample_rate = check_rate(sample_rate, "stream sample_rate")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        for name, v in (("window_s", window_s), ("hop_s", hop_s), ("min_window_s", min_window_s)):
            if v is not None and not v > 0:  # 0 must not silently mean "the default"
                raise ValueError(f"{name} must be positive, got {v}")
        sr, stride = m.sample_rate, m.embedding_stride
        self.hop = hop_samples(m.hop_s if hop_s is None else hop_s, sr, stride)
        window = max(m.receptive_field, int((m.window_s if window_s is None else window_s) * sr))
        self.window_emb = m.n_embeddings(window)
        if self.hop // stride > self.window_emb:  # an event would pool embeddings beyond the window it reports
            raise ValueError(f"hop_s {self.hop / sr:g} is longer than the window ({window / sr:g} s): raise window_s")
        self.min_emb = max(1, min(self.window_emb, m.n_embeddings(int(min_window_s * sr))))
        self.smoothing = smoothing
        self.gate: Gate | None = SpeechGate(sample_rate=sr, window_s=window / sr) if gate is True else (gate or None)
        if self.gate is not None and not isinstance(self.gate, Gate):
            raise TypeError(f"gate must provide update/is_speech/speech_fraction/reset, got {type(gate).__name__}")
        self.channels = int(channels)
        self._pcm = PCMDecoder(PCMFormat(self.sample_rate, self.channels))
        self.reset()

    def reset(self) -> None:
        """Forget all audio, embeddings and smoothing state (e.g. between utterances or files)."""
        self._rs = (
            None
            if self.sample_rate == self.model.sample_rate
            else soxr.ResampleStream(self.sample_rate, self.model.sample_rate, 1, dtype="float32", quality="HQ")
        )
        self._buf = np.zeros(0, np.float32)  # audio not yet turned into embeddings (incl. context)
        self._emb = np.zeros((1, self.model.embedding_dim, 0), np.float32)
        self._pending = 0  # samples received since the last emission
        self._consumed = 0  # model-rate samples received in total
        self._n_emb = 0  # embeddings computed in total
        self._smooth: np.ndarray | None = None
        self._pcm.reset()
        if self.gate is not None:
            self.gate.reset()

    @property
    def window_s(self) -> float:
        m = self.model
        return (m.receptive_field + (self.window_emb - 1) * m.embedding_stride) / m.sample_rate

    def feed(self, chunk: np.ndarray | bytes) -> list[StreamEvent]:
        """Add audio at the stream's rate: an array ``(T,)`` or ``(T, channels)``, or raw 16-bit
        little-endian PCM ``bytes`` with ``channels`` interleaved channels (a chunk may end mid-frame);
        returns the events it completes."""
        chunk = self._pcm.to_audio(chunk)
        x = to_mono(chunk)  # shape checks first: a (T, 0) chunk is malformed, not an empty one
        x = check_audio(x, "audio chunk") if x.size else np.zeros(0, np.float32)
        if self._rs is not None:
            x = self._rs.resample_chunk(x)
        return self._push(x)

    def flush(self) -> list[StreamEvent]:
        """End of input: emit a last event for the audio received since the last one (if enough)."""
        x = (
            self._rs.resample_chunk(np.zeros(0, np.float32), last=True)
            if self._rs is not None
            else np.zeros(0, np.float32)
        )
        events = self._push(x)
        if self._pending >= self.model.embedding_stride:
            ev = self._step(final=True)
            events += [ev] if ev else []
        return events

    def events(self, chunks: Iterable[np.ndarray]) -> Iterator[StreamEvent]:
        """Lazily turn an iterable of chunks into events (and flush at its end)."""
        for c in chunks:
            yield from self.feed(c)
        yield from self.flush()

    def _push(self, x: np.ndarray) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while len(x):
            take = min(len(x), self.hop - self._pending)
            part, x = x[:take], x[take:]
            self._buf = np.concatenate([self._buf, part])
            if self.gate is not None:
                self.gate.update(part)
            self._pending += take
            self._consumed += take
            if self._pending >= self.hop:
                ev = self._step()
                events += [ev] if ev else []
        return events

    def _step(self, final: bool = False) -> StreamEvent | None:
        m = self.model
        self._pending = 0
        n_new = m.n_embeddings(len(self._buf))
        if n_new == 0:
            return None
        have = self._emb.shape[2]
        keep = max(0, min(have, self.window_emb - n_new))
        cache = self._emb[:, :, have - keep :]
        logits, emb = m.run(self._buf[None, : m.receptive_field + (n_new - 1) * m.embedding_stride], cache)
        self._buf = self._buf[n_new * m.embedding_stride :]
        self._n_emb += n_new
        self._emb = np.concatenate([cache, emb], axis=2)[:, :, -self.window_emb :]
        n = self._emb.shape[2]
        if n < self.min_emb and not final:
            return None
        return self._event(logits, n)

    def _event(self, logits: np.ndarray, n: int) -> StreamEvent:
        """The event of the window made of the last ``n`` embeddings, whose scores are ``logits``."""
        m = self.model
        probs = softmax(logits)[0]
        frac = self.gate.speech_fraction() if self.gate is not None else 1.0
        speech = self.gate.is_speech() if self.gate is not None else True
        raw = Distribution(self.labels, probs, speech_fraction=frac)
        smoothed = None
        if speech:
            self._smooth = (
                probs if self._smooth is None else self.smoothing * self._smooth + (1 - self.smoothing) * probs
            )
            smoothed = Distribution(self.labels, self._smooth, speech_fraction=frac)
        window_s = (m.receptive_field + (n - 1) * m.embedding_stride) / m.sample_rate
        start_s = (self._n_emb - n) * m.embedding_stride / m.sample_rate
        return StreamEvent(
            time_s=self._consumed / m.sample_rate,
            start_s=start_s,
            window_s=window_s,
            speech=speech,
            speech_fraction=frac,
            distribution=smoothed,
            raw=raw if speech else None,
        )
