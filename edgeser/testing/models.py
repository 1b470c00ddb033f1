"""Tiny models for tests and examples: seconds to build on a CPU, loadable and exportable like real ones.

``tiny_checkpoint`` trains a 16-channel EmotionNet for one epoch (by default on the eight bundled demo
clips); ``untrained_checkpoint`` writes a seeded, untrained one (for adaptation tests that only need a
source). Both need the ``[adapt]`` extra (torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..manifest import Clip

#: the tiny architecture: 16 channels, a 16-wide bottleneck, two dilated blocks
TINY: dict[str, Any] = {"channels": 16, "bottleneck": 16, "dilations": (1, 2)}


def demo_clip_list() -> list[Clip]:
    """The eight bundled demo clips (EmoDB, CC0), labelled."""
    from ..demo import demo_manifest
    from ..manifest import read_manifest

    return read_manifest(demo_manifest())


def tiny_checkpoint(
    out: str | Path,
    clips: Sequence[Clip] | None = None,
    epochs: int = 1,
    batch_size: int = 4,
    seed: int = 0,
    **model: Any,
) -> Path:
    """Train a tiny EmotionNet on ``clips`` (default: the demo clips, also used for validation) and write
    its checkpoint to ``out``; ``model`` overrides the :data:`TINY` architecture. Returns ``out``."""
    from ..adapt.train import TrainConfig, train

    clips = list(clips) if clips is not None else demo_clip_list()
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, model={**TINY, **model})
    train(clips, clips, out, cfg, progress=False, resume=False)
    return Path(out)


def untrained_checkpoint(out: str | Path, labels: Sequence[str], seed: int = 0, **summary: Any) -> Path:
    """Write a seeded, untrained tiny EmotionNet (eval mode) for ``labels`` to ``out``, with ``summary``
    (e.g. ``data=...``) in its checkpoint. Returns ``out``."""
    import torch

    from ..adapt.checkpoint import save_checkpoint
    from ..adapt.model import EmotionNet, ModelConfig

    torch.manual_seed(seed)
    net = EmotionNet(ModelConfig(labels=list(labels), **TINY))
    save_checkpoint(out, net.eval(), **summary)
    return Path(out)
