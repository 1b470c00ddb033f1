"""The incremental streaming graph: each call encodes only new audio, every convolution keeping its own
left context as state (sizes and warmup: ``model.incremental_sizes``).

Written for ONNX Runtime on one CPU thread, where a call of a small graph costs about as much in
per-operator overhead and weight traffic as in arithmetic: layers are time-major matrix products
(taps gathered by slicing, batch norm folded in), and the log-mel frontend computes its 400-point DFT
in two small factored stages (Cooley-Tukey, ``n_fft = n1 * n2``) instead of one 400 x 402 product.
It computes what ``EmotionNet`` computes, up to float rounding (checked in tests/test_incremental.py)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .model import EmotionNet, incremental_sizes


def _divisor_near_sqrt(n: int) -> int:
    """The divisor of ``n`` closest to its square root (1 when ``n`` is prime)."""
    best = 1
    for d in range(1, int(n**0.5) + 1):
        if n % d == 0:
            best = d
    return best


def factored_dft(n_fft: int, n_bins: int) -> dict[str, np.ndarray] | None:
    """Matrices of a two-stage real-input DFT of size ``n_fft = n1 * n2`` keeping bins ``[0, n_bins)``.

    A frame ``x`` (Hann-windowed), viewed as ``[n1, n2]`` (sample ``n2 * a + b``), gives
    ``A = stage1 @ x`` (``[2 n1, n2]``: real rows then imaginary rows over ``k1``), the twiddled
    ``T = A * W_N^(b k1)`` (``cos``/``sin`` ``[n1, n2]``) and ``[Tr | Ti] @ stage2`` (``[n1, 2 K2]``: real
    then imaginary over ``k2``); bin ``k1 + n1 * k2`` sits at row ``k1``, column ``k2`` (``order``).
    ``None`` when ``n_fft`` has no useful factorisation."""
    n1 = _divisor_near_sqrt(n_fft)
    if n1 < 4:
        return None
    n2 = n_fft // n1
    k2 = np.arange((n_bins - 1) // n1 + 1)
    a = np.arange(n1)
    ang1 = 2 * np.pi * np.outer(a, a) / n1
    tw = 2 * np.pi * np.outer(a, np.arange(n2)) / n_fft
    ang2 = 2 * np.pi * np.outer(np.arange(n2), k2) / n2
    c, s = np.cos(ang2), np.sin(ang2)
    n = np.arange(n_fft)
    return {
        "window": (0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)).astype(np.float32),
        "stage1": np.concatenate([np.cos(ang1), -np.sin(ang1)]).astype(np.float32),
        "twiddle_cos": np.cos(tw).astype(np.float32),
        "twiddle_sin": np.sin(tw).astype(np.float32),
        "stage2": np.block([[c, -s], [s, c]]).astype(np.float32),
        "order": (a[:, None] + n1 * k2[None, :]).reshape(-1),
    }


def _fold(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv (no bias) + eval batch norm -> ``(W [K*Cin, Cout], b [Cout])`` for tap-major gathered inputs."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * scale[:, None, None]
    return w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous(), bn.bias - bn.running_mean * scale


class IncrementalGraph(nn.Module):
    """``(audio [B,T], audio_state [B,A], mel_state [B,M,n_mels], conv_state [B,S,C], cache [B,C,F0])
    -> (logits [B,n], embeddings [B,C,F1], audio_state', mel_state', conv_state')``.

    Fed ``k * block`` samples per call from a zero state, the calls return one embedding per block;
    output ``m`` is the whole-clip model's embedding ``m - warmup``; the logits pool ``cat(cache,
    embeddings)``. A caller drops the warmup outputs, running them in a call of their own so that no
    logits pool them. A whole clip of any length ``T >= receptive_field``: one call of the first
    ``warmup * block`` samples from a zero state, then one call of the rest with its states (the states
    after a call whose ``T`` is not a multiple of ``block`` are misaligned: end there).

    The weights are copied (batch norms folded) at construction and the graph is for inference only."""

    def __init__(self, net: EmotionNet):
        super().__init__()
        cfg = net.cfg
        self.cfg, self.sizes = cfg, incremental_sizes(cfg)
        self.floor = net.frontend.floor
        mel = net.frontend.mel.detach().numpy()  # [n_mels, n_bins]
        n_bins = mel.shape[1]
        fft = factored_dft(cfg.n_fft, n_bins)
        with torch.no_grad():
            # the input norm (an affine map of each mel bin) folded into the stem, a valid conv: no padding
            bn = net.input_norm
            in_scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            in_shift = bn.bias - bn.running_mean * in_scale
            w, b = _fold(net.stem[0], net.stem[1])  # rows tap-major: (tap, mel bin)
            self.register_buffer("stem_w", (w * in_scale.repeat(3)[:, None]).contiguous())
            self.register_buffer("stem_b", (b + in_shift.repeat(3) @ w).clone())
            for i, blk in enumerate(net.blocks):
                w, b = _fold(blk.conv, blk.bn)
                self.register_buffer(f"block{i}_w", w)
                self.register_buffer(f"block{i}_b", b.clone())
        self.n1 = 0
        if fft is None:  # one product with the DFT kernels (window folded in)
            self.register_buffer("dft", net.frontend.kernels[:, 0].T.contiguous().clone())  # [n_fft, 2 n_bins]
            mel_rows = mel.T
        else:
            self.n1, self.n2, self.k2 = (
                len(fft["stage1"]) // 2,
                cfg.n_fft // (len(fft["stage1"]) // 2),
                fft["stage2"].shape[1] // 2,
            )
            for k in ("window", "stage1", "twiddle_cos", "twiddle_sin", "stage2"):
                self.register_buffer(k, torch.from_numpy(fft[k]))
            mel_rows = np.zeros((len(fft["order"]), mel.shape[0]), np.float32)
            ok = fft["order"] < n_bins
            mel_rows[ok] = mel.T[fft["order"][ok]]
        self.register_buffer("mel", torch.from_numpy(np.ascontiguousarray(mel_rows, np.float32)))
        # the head: copies of the net's layers (the exporter folds the batch norm into the first Gemm)
        self.bottleneck = copy.deepcopy(net.bottleneck_layer).eval()
        self.classifier = copy.deepcopy(net.classifier).eval()

    def initial_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Zero states (``audio_state, mel_state, conv_state``) for a stream's start."""
        z, cfg = self.sizes, self.cfg
        return (
            torch.zeros(batch, z.audio),
            torch.zeros(batch, z.mel, cfg.n_mels),
            torch.zeros(batch, z.conv, cfg.channels),
        )

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, F, n_fft]`` frames ``hop`` apart (valid framing), built from hop-sized chunks."""
        hop, n_fft = self.cfg.hop_length, self.cfg.n_fft
        q, rem = divmod(n_fft, hop)
        span = q + (rem > 0)  # chunks a frame touches; f frames need f + span - 1 chunks
        if rem:  # the last frame's partial chunk, made whole
            x = nn.functional.pad(x, (0, hop - rem))
        chunks = x[:, : x.shape[1] // hop * hop].unflatten(1, (-1, hop))
        # chunk j of every frame: bounds counted from the ends, so that no length is computed in the graph
        parts = [chunks[:, j : j - span + 1 if j < span - 1 else None] for j in range(span)]
        if rem:
            parts[-1] = parts[-1][:, :, :rem]
        return torch.cat(parts, dim=2)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> log-mel ``[B, F, n_mels]`` (the net's frontend; its input norm is folded into the stem)."""
        frames = self._frames(x)
        if not self.n1:
            spec = frames @ self.dft
            half = spec.shape[2] // 2
            power = spec[:, :, :half] * spec[:, :, :half] + spec[:, :, half:] * spec[:, :, half:]
        else:
            a = self.stage1 @ (frames * self.window).unflatten(2, (self.n1, self.n2))
            re, im = a[:, :, : self.n1], a[:, :, self.n1 :]
            tr = re * self.twiddle_cos + im * self.twiddle_sin
            ti = im * self.twiddle_cos - re * self.twiddle_sin
            y = torch.cat([tr, ti], dim=3) @ self.stage2
            k2 = self.k2
            power = (y[..., :k2] * y[..., :k2] + y[..., k2:] * y[..., k2:]).flatten(2)
        return torch.log(power @ self.mel + self.floor)

    def encode(
        self, audio: torch.Tensor, audio_state: torch.Tensor, mel_state: torch.Tensor, conv_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """New embeddings ``[B, C, F1]`` and the next states (no head)."""
        z, s = self.sizes, self.cfg.stem_stride
        x = torch.cat([audio_state, audio], dim=1)
        mel = torch.cat([mel_state, self.log_mel(x)], dim=1)
        # tap j of a valid k3 conv of stride s: every s-th frame from j to the (2 - j)-th from the end
        taps = [mel[:, j : j - 2 if j < 2 else None : s] for j in range(3)]
        h = torch.relu(torch.cat(taps, dim=2) @ self.stem_w + self.stem_b)
        outs, start = [], 0
        for i, (d, size) in enumerate(zip(self.cfg.dilations, z.convs)):
            h = torch.cat([conv_state[:, start : start + size], h], dim=1)
            outs.append(h[:, -size:])
            gathered = torch.cat([h[:, : -2 * d], h[:, d:-d], h[:, 2 * d :]], dim=2)
            h = h[:, d:-d] + torch.relu(gathered @ getattr(self, f"block{i}_w") + getattr(self, f"block{i}_b"))
            start += size
        return h.transpose(1, 2), x[:, -z.audio :], mel[:, -z.mel :], torch.cat(outs, dim=1)

    def head(self, window: torch.Tensor) -> torch.Tensor:
        """Logits of a window of embeddings ``[B, C, F]`` (``EmotionNet.classify_embeddings``)."""
        mean = window.mean(dim=2)
        d = window - mean.unsqueeze(2)
        pooled = torch.cat([mean, torch.sqrt((d * d).mean(dim=2) + 1e-5)], dim=1)
        return self.classifier(self.bottleneck(pooled))

    def forward(
        self,
        audio: torch.Tensor,
        audio_state: torch.Tensor,
        mel_state: torch.Tensor,
        conv_state: torch.Tensor,
        cache: torch.Tensor,
    ):
        emb, audio_out, mel_out, conv_out = self.encode(audio, audio_state, mel_state, conv_state)
        return self.head(torch.cat([cache, emb], dim=2)), emb, audio_out, mel_out, conv_out
