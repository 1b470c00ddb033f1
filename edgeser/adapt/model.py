"""The student: raw 16 kHz waveform -> log-mel -> frame encoder -> stats pooling -> bottleneck -> logits.

The encoder uses only "valid" (unpadded) convolutions, so each embedding depends on exactly
``cfg.receptive_field`` samples and consecutive embeddings are ``cfg.embedding_stride`` samples
apart. That is what makes streaming exact: new audio is encoded once, the embeddings of earlier
audio are kept, and the head pools over the window's embeddings (see ``StreamingGraph``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .frontend import LogMel
from .norm import FrameBatchNorm


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; stored in checkpoints and (in part) ONNX metadata."""

    labels: list[str]
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 8000.0
    channels: int = 128
    dilations: tuple[int, ...] = (1, 2, 4, 1, 2)
    stem_stride: int = 2
    bottleneck: int = 128
    dropout: float = 0.3
    encoder_dropout: float = 0.1
    #: SpecAugment while training (0 = off): up to this many mel bins / frames masked, twice each
    freq_mask: int = 8
    time_mask: int = 20
    #: batch norm statistics in training from real frames only, not a batch's zero padding (``edgeser.adapt.norm``)
    masked_norm: bool = True
    #: recommended streaming window and hop (seconds); hop is rounded to the embedding stride
    window_s: float = 2.0
    hop_s: float = 0.5
    extra: dict = field(default_factory=dict)

    @property
    def receptive_field(self) -> int:
        """Samples that one embedding depends on."""
        frames = 3 + self.stem_stride * 2 * sum(self.dilations)
        return self.n_fft + (frames - 1) * self.hop_length

    @property
    def embedding_stride(self) -> int:
        """Samples between consecutive embeddings."""
        return self.hop_length * self.stem_stride

    def n_frames(self, n_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Number of log-mel frames of ``n_samples`` samples (valid framing; <= 0 means too short)."""
        return (n_samples - self.n_fft) // self.hop_length + 1

    def n_embeddings(self, n_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Number of embeddings produced from ``n_samples`` samples (<= 0 means too short)."""
        return (self.n_frames(n_samples) - 3) // self.stem_stride + 1 - 2 * sum(self.dilations)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """A stored config. One without ``masked_norm`` was trained before it existed, with the padding in its
        batch-norm statistics: fine-tuning it keeps those statistics."""
        d = dict(d)
        d["dilations"] = tuple(d.get("dilations", (1, 2, 4, 1, 2)))
        d.setdefault("masked_norm", False)
        return cls(**d)


class _Block(nn.Module):
    """Dilated valid conv + BN + ReLU with a centre-cropped residual."""

    def __init__(self, channels: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation, bias=False)
        self.bn = FrameBatchNorm(channels)
        self.drop = nn.Dropout1d(dropout)
        self.crop = dilation

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` ``[B, T_out]``: the output frames computed from real samples only (batch-norm statistics)."""
        return x[:, :, self.crop : x.shape[2] - self.crop] + self.drop(torch.relu(self.bn(self.conv(x), mask)))


def _spec_augment(x: torch.Tensor, freq: int, time: int, n: int = 2) -> torch.Tensor:
    """Zero two random bands of mel bins and of frames per example (SpecAugment; training only)."""
    b, m, t = x.shape
    keep = torch.ones_like(x)
    for size, axis, length in ((freq, 1, m), (time, 2, t)):
        for _ in range(n if size else 0):
            w = torch.randint(0, size + 1, (b, 1), device=x.device)
            s = (torch.rand(b, 1, device=x.device) * (length - w).clamp_min(1)).long()
            pos = torch.arange(length, device=x.device)[None, :]
            band = ((pos >= s) & (pos < s + w)).to(x.dtype)
            keep = keep * (1 - (band[:, :, None] if axis == 1 else band[:, None, :]))
    return x * keep


class EmotionNet(nn.Module):
    """Compact CNN over log-mel frames; see the module docstring. Under 1 M parameters by default."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.frontend = LogMel(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.f_min, cfg.f_max)
        self.input_norm = FrameBatchNorm(cfg.n_mels)
        c = cfg.channels
        self.stem = nn.Sequential(
            nn.Conv1d(cfg.n_mels, c, 3, stride=cfg.stem_stride, bias=False), FrameBatchNorm(c), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[_Block(c, d, cfg.encoder_dropout) for d in cfg.dilations])
        self.pool_dropout = nn.Dropout(cfg.dropout)
        self.bottleneck_layer = nn.Sequential(
            nn.Linear(2 * c, cfg.bottleneck), nn.BatchNorm1d(cfg.bottleneck), nn.ReLU()
        )
        self.head_dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.bottleneck, len(cfg.labels))

    @property
    def labels(self) -> list[str]:
        return list(self.cfg.labels)

    def embed(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` waveform -> ``[B, C, F]`` frame embeddings. ``lengths`` (samples; training only, with
        ``cfg.masked_norm``) keeps the zero padding out of the batch-norm statistics."""
        x = self.frontend(wav)
        mask = None
        # (a batch whose every clip is shorter than one embedding's receptive field keeps the padding in)
        if (
            lengths is not None
            and self.training
            and self.cfg.masked_norm
            and bool((self.cfg.n_embeddings(lengths) > 0).any())
        ):
            valid = self.cfg.n_frames(lengths.to(x.device))
            mask = torch.arange(x.shape[2], device=x.device)[None, :] < valid[:, None]
        x = self.input_norm(x, mask)
        if self.training and (self.cfg.freq_mask or self.cfg.time_mask):
            x = _spec_augment(x, self.cfg.freq_mask, self.cfg.time_mask)
        conv, norm, act = self.stem
        # an output frame is real when its last input frame is: conv k=3, stride s -> frames 2, 2 + s, ...
        mask = None if mask is None else mask[:, 2 :: self.cfg.stem_stride]
        x = act(norm(conv(x), mask))
        for blk in self.blocks:
            mask = None if mask is None else mask[:, 2 * blk.crop :]
            x = blk(x, mask)
        return x

    @staticmethod
    def pool(emb: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean and standard deviation over frames -> ``[B, 2C]``; ``mask`` ``[B, F]`` marks valid frames."""
        if mask is None:
            mean = emb.mean(dim=2)
            var = ((emb - mean.unsqueeze(2)) ** 2).mean(dim=2)
        else:
            m = mask.unsqueeze(1).to(emb.dtype)
            n = m.sum(dim=2).clamp_min(1.0)
            mean = (emb * m).sum(dim=2) / n
            var = (((emb - mean.unsqueeze(2)) ** 2) * m).sum(dim=2) / n
        return torch.cat([mean, torch.sqrt(var + 1e-5)], dim=1)

    def bottleneck(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled statistics -> bottleneck features (the "features" SHOT and NRC work on)."""
        return self.bottleneck_layer(self.pool_dropout(pooled))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Bottleneck features -> logits."""
        return self.classifier(self.head_dropout(features))

    def frame_mask(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        """``[B, F]`` mask of the embeddings that see only real (unpadded) samples."""
        valid = self.cfg.n_embeddings(lengths).clamp_min(1)
        return torch.arange(n_frames, device=lengths.device)[None, :] < valid[:, None]

    def features(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(wav, lengths)
        mask = None if lengths is None else self.frame_mask(lengths, emb.shape[2])
        return self.bottleneck(self.pool(emb, mask))

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` waveform (zero-padded to the longest, with ``lengths``) -> ``[B, n_classes]`` logits."""
        return self.head(self.features(wav, lengths))

    def classify_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits from a window of embeddings (the streaming head)."""
        return self.head(self.bottleneck(self.pool(emb)))


class StreamingGraph(nn.Module):
    """The exported graph: ``(audio [B,T], cache [B,C,F0]) -> (logits [B,n], embeddings [B,C,F1])``.

    The logits are those of the window made of the cached embeddings followed by the new ones;
    ``F0 = 0`` gives the whole-clip model."""

    def __init__(self, net: EmotionNet):
        super().__init__()
        self.net = net

    def forward(self, audio: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.net.embed(audio)
        return self.net.classify_embeddings(torch.cat([cache, emb], dim=2)), emb


@dataclass(frozen=True)
class IncrementalSizes:
    """Fixed state sizes of the incremental graph (``edgeser.adapt.incremental``) for a config."""

    block: int  #: audio is fed in multiples of this many samples (the embedding stride)
    audio: int  #: samples of audio context carried between calls
    mel: int  #: (normalised) log-mel frames carried for the stem
    convs: tuple[int, ...]  #: inputs carried for each dilated block (2 * dilation)
    warmup: int  #: outputs after a zero state that depend on the fake state (drop them)
    tail: int  #: samples past a block boundary that complete one more embedding (1..block)

    @property
    def conv(self) -> int:
        """Frames of the packed ``conv_state`` (all blocks' contexts side by side)."""
        return sum(self.convs)


def incremental_sizes(cfg: ModelConfig) -> IncrementalSizes:
    """Left-context sizes that make each call encode only new audio, for calls fed at block boundaries.

    With ``c = ceil(n_fft / hop)`` the next frame to compute starts ``hop * (c - 1)`` samples before a
    block boundary; the next stem output needs ``s * ceil((c + 2) / s) - s - c + 1`` earlier frames
    (``s`` = stem stride); a k3 block with dilation ``d`` needs its last ``2d`` inputs. Each layer's
    context delays the outputs: output ``m`` of a stream started from a zero state is the whole-clip
    embedding ``m - warmup``."""
    h, s, n_fft = cfg.hop_length, cfg.stem_stride, cfg.n_fft
    c = -(-n_fft // h)
    stem_delay = -(-(c + 2) // s) - 1
    convs = tuple(2 * d for d in cfg.dilations)
    warmup = stem_delay + sum(convs)
    block = cfg.embedding_stride
    return IncrementalSizes(
        block=block,
        audio=h * (c - 1),
        mel=s * stem_delay - c + 1,
        convs=convs,
        warmup=warmup,
        tail=cfg.receptive_field - block * warmup,
    )


def min_samples(cfg: ModelConfig) -> int:
    """Shortest input that yields one embedding (shorter audio is zero-padded to this)."""
    return cfg.receptive_field


@contextlib.contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode with dropout switched on (batch norm stays frozen): for MC-dropout sampling."""
    was_training = model.training
    model.eval()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout1d)):
            m.train()
    try:
        yield model
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
