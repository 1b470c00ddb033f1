"""A self-describing edgeser ONNX model: an ONNX Runtime session plus the metadata it carries.

The graph takes ``audio [B, T]`` (float32 at the model's rate) and ``cache [B, C, F0]`` (embeddings
of earlier audio; ``F0 = 0`` for a whole clip) and returns ``logits [B, n]`` for the window made of
the cache and the new audio, and the new ``embeddings [B, C, F1]``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .contract import INPUTS, METADATA_KEY, OUTPUTS, validate_metadata


def _session(path: Path, threads: int, providers: Sequence[str] | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    wanted = list(providers) if providers else ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ModelError(f"execution providers {missing} are not available here (available: {available})")
    try:
        return ort.InferenceSession(str(path), opts, providers=wanted)
    except Exception as e:
        raise ModelError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None


class EdgeserModel:
    """What every edgeser ONNX form shares: the session, the edgeser metadata read from it, and the sizes
    derived from the metadata. Subclasses check their graph's inputs and outputs and call :meth:`_adopt`."""

    def __init__(self, path: str | Path, threads: int = 1, providers: Sequence[str] | None = None, session: Any = None):
        self.path = Path(path)
        if session is None:
            if not self.path.is_file():
                raise ModelError(f"{self.path}: no such model file")
            session = _session(self.path, threads, providers)
        self.session = session  # given by load_model, which opened it to read the metadata
        meta_map = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta_map:
            raise ModelError(f"{self.path}: ONNX model without edgeser metadata (was it made by 'edgeser export'?)")
        try:
            self._raw_metadata = json.loads(meta_map[METADATA_KEY])
        except json.JSONDecodeError:
            raise ModelError(f"{self.path}: edgeser metadata is not valid JSON") from None

    def _adopt(self, meta: dict[str, Any]) -> None:
        """Take validated metadata (:func:`~edgeser.runtime.contract.validate_metadata`) as attributes."""
        self.metadata: dict[str, Any] = meta
        self.labels: list[str] = list(meta["labels"])
        self.sample_rate: int = meta["sample_rate"]
        self.window_s: float = meta["window_s"]
        self.hop_s: float = meta["hop_s"]
        self.receptive_field: int = meta["receptive_field"]
        self.embedding_stride: int = meta["embedding_stride"]
        self.embedding_dim: int = meta["embedding_dim"]

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses."""
        return list(self.session.get_providers())

    def n_embeddings(self, n_samples: int) -> int:
        """Embeddings produced by ``n_samples`` samples (0 when shorter than the receptive field)."""
        if n_samples < self.receptive_field:
            return 0
        return (n_samples - self.receptive_field) // self.embedding_stride + 1

    def empty_cache(self, batch: int = 1) -> np.ndarray:
        return np.zeros((batch, self.embedding_dim, 0), np.float32)


class OnnxModel(EdgeserModel):
    """ONNX Runtime session + metadata. ``providers`` actually in use are read from the session
    (``onnxruntime.get_device()`` says GPU for the GPU package even without a GPU)."""

    def __init__(self, path: str | Path, threads: int = 1, providers: Sequence[str] | None = None, session: Any = None):
        super().__init__(path, threads, providers, session)
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if sorted(inputs) != sorted(INPUTS) or sorted(outputs) != sorted(OUTPUTS):
            raise ModelError(
                f"{self.path}: expected inputs {list(INPUTS)} and outputs {list(OUTPUTS)}, found "
                f"{sorted(inputs)} and {sorted(outputs)}"
            )

        def fixed(shape: list, axis: int) -> int | None:  # a static dim of the graph, or None
            return shape[axis] if len(shape) > axis and isinstance(shape[axis], int) else None

        meta = validate_metadata(
            self._raw_metadata,
            str(self.path),
            n_outputs=fixed(outputs["logits"], 1),
            channels=fixed(inputs["cache"], 1),
        )
        self._adopt(meta)
        self._probe()

    def _probe(self) -> None:
        """Run the graph on silence of ``receptive_field - 1``, ``receptive_field`` and ``+ stride`` samples: it
        must give 0, 1 and 2 embeddings of ``embedding_dim`` and one score per label, or the metadata does not
        describe this graph (a wrong receptive field or stride loads and streams subtly wrong windows)."""
        import onnxruntime as ort

        rf, stride, where = self.receptive_field, self.embedding_stride, str(self.path)
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # an expected refusal of short audio is not logged to stderr

        def frames(n: int) -> int:
            try:
                feed = {"audio": np.zeros((1, n), np.float32), "cache": self.empty_cache()}
                logits, emb = self.session.run(None, feed, quiet)
            except Exception as e:
                if n < rf:
                    return 0  # a graph may refuse audio shorter than its receptive field
                raise ModelError(
                    f"{where}: the graph fails on {n} samples of silence, which its metadata says is "
                    f"enough (receptive_field {rf}): "
                    f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
                ) from None
            if logits.shape != (1, len(self.labels)):
                raise ModelError(
                    f"{where}: {len(self.labels)} labels in the metadata but the model outputs "
                    f"{logits.shape[1:]} scores"
                )
            if emb.ndim != 3 or emb.shape[:2] != (1, self.embedding_dim):
                raise ModelError(
                    f"{where}: embedding_dim {self.embedding_dim} in the metadata but the graph's "
                    f"embeddings have shape {emb.shape}"
                )
            return emb.shape[2]

        for n, want in ((rf - 1, 0), (rf, 1), (rf + stride, 2)):
            if n > 0 and (got := frames(n)) != want:
                raise ModelError(
                    f"{where}: the graph gives {got} embeddings for {n} samples, the metadata "
                    f"(receptive_field {rf}, embedding_stride {stride}) says {want}"
                )

    def run(self, audio: np.ndarray, cache: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``audio [B, T]`` (T >= receptive field), ``cache [B, C, F0]`` -> ``(logits [B, n], embeddings [B, C, F1])``."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[1] < self.receptive_field:
            raise ValueError(f"audio must be [B, T>={self.receptive_field}], got {audio.shape}")
        if cache is None:
            cache = self.empty_cache(audio.shape[0])
        logits, emb = self.session.run(None, {"audio": audio, "cache": np.ascontiguousarray(cache, dtype=np.float32)})
        return logits, emb


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax (float64 inside for stability), float32 out."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
