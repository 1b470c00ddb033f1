"""Checkpoints: one ``.pt`` file holds the model config (labels, audio settings), weights and a summary.

Training state for resuming (optimizer, epoch, RNG) lives in a sibling ``<out>.state`` file so the
model file itself stays small and final."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .model import EmotionNet, ModelConfig


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, model: EmotionNet, **summary: Any) -> None:
    """Write ``model`` (config + weights) and a JSON-able ``summary`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_save({"format": "edgeser-checkpoint-1", "config": model.cfg.to_dict(), "state_dict": state,
                  "summary": summary}, path)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ModelError(f"{path}: not a readable torch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "edgeser-checkpoint-1":
        raise ModelError(f"{path}: not an edgeser checkpoint")
    return ckpt


def load_model(path: str | Path) -> EmotionNet:
    """Rebuild the network of a checkpoint, in eval mode, on the CPU."""
    ckpt = read_checkpoint(path)
    net = EmotionNet(ModelConfig.from_dict(ckpt["config"]))
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


def save_state(path: str | Path, state: dict) -> None:
    """Training state for resuming (atomic)."""
    _atomic_save(state, Path(path))


def load_state(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


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
