"""The LALM stand-in of the cross-corpus benchmark: a small MLP on handcrafted utterance-level acoustic
statistics, served behind the project's OpenAI-compatible loopback server and queried with the real
HTTP LALM client (``edgeser.adapt.teachers.LALMTeacher``).

No real large audio-language model is reachable from the benchmark machine, so MI-Fuse's LALM teacher
is played by a model that shares what matters with one -- it was trained on *other* data than the
source corpus and the target speakers, it is a different architecture from the student, and it
answers one label word per call, sampled -- and nothing else: it is much weaker than a real LALM.

Features (``FEATURE_NAMES``, 138 per clip, from 16 kHz audio; the clip is first DC-removed and
peak-normalised because the corpora's recording levels differ):

* 40-band log-mel (25 ms Hann window, 10 ms hop, 20 Hz - 8 kHz, HTK mel) over the *active* frames
  (frame energy within 35 dB of the clip's loudest frame): the mean spectral shape (each frame's
  log-mel minus its mean over bands), the standard deviation over time of each band, and the standard
  deviation of each band's frame-to-frame delta;
* frame energy (dB re the loudest frame): mean, std, 10/50/90th percentiles, std of its delta, the
  fraction of active frames;
* zero-crossing rate (mean, std) and log spectral centroid (mean, std) over active frames;
* a crude autocorrelation pitch track (40 ms frames, 60-500 Hz, voiced where the window-corrected
  normalised autocorrelation peak exceeds 0.5): voiced fraction of active frames, log-f0 in semitones
  re 100 Hz (mean, std, 10th and 90th percentiles, 10-90 range), mean |delta| between consecutive
  voiced frames.

Duration is deliberately not a feature (TurEV-DB's single words would make it a corpus detector).

Model: standardise (with the training corpus' statistics) -> Linear(138, 128) -> ReLU -> Dropout(0.3)
-> Linear(128, 64) -> ReLU -> Dropout(0.3) -> Linear(64, C_train), where ``C_train`` are the labels
present in its training corpus only: the stand-in trained on TurEV-DB has no neutral output and never
answers "neutral" (a biased teacher, as real LALMs are). Class-balanced cross-entropy, AdamW (lr 3e-3,
weight decay 1e-2), Gaussian input noise (0.2 std), 400 full-batch steps, seed 0, on every clip of its
training corpus. Its answer to a request with temperature ``T`` is ``n`` words drawn from
``softmax(logits / T)`` (argmax at ``T = 0``), with a random generator seeded by the audio and the
number of samples already drawn for it, so a fresh run gets the same answers.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import scipy.fft
import torch
from torch import nn

from edgeser.audio import load_audio

SR = 16000
N_MELS = 40
WIN, HOP, NFFT = 400, 160, 512
PITCH_WIN = 640
F0_MIN, F0_MAX = 60.0, 500.0
ACTIVE_DB = 35.0
VOICED_THRESHOLD = 0.5
FEATURE_VERSION = "standin-features-2"

FEATURE_NAMES = (
    [f"mel_shape_mean_{i}" for i in range(N_MELS)]
    + [f"mel_std_{i}" for i in range(N_MELS)]
    + [f"mel_delta_std_{i}" for i in range(N_MELS)]
    + [
        "energy_mean",
        "energy_std",
        "energy_p10",
        "energy_p50",
        "energy_p90",
        "energy_delta_std",
        "active_fraction",
        "zcr_mean",
        "zcr_std",
        "log_centroid_mean",
        "log_centroid_std",
        "voiced_fraction",
        "f0_st_mean",
        "f0_st_std",
        "f0_st_p10",
        "f0_st_p90",
        "f0_st_range",
        "f0_st_delta_abs",
    ]
)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def _mel_filterbank() -> np.ndarray:
    """``[N_MELS, NFFT // 2 + 1]`` triangular HTK-mel filters, 20 Hz - 8 kHz."""
    freqs = np.linspace(0, SR / 2, NFFT // 2 + 1)
    pts = _mel_to_hz(np.linspace(_hz_to_mel(20.0), _hz_to_mel(SR / 2), N_MELS + 2))
    fb = np.zeros((N_MELS, len(freqs)))
    for i in range(N_MELS):
        lo, mid, hi = pts[i], pts[i + 1], pts[i + 2]
        fb[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
    return fb


_FB = _mel_filterbank().astype(np.float32)
_HANN = np.hanning(WIN).astype(np.float32)
_PHANN = np.hanning(PITCH_WIN)
_PHANN32 = _PHANN.astype(np.float32)
# autocorrelation of the pitch window: dividing by it undoes the taper's decay with lag
_PHANN_AC = np.correlate(_PHANN, _PHANN, "full")[PITCH_WIN - 1 :]
_LAG_MIN, _LAG_MAX = int(SR / F0_MAX), int(SR / F0_MIN)
_PHANN_NORM = (_PHANN_AC / _PHANN_AC[0])[_LAG_MIN : _LAG_MAX + 1]


def _frames(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    n = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    return x[idx]


def features(audio: np.ndarray) -> np.ndarray:
    """138 utterance-level statistics of 16 kHz mono ``audio`` (see the module docstring), float32."""
    x = np.asarray(audio, np.float32)
    x = x - x.mean()
    x = (x / (np.abs(x).max() + 1e-9)).astype(np.float32)
    fr = _frames(x, WIN, HOP)
    power = np.abs(scipy.fft.rfft(fr * _HANN, NFFT)) ** 2
    logmel = 10.0 * np.log10(power @ _FB.T + 1e-10)
    energy = 10.0 * np.log10((fr**2).mean(axis=1) + 1e-12)
    energy = energy - energy.max()
    active = energy > -ACTIVE_DB
    if active.sum() < 3:
        active = energy >= np.sort(energy)[-min(3, len(energy))]
    lm = logmel[active]
    shape = lm - lm.mean(axis=1, keepdims=True)
    pair = active[1:] & active[:-1]
    delta = np.diff(logmel, axis=0)[pair] if pair.any() else np.zeros((1, N_MELS))
    e = energy[active]
    zc = (np.abs(np.diff(np.sign(fr), axis=1)) > 0).mean(axis=1)[active]
    freqs = np.linspace(0, SR / 2, NFFT // 2 + 1)
    centroid = np.log((power[active] * freqs).sum(axis=1) / (power[active].sum(axis=1) + 1e-12) + 1.0)

    # pitch: 40 ms frames on the same 10 ms grid (padded so that frame i is centred like the mel frame i)
    pad = (PITCH_WIN - WIN) // 2
    pf = _frames(np.pad(x, (pad, pad)), PITCH_WIN, HOP)[: len(fr)][active]
    pf = (pf - pf.mean(axis=1, keepdims=True)) * _PHANN32
    spec = scipy.fft.rfft(pf, 2 * PITCH_WIN)
    ac = scipy.fft.irfft(np.abs(spec) ** 2, 2 * PITCH_WIN)[:, : _LAG_MAX + 1]
    seg = ac[:, _LAG_MIN : _LAG_MAX + 1] / (ac[:, :1] + 1e-12) / _PHANN_NORM
    lag = seg.argmax(axis=1) + _LAG_MIN
    peak = seg.max(axis=1)
    voiced = peak > VOICED_THRESHOLD
    f0 = SR / lag[voiced]
    st = 12.0 * np.log2(f0 / 100.0) if len(f0) else np.zeros(1)
    v_idx = np.flatnonzero(voiced)
    dst = np.abs(np.diff(st))[np.diff(v_idx) == 1] if len(f0) > 1 else np.zeros(0)
    p10, p90 = np.percentile(st, [10, 90])
    out = np.concatenate(
        [
            shape.mean(axis=0),
            lm.std(axis=0),
            delta.std(axis=0),
            [
                e.mean(),
                e.std(),
                *np.percentile(e, [10, 50, 90]),
                np.diff(energy).std() if len(energy) > 1 else 0.0,
                active.mean(),
                zc.mean(),
                zc.std(),
                centroid.mean(),
                centroid.std(),
                voiced.mean(),
                st.mean(),
                st.std(),
                p10,
                p90,
                p90 - p10,
                dst.mean() if len(dst) else 0.0,
            ],
        ]
    )
    return np.nan_to_num(out).astype(np.float32)


def clip_features(clips: Sequence, cache: Path | None = None) -> np.ndarray:
    """``[N, 138]`` features of clips (decoded with ``edgeser.audio.load_audio``), cached in an ``.npz``
    keyed by the clip paths and the feature version."""
    key = hashlib.sha1((FEATURE_VERSION + "\0" + "\0".join(str(c.path) for c in clips)).encode()).hexdigest()
    if cache is not None and cache.exists():
        z = np.load(cache)
        if str(z["key"]) == key:
            return z["x"]
    x = np.stack([features(load_audio(c.path, SR)) for c in clips])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, x=x, key=np.array(key))
        tmp.replace(cache)
    return x


@dataclass
class StandIn:
    """A trained stand-in: standardisation, MLP weights, its label words."""

    labels: list[str]
    mean: np.ndarray
    std: np.ndarray
    net: nn.Module
    trained_on: str
    train_ua: float

    def logits(self, feats: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(feats) - self.mean) / self.std
        with torch.no_grad():
            return self.net(torch.from_numpy(z.astype(np.float32))).double().numpy()

    @property
    def model_name(self) -> str:
        """The model name it is served and cached under: corpus + a hash of its weights."""
        h = hashlib.sha1()
        for v in self.net.state_dict().values():
            h.update(v.numpy().tobytes())
        h.update(self.mean.tobytes() + self.std.tobytes() + json.dumps(self.labels).encode())
        return f"standin-mlp-{self.trained_on}-{h.hexdigest()[:8]}"

    def describe(self) -> dict:
        return {
            "model_name": self.model_name,
            "trained_on": self.trained_on,
            "labels": self.labels,
            "features": len(self.mean),
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "train_ua": self.train_ua,
        }


def _mlp(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, 128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(64, n_out),
    )


def train_standin(
    feats: np.ndarray,
    y_words: Sequence[str],
    trained_on: str,
    steps: int = 200,
    seed: int = 0,
    noise: float = 0.5,
    weight_decay: float = 0.1,
    label_smoothing: float = 0.2,
) -> StandIn:
    """Fit the stand-in MLP on features ``[N, D]`` and label words (its outputs: the labels present)."""
    labels = sorted(set(y_words))
    y = torch.tensor([labels.index(w) for w in y_words])
    mean = feats.mean(axis=0).astype(np.float64)
    std = feats.std(axis=0).astype(np.float64) + 1e-6
    x = torch.from_numpy(((feats - mean) / std).astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = _mlp(x.shape[1], len(labels))
    counts = torch.bincount(y, minlength=len(labels)).float()
    w = counts.sum() / (len(labels) * counts)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=weight_decay)
    net.train()
    for _ in range(steps):
        xb = x + noise * torch.randn(x.shape, generator=gen)
        loss = nn.functional.cross_entropy(net(xb), y, weight=w, label_smoothing=label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x).argmax(dim=1).numpy()
    yy = y.numpy()
    train_ua = float(np.mean([(pred[yy == c] == c).mean() for c in range(len(labels))]))
    return StandIn(labels, mean, std, net, trained_on, train_ua)


def save_standin(s: StandIn, path: Path) -> None:
    """Write the stand-in as safetensors (weights, mean, std; the rest in its JSON metadata): no pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in s.net.state_dict().items()}
    tensors.update(
        mean=torch.from_numpy(np.ascontiguousarray(s.mean)), std=torch.from_numpy(np.ascontiguousarray(s.std))
    )
    meta = {
        "version": FEATURE_VERSION,
        "labels": json.dumps(s.labels),
        "trained_on": s.trained_on,
        "train_ua": json.dumps(s.train_ua),
    }
    tmp = path.with_name(path.name + ".tmp")
    safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_standin(path: Path) -> StandIn | None:
    """The stand-in saved by :func:`save_standin`; None (retrain) when there is none, it is of another
    feature version, or it is not such a safetensors file (an old pickled one is never unpickled)."""
    if not path.exists():
        return None
    try:
        with safetensors.safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("version") != FEATURE_VERSION:
                return None
            t = {k: f.get_tensor(k) for k in f.keys()}
        labels, train_ua = json.loads(meta["labels"]), json.loads(meta["train_ua"])
        mean, std = t.pop("mean").numpy(), t.pop("std").numpy()
        net = _mlp(len(mean), len(labels))
        net.load_state_dict({k.removeprefix("net."): v for k, v in t.items()})
    except (safetensors.SafetensorError, OSError, KeyError, ValueError, RuntimeError):
        return None
    return StandIn(labels, mean, std, net.eval(), meta["trained_on"], train_ua)


def make_answer(standin: StandIn):
    """``answer(audio, prompt, temperature, n)`` for :func:`edgeser.testing.openai_server.serve`."""
    lock = threading.Lock()
    drawn: dict[str, int] = {}

    def answer(audio: np.ndarray, prompt: str, temperature: float, n: int) -> list[str]:
        z = standin.logits(features(audio))[0]
        if temperature <= 0:
            return [standin.labels[int(z.argmax())]] * n
        digest = hashlib.sha1(np.ascontiguousarray(audio, np.float32).tobytes()).hexdigest()
        with lock:
            start = drawn.get(digest, 0)
            drawn[digest] = start + n
        rng = np.random.default_rng([int(digest[:15], 16), int(round(temperature * 1000)), start])
        p = np.exp((z - z.max()) / temperature)
        p /= p.sum()
        return [standin.labels[i] for i in rng.choice(len(p), size=n, p=p)]

    return answer
