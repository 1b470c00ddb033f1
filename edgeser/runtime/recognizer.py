"""``Recognizer``: load a model (the bundled default when no path is given) and predict emotion
distributions for audio arrays or files of any rate, channel count and length."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import MAX_IN_MEMORY_S, audio_info, iter_audio_blocks, load_audio, prepare
from ..errors import EdgeserError
from .distribution import Distribution
from .incremental import IncrementalModel, IncrementalStream
from .load import load_model
from .model_file import EdgeserModel, softmax
from .speech import speech_fraction
from .stream import EmotionStream

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model" / "edgeser-default.onnx"

#: audio up to this long is one window; longer audio is cut into ``SEGMENT_S`` segments whose
#: distributions are averaged, weighted by their share of speech (bounded memory and cost)
MAX_WHOLE_S = 30.0
SEGMENT_S = 10.0


@dataclass
class FileResult:
    """One file of a batch: a distribution, or the one-line error that stopped it."""

    path: str
    distribution: Distribution | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    duration_s: float | None = None


def _clipping_warning(clipped: int, total: int) -> list[str]:
    share = clipped / max(total, 1)
    return [f"{share:.1%} of samples are clipped"] if share > 0.01 else []


def _n_clipped(x: np.ndarray) -> int:
    return int(np.count_nonzero(np.abs(x) >= 0.999))


class Recognizer:
    """Whole-clip emotion recognition with an edgeser ONNX model.

    >>> from edgeser.audio import load_audio
    >>> from edgeser.demo import DEMO_DIR
    >>> rec = Recognizer.load()                                  # the bundled default model
    >>> audio = load_audio(DEMO_DIR / "03a02Wc.flac", 44100)     # an angry EmoDB clip, resampled to 44.1 kHz
    >>> dist = rec.predict(audio, 44100)                         # any rate, mono or (samples, channels)
    >>> dist.top, dist["angry"] > 0.5
    ('angry', True)
    """

    def __init__(self, model: EdgeserModel):
        self.model = model

    @classmethod
    def load(
        cls, path: str | Path | None = None, threads: int = 1, providers: Sequence[str] | None = None
    ) -> Recognizer:
        """Load ``path`` or, when ``None``, the bundled default model. ``threads`` sets ONNX Runtime's
        intra-op threads (default 1: on-device apps share the CPU). ``providers`` e.g.
        ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` with onnxruntime-gpu installed."""
        return cls(load_model(path or DEFAULT_MODEL, threads=threads, providers=providers))

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def _probs(self, x: np.ndarray) -> np.ndarray:
        """One window of model-rate audio -> probabilities (short audio is zero-padded)."""
        if len(x) < self.model.receptive_field:
            x = np.pad(x, (0, self.model.receptive_field - len(x)))
        logits, _ = self.model.run(x[None])
        return softmax(logits)[0]

    def _segments(self, blocks: Iterable[np.ndarray], clipped: list[int] | None = None) -> Distribution:
        """Average segment distributions weighted by speech share (plus a little, so silence alone still
        yields an answer, flagged by ``speech_fraction``). ``clipped`` gets ``[clipped samples, samples]``."""
        seg = int(SEGMENT_S * self.sample_rate)
        acc, weight, speech, total, buf = np.zeros(len(self.labels)), 0.0, 0.0, 0, np.zeros(0, np.float32)
        n_clip = 0

        def add(x: np.ndarray) -> None:
            nonlocal acc, weight, speech, total, n_clip
            s = speech_fraction(x, self.sample_rate)
            w = (s + 1e-3) * len(x)
            acc, weight = acc + w * self._probs(x), weight + w
            speech, total = speech + s * len(x), total + len(x)
            n_clip += _n_clipped(x)

        for block in blocks:
            buf = np.concatenate([buf, block])
            while len(buf) >= 2 * seg:  # keep the last segment at least SEGMENT_S long
                add(buf[:seg])
                buf = buf[seg:]
        if len(buf):
            add(buf)
        if clipped is not None:
            clipped[:] = [n_clip, total]
        return Distribution(self.labels, acc / weight, speech_fraction=speech / max(total, 1))

    def predict(self, audio: np.ndarray, sample_rate: int) -> Distribution:
        """Emotion distribution of ``audio`` (``(T,)`` or ``(T, channels)``, any rate, float or int PCM)."""
        x = prepare(audio, sample_rate, self.sample_rate)
        if len(x) <= MAX_WHOLE_S * self.sample_rate:
            return Distribution(self.labels, self._probs(x), speech_fraction=speech_fraction(x, self.sample_rate))
        return self._segments([x])

    def _file(self, path: str | Path) -> tuple[Distribution, list[str], float]:
        """Decode once -> (distribution, warnings, duration); long files are read in blocks."""
        _, _, duration = audio_info(path)
        if duration <= min(MAX_WHOLE_S, MAX_IN_MEMORY_S):
            x = load_audio(path, self.sample_rate)
            dist = Distribution(self.labels, self._probs(x), speech_fraction=speech_fraction(x, self.sample_rate))
            warn = _clipping_warning(_n_clipped(x), len(x))
        else:
            counts = [0, 0]
            dist = self._segments(iter_audio_blocks(path, self.sample_rate, SEGMENT_S), counts)
            warn = _clipping_warning(*counts)
        if not dist.speech_fraction:
            warn.append("no speech detected")
        return dist, warn, duration

    def predict_file(self, path: str | Path) -> Distribution:
        """Distribution of an audio file; files of any length are read in blocks (bounded memory)."""
        return self._file(path)[0]

    def predict_files(self, paths: Iterable[str | Path]) -> Iterator[FileResult]:
        """Lazily predict many files; a bad file yields a result with ``error`` and the rest go on."""
        for p in paths:
            try:
                dist, warn, duration = self._file(p)
                yield FileResult(str(p), dist, warnings=warn, duration_s=duration)
            except EdgeserError as e:
                yield FileResult(str(p), error=str(e))

    def stream(self, sample_rate: int = 16000, **options) -> EmotionStream:
        """An :class:`EmotionStream` over this model for audio arriving at ``sample_rate`` (options:
        ``window_s``, ``hop_s``, ``min_window_s``, ``smoothing``, ``gate``, ``channels``); over an incremental
        model (the bundled one) an :class:`~edgeser.runtime.incremental.IncrementalStream`, which encodes
        each hop's audio once and emits the same events."""
        if isinstance(self.model, IncrementalModel):
            return IncrementalStream(self.model, sample_rate=sample_rate, **options)
        return EmotionStream(self.model, sample_rate=sample_rate, **options)

    def astream(self, source, sample_rate: int = 16000, **options):  # noqa: ANN001, ANN201 (see aio.astream)
        """``async for event in rec.astream(chunks)``: :func:`edgeser.runtime.aio.astream` over a new stream."""
        from .aio import astream

        return astream(self, source, sample_rate=sample_rate, **options)
