"""Open an edgeser ONNX file in the class its graph needs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import ModelError
from .contract import METADATA_KEY
from .incremental import IncrementalModel
from .model_file import EdgeserModel, OnnxModel, _session


def load_model(path: str | Path, threads: int = 1, providers: Sequence[str] | None = None) -> EdgeserModel:
    """The model at ``path`` in the class its graph needs: an
    :class:`~edgeser.runtime.incremental.IncrementalModel` when its metadata has an ``incremental`` entry (the
    bundled model since 0.2), else an :class:`OnnxModel`. The file is opened once."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    session = _session(path, threads, providers)
    try:  # the class checks the metadata properly (one-line errors); this only picks the class
        meta = json.loads(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        meta = None
    if isinstance(meta, dict) and "incremental" in meta:
        return IncrementalModel(path, threads, providers, session)
    return OnnxModel(path, threads, providers, session)
