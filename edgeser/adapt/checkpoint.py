"""Checkpoints and training states, stored in a format that cannot carry code.

A checkpoint (``<out>.pt``) holds the model config (labels, audio settings), weights and a summary; the
training state for resuming (optimizer, epoch, RNG, method state) lives in a sibling ``<out>.pt.state``
so the model file itself stays small and final. Both are safetensors files: every tensor, numpy array
and numpy scalar is a safetensors tensor, everything else a tagged JSON tree in the string metadata
(tags below). Pickles (``torch.save`` files) are refused, never loaded: unpickling runs whatever
code the file names.

Checkpoint metadata: ``format`` = ``edgeser-checkpoint-2``, ``weights`` (JSON list of the state_dict
names, in order: each is a tensor of that name), ``config`` and ``summary`` (tagged JSON). State
metadata: ``format`` = ``edgeser-state-2``, ``state`` (tagged JSON; tensors named ``"0"``, ``"1"``, ...).
Tagged JSON: null/bool/int/str/finite float/list/dict-with-plain-str-keys as themselves, else
``{"$float": "nan"|"inf"|"-inf"}``, ``{"$tuple": [...]}``, ``{"$dict": [[k, v], ...]}``,
``{"$odict": [[k, v], ...], "metadata": ...}``, ``{"$tensor": name}``,
``{"$ndarray": name, "dtype": "<f8"}``, ``{"$npscalar": name, "dtype": "<i8"}``."""

from __future__ import annotations

import collections
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from ..errors import ModelError
from .model import EmotionNet, ModelConfig

CHECKPOINT_FORMAT = "edgeser-checkpoint-2"
STATE_FORMAT = "edgeser-state-2"
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_TAGS = ("$float", "$tuple", "$dict", "$odict", "$tensor", "$ndarray", "$npscalar")


# ----------------------------------------------------------------------------- tagged JSON encoding


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """``obj`` as a JSON-able tree; its tensors, numpy arrays and numpy scalars go to ``tensors`` under
    ``f"{prefix}{n}"``. Exact for None, bool, int (any size), float (NaN/inf too), str, list, tuple,
    dict (any such keys), OrderedDict (with torch's ``_metadata``), torch tensors and numpy arrays and
    scalars of any dtype safetensors stores; anything else is a ``TypeError`` naming where it sits."""

    def put(t: torch.Tensor) -> str:
        name = f"{prefix}{len(tensors)}"
        if name in tensors:
            raise ValueError(f"tensor name {name!r} is taken")
        tensors[name] = t.detach().cpu().contiguous()
        return name

    def enc(x: Any, where: str) -> Any:
        t = type(x)
        if x is None or t in (bool, int, str):
            return x
        if t is float:
            return x if math.isfinite(x) else {"$float": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}
        if t is list:
            return [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if t is tuple:
            return {"$tuple": [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if t is dict or t is collections.OrderedDict:
            if t is dict and all(type(k) is str and not k.startswith("$") for k in x):
                return {k: enc(v, f"{where}[{k!r}]") for k, v in x.items()}
            items = [[enc(k, f"{where} key {k!r}"), enc(v, f"{where}[{k!r}]")] for k, v in x.items()]
            if t is dict:
                return {"$dict": items}
            out: dict = {"$odict": items}
            if hasattr(x, "_metadata"):  # torch's per-module versions on a module's state_dict()
                out["metadata"] = enc(x._metadata, f"{where}._metadata")
            return out
        if t is torch.Tensor:
            if x.layout != torch.strided or x.is_quantized:
                raise TypeError(f"cannot store a {x.layout} / quantized tensor at {where}")
            return {"$tensor": put(x)}
        if t is np.ndarray or isinstance(x, np.generic):
            a = np.asarray(x)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"cannot store a numpy array of dtype {a.dtype} at {where}")
            name = put(torch.from_numpy(np.array(a, a.dtype.newbyteorder("="), order="C")))  # a copy: writable
            return {"$ndarray" if t is np.ndarray else "$npscalar": name, "dtype": a.dtype.str}
        raise TypeError(f"cannot store a {t.__module__}.{t.__qualname__} at {where}")

    return enc(obj, "state")


def decode_tree(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Undo :func:`encode_tree`. A malformed tree is a ``ValueError`` (never anything else is built)."""

    def dec(x: Any) -> Any:
        if x is None or type(x) in (bool, int, str, float):
            return x
        if type(x) is list:
            return [dec(v) for v in x]
        if type(x) is not dict:
            raise ValueError(f"unexpected {type(x).__name__} in the header")
        tags = [k for k in x if k.startswith("$")]
        if not tags:
            return {k: dec(v) for k, v in x.items()}
        if len(tags) != 1 or tags[0] not in _TAGS:
            raise ValueError(f"unknown tag {tags}")
        tag = tags[0]
        v = x[tag]
        if tag == "$float":
            if v not in ("nan", "inf", "-inf"):
                raise ValueError(f"bad float {v!r}")
            return float(v)
        if tag == "$tuple":
            return tuple(dec(_list(v)))
        if tag in ("$dict", "$odict"):
            pairs = [(dec(k), dec(val)) for k, val in (_pair(p) for p in _list(v))]
            if tag == "$dict":
                return dict(pairs)
            od = collections.OrderedDict(pairs)
            if "metadata" in x:
                od._metadata = dec(x["metadata"])  # type: ignore[attr-defined]
            return od
        if type(v) is not str or v not in tensors:
            raise ValueError(f"missing tensor {v!r}")
        t = tensors[v]
        if tag == "$tensor":
            return t
        want = np.dtype(_dtype_str(x.get("dtype")))
        a = t.numpy()
        if a.dtype != want.newbyteorder("="):
            raise ValueError(f"tensor {v!r} is {a.dtype}, the header says {want}")
        a = a.astype(want, copy=False)
        if tag == "$npscalar":
            if a.ndim != 0:
                raise ValueError(f"numpy scalar {v!r} has shape {a.shape}")
            return a[()]
        return a

    return dec(tree)


def _list(v: Any) -> list:
    if type(v) is not list:
        raise ValueError("expected a list")
    return v


def _pair(p: Any) -> tuple:
    if type(p) is not list or len(p) != 2:
        raise ValueError("expected a [key, value] pair")
    return p[0], p[1]


def _dtype_str(s: Any) -> str:
    if type(s) is not str or len(s) > 8 or s[:1] not in "<>|=" or s[1:2] not in tuple("biuf"):
        raise ValueError(f"bad numpy dtype {s!r}")
    return s


# ----------------------------------------------------------------------------------- file level


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    data = _st_save(tensors, metadata=metadata)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(path: Path, fmt: str, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of an edgeser safetensors file of format ``fmt``, or a one-line
    ``ModelError`` (``what`` names the kind of file). The bytes are parsed, never unpickled."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder, not {what}") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read {what} ({e.strerror or type(e).__name__})") from None
    if not data:
        raise ModelError(f"{path}: empty file, not {what}")
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if n < 2 or n > _MAX_HEADER or 8 + n > len(data) or data[8:9] != b"{":
        if data[:4] == b"PK\x03\x04" or data[:1] == b"\x80":  # torch.save's zip, or a bare pickle
            raise ModelError(
                f"{path}: a pickle (torch.save) file, not {what}; pickles are never loaded since they can run code"
            )
        kind = "truncated" if 2 <= n <= _MAX_HEADER and data[8:9] == b"{" else "not a safetensors file"
        raise ModelError(f"{path}: {kind}, not {what}")
    try:
        header = json.loads(data[8 : 8 + n])
        meta = header.get("__metadata__") or {}
        found = meta.get("format") if isinstance(meta, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError, AttributeError):
        raise ModelError(f"{path}: damaged header, not {what}") from None
    if found != fmt:
        raise ModelError(f"{path}: not {what} (format {found!r}, expected {fmt!r})")
    try:
        tensors = _st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as e:
        raise ModelError(f"{path}: damaged {what} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return meta, tensors


def _decode_field(path: Path, meta: dict[str, str], key: str, tensors: dict, what: str) -> Any:
    try:
        return decode_tree(json.loads(meta[key]), tensors)
    except (KeyError, ValueError, TypeError, RecursionError) as e:
        raise ModelError(f"{path}: damaged {what} ({key}: {e})") from None


# ------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, model: EmotionNet, **summary: Any) -> None:
    """Write ``model`` (config + weights) and a ``summary`` atomically; the weights keep their names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors = dict(weights)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "weights": json.dumps(list(weights)),
        "config": json.dumps(encode_tree(model.cfg.to_dict(), tensors, "config:")),
        "summary": json.dumps(encode_tree(summary, tensors, "summary:")),
    }
    _write(path, tensors, meta)


def read_checkpoint(path: str | Path) -> dict:
    """``{"format", "config", "state_dict", "summary"}`` of an edgeser checkpoint; anything else
    (a pickle, garbage, a truncated or empty file) is a one-line ``ModelError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such checkpoint")
    what = "an edgeser checkpoint"
    meta, tensors = _read(path, CHECKPOINT_FORMAT, what)
    names = _decode_field(path, meta, "weights", {}, what)
    config = _decode_field(path, meta, "config", tensors, what)
    summary = _decode_field(path, meta, "summary", tensors, what)
    if not (
        isinstance(names, list)
        and all(type(k) is str and k in tensors for k in names)
        and isinstance(config, dict)
        and isinstance(summary, dict)
    ):
        raise ModelError(f"{path}: damaged {what} (weights, config or summary malformed)")
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "state_dict": {k: tensors[k] for k in names},
        "summary": summary,
    }


def load_model(path: str | Path) -> EmotionNet:
    """Rebuild the network of a checkpoint, in eval mode, on the CPU."""
    ckpt = read_checkpoint(path)
    try:
        net = EmotionNet(ModelConfig.from_dict(ckpt["config"]))
        net.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: weights do not fit the model config ({first})") from None
    return net.eval()


# ---------------------------------------------------------------------------------- training state


def save_state(path: str | Path, state: dict) -> None:
    """Training state for resuming (atomic); round-trips exactly through :func:`load_state`."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = json.dumps(encode_tree(state, tensors))
    _write(path, tensors, {"format": STATE_FORMAT, "state": tree})


def load_state(path: str | Path) -> dict | None:
    """The state saved by :func:`save_state`, or None when there is none; an unreadable file is a
    one-line ``ModelError`` (naming it, and that ``--fresh`` starts over) rather than a silent restart
    that would overwrite it."""
    path = Path(path)
    if not path.exists():
        return None
    what = "an edgeser training state"
    try:
        meta, tensors = _read(path, STATE_FORMAT, what)
        state = _decode_field(path, meta, "state", tensors, what)
        if not isinstance(state, dict):
            raise ModelError(f"{path}: damaged {what} (not a dict)")
    except ModelError as e:
        raise ModelError(f"{e}; --fresh (resume=False) starts over") from None
    return state


def rng_state(rng: np.random.Generator) -> dict:
    """The random state a resumed run needs: numpy generator, torch CPU and (when present) all CUDA devices."""
    st = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def restore_rng_state(rng: np.random.Generator, st: dict) -> None:
    """Undo :func:`rng_state` (the CUDA part only where it was saved and CUDA is present)."""
    rng.bit_generator.state = st["numpy"]
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
