"""Streaming with the incremental graph: each hop encodes only its new audio.

The graph (``edgeser.export.incremental``) carries every convolution's left context as state inputs and
outputs: ``(audio [B,T], audio_state, mel_state, conv_state, cache [B,C,F0]) -> (logits, embeddings
[B,C,F1], audio_state_out, mel_state_out, conv_state_out)``; the logits pool ``cat(cache, embeddings)``.
Fed ``k * block`` samples per call from a zero state, it returns ``k`` embeddings; the first ``warmup``
of a stream depend on the zero state: they are computed in calls of their own and dropped.
``IncrementalModel.run`` keeps ``OnnxModel.run``'s whole-window contract, so ``Recognizer`` works with
such a file unchanged; ``IncrementalStream`` has ``EmotionStream``'s windows, gate, smoothing and events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .contract import validate_metadata
from .model_file import EdgeserModel
from .speech import Gate
from .stream import EmotionStream, StreamEvent

INPUTS = ("audio", "audio_state", "mel_state", "conv_state", "cache")
OUTPUTS = ("logits", "embeddings", "audio_state_out", "mel_state_out", "conv_state_out")
STATES = ("audio_state", "mel_state", "conv_state")

State = dict[str, np.ndarray]


class IncrementalModel(EdgeserModel):
    """ONNX Runtime session of an incremental edgeser graph plus its metadata (see the module docstring).
    Has ``OnnxModel``'s attributes and ``run``; ``step`` is the incremental call."""

    def __init__(self, path: str | Path, threads: int = 1, providers: Sequence[str] | None = None, session: Any = None):
        super().__init__(path, threads, providers, session)
        if "incremental" not in self._raw_metadata:
            raise ModelError(f"{self.path}: edgeser metadata lacks ['incremental'] (not an incremental graph?)")
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != set(INPUTS):
            raise ModelError(f"{self.path}: expected inputs {list(INPUTS)}, found {sorted(inputs)}")
        cache_channels = inputs["cache"][1] if isinstance(inputs["cache"][1], int) else None
        self._adopt(validate_metadata(self._raw_metadata, str(self.path), channels=cache_channels))
        inc = self.metadata["incremental"]
        try:
            self.block, self.warmup, self.tail = int(inc["block"]), int(inc["warmup"]), int(inc["tail"])
            self.state_shapes = {k: tuple(int(d) for d in inc["states"][k]) for k in STATES}
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{self.path}: malformed 'incremental' metadata {inc!r}") from None
        for k in STATES:
            if tuple(inputs[k][1:]) != self.state_shapes[k]:
                raise ModelError(f"{self.path}: input {k} has shape {inputs[k]}, metadata says {self.state_shapes[k]}")
        if (
            self.block != self.embedding_stride
            or not 0 < self.tail <= self.block
            or self.receptive_field != self.warmup * self.block + self.tail
        ):
            raise ModelError(f"{self.path}: inconsistent 'incremental' metadata {inc!r}")

    def initial_state(self, batch: int = 1) -> State:
        """Zero states: a stream's start (its first ``warmup`` embeddings are then not valid)."""
        return {k: np.zeros((batch, *s), np.float32) for k, s in self.state_shapes.items()}

    def step(
        self, audio: np.ndarray, state: State, cache: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, State]:
        """One incremental call: ``audio [B, k*block]`` after ``state`` -> ``(logits of cat(cache,
        embeddings), embeddings [B,C,k], next state)``."""
        if cache is None:
            cache = self.empty_cache(audio.shape[0])
        feed = dict(state)
        feed["audio"] = np.ascontiguousarray(audio, dtype=np.float32)
        feed["cache"] = np.ascontiguousarray(cache, dtype=np.float32)
        logits, emb, *states = self.session.run(OUTPUTS, feed)
        return logits, emb, dict(zip(STATES, states))

    def run(self, audio: np.ndarray, cache: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``OnnxModel.run``'s contract: ``audio [B, T]`` (T >= receptive field), ``cache [B, C, F0]`` ->
        ``(logits [B, n], embeddings [B, C, F1])``: the warmup blocks from a zero state, then the rest."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[1] < self.receptive_field:
            raise ValueError(f"audio must be [B, T>={self.receptive_field}], got {audio.shape}")
        split = self.warmup * self.block
        _, _, state = self.step(audio[:, :split], self.initial_state(audio.shape[0]))
        logits, emb, _ = self.step(audio[:, split:], state, cache)
        return logits, emb


class IncrementalStream(EmotionStream):
    """``EmotionStream`` (same arguments, windows, gate, smoothing and events) over an incremental model:
    each hop's audio is encoded once, without re-encoding the receptive field's context. Accepts a
    ``Recognizer`` whose model is an :class:`IncrementalModel`, or the model itself."""

    def __init__(
        self,
        recognizer: IncrementalModel | Any,
        sample_rate: int = 16000,
        window_s: float | None = None,
        hop_s: float | None = None,
        min_window_s: float = 1.0,
        smoothing: float = 0.5,
        gate: Gate | None | bool = True,
        channels: int = 1,
    ):
        model = recognizer if isinstance(recognizer, IncrementalModel) else getattr(recognizer, "model", recognizer)
        if not isinstance(model, IncrementalModel):
            raise ModelError(f"{model.path}: not an incremental model (use EmotionStream)")
        super().__init__(model, sample_rate, window_s, hop_s, min_window_s, smoothing, gate, channels)

    def reset(self) -> None:
        super().reset()
        self._state = self.model.initial_state(1)
        self._warm = self.model.warmup  # zero-state outputs still to drop
        self._provisional = False  # the window's last embedding came from a zero-padded block

    def _step(self, final: bool = False) -> StreamEvent | None:
        m = self.model
        self._pending = 0
        z = m.block
        n_full = len(self._buf) // z
        if self._warm and n_full:  # warmup blocks: a call of their own, outputs dropped
            w = min(self._warm, n_full)
            _, _, self._state = m.step(self._buf[None, : w * z], self._state)
            self._buf, n_full, self._warm = self._buf[w * z :], n_full - w, self._warm - w
        rest = len(self._buf) - n_full * z
        # a partial block long enough for one more embedding (at flush(), or at every hop after a flush
        # that left one) is run zero-padded, its state not kept, as EmotionStream encodes it too; the
        # next call recomputes that embedding from the real audio and replaces it
        extra = rest >= m.tail and not self._warm
        have = self._emb.shape[2]
        if self._provisional and (n_full or extra):
            have, self._n_emb, self._provisional = have - 1, self._n_emb - 1, False
        n_new = n_full + extra
        if n_new == 0:
            return None
        keep = max(0, min(have, self.window_emb - n_new))
        cache = self._emb[:, :, have - keep : have]
        new = np.zeros((1, m.embedding_dim, 0), np.float32)
        logits = None
        if n_full:
            logits, new, self._state = m.step(self._buf[None, : n_full * z], self._state, cache)
            self._buf = self._buf[n_full * z :]
        if extra:
            block = np.zeros((1, z), np.float32)
            block[0, :rest] = self._buf
            logits, emb, _ = m.step(block, self._state, np.concatenate([cache, new], axis=2))
            new = np.concatenate([new, emb], axis=2)
            self._provisional = True
        self._n_emb += n_new
        self._emb = np.concatenate([cache, new], axis=2)[:, :, -self.window_emb :]
        n = self._emb.shape[2]
        if n < self.min_emb and not final:
            return None
        return self._event(logits, n)
