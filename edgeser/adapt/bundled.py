"""The bundled default model as an adaptation source (issue 8, item 6).

Only the ONNX file ships -- the incremental streaming graph with int8-stored weights
(``export_incremental_net(..., weights="int8")``; its metadata carries the network config) -- so the
source network is rebuilt from its (dequantized) initializers
(:func:`edgeser.adapt.from_onnx.load_onnx_weights`: exact in eval mode, no pickle, no download) and its
folded batch norms are given statistics on the target audio before training
(:func:`~edgeser.adapt.from_onnx.calibrate_batchnorm`), so that train mode starts where eval mode is.
A source of ``None`` or ``"default"`` means this model everywhere a source checkpoint is accepted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..runtime.contract import METADATA_KEY
from ..runtime.recognizer import DEFAULT_MODEL

#: what ``--source-model`` / ``source=`` take to mean the bundled model (``None`` too)
BUNDLED = "default"


def is_bundled(source: object) -> bool:
    """True for ``None`` and ``"default"``: the bundled model is the source."""
    return source is None or (isinstance(source, str) and source == BUNDLED)


def bundled_metadata(path: Path = DEFAULT_MODEL) -> dict:
    """The bundled model's edgeser metadata (labels, model card, training summary)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return json.loads(meta[METADATA_KEY])


def bundled_description(path: Path = DEFAULT_MODEL) -> str:
    """``bundled default model edgeser-default.onnx (sha256 <12 hex>)``: names the exact file adapted from."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"bundled default model {Path(path).name} (sha256 {digest})"


def bundled_labels(path: Path = DEFAULT_MODEL) -> list[str]:
    """The bundled model's labels, in its output order."""
    return list(bundled_metadata(path)["labels"])


def load_bundled():
    """``(EmotionNet in eval mode, description, summary)`` of the bundled model; the summary carries its
    ``model_card`` and ``data`` so an adapted student names what it came from."""
    from .from_onnx import load_onnx_weights

    meta = bundled_metadata()
    net = load_onnx_weights(DEFAULT_MODEL)
    card = meta.get("model_card")
    summary = {"model_card": card, "data": card, "source_training": meta.get("training")}
    return net, bundled_description(), summary
