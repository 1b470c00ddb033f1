"""LALM stand-ins of controlled quality for the regime benchmark (issue 8).

Real audio LLMs behind OpenAI-compatible servers are usually far better than a small source model on a
new domain, and they fail in their own ways. The acoustic stand-in (``standin.py``) is weaker than the
source, so it cannot show how MI-Fuse behaves next to a strong teacher. These stand-ins are built from
the visible corpora's labels instead, with mistakes that are *systematic*, as a real LALM's are:

* every clip is *perceived* once as one class (the true one with probability ``accuracy``, otherwise a
  confusion drawn from a fixed per-class confusion row, a share ``bias_share`` of the errors going to
  ``bias_class``; the "deaf" stand-in perceives every class alike); the same clip gets the same perception on
  every call and every run;
* each sampled answer names the perceived class with probability ``vote_purity``, otherwise another
  label at random; with probability ``out_of_set`` the answer is a word outside the label set
  ("calm", "frustrated", ...);
* a share ``no_answer`` of the clips is never answered usably (a refusal sentence on every call).

The served answer function recognises a clip by the 16-bit PCM the HTTP client sends
(:func:`audio_key`), so it needs the clips' labels up front (:func:`regime_answer`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: answers a real LALM gives that name no label of the set (the parser leaves them unparsed)
OUT_OF_SET_WORDS = ("calm", "frustrated", "bored", "surprised", "confused")
REFUSAL = "I cannot determine the speaker's emotion from this recording."


@dataclass(frozen=True)
class Regime:
    """One simulated LALM quality (see the module docstring)."""

    name: str
    #: share of clips perceived as their true class; None: a deaf LALM, whose perception does not depend on the
    #: clip's class (uniform over the classes, ``bias_share`` of it on ``bias_class``)
    accuracy: float | None
    vote_purity: float = 0.8
    bias_class: str | None = "neutral"
    bias_share: float = 0.4
    out_of_set: float = 0.1
    no_answer: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


#: zero-shot quality from weak to oracle; the audit's simulated LALMs scored 0.50 / 0.57 / 0.77 / 1.00 UA
REGIMES: dict[str, Regime] = {
    "weak": Regime("weak", accuracy=0.5),
    "mid": Regime("mid", accuracy=0.62),
    "strong": Regime("strong", accuracy=0.82),
    "oracle": Regime(
        "oracle", accuracy=1.0, vote_purity=1.0, bias_class=None, bias_share=0.0, out_of_set=0.0, no_answer=0.0
    ),
    # an endpoint that answers without hearing the audio (a text-only model, a broken audio path): what a user can
    # configure by mistake, and what the reliability estimate and its warning are for
    "deaf": Regime("deaf", accuracy=None),
}


def audio_key(pcm: np.ndarray) -> str:
    """Identity of a clip: SHA-1 of the 16-bit PCM that crosses HTTP (:func:`client_pcm` on the client's
    side, :func:`server_pcm` on the server's; both give the same samples)."""
    return hashlib.sha1(np.ascontiguousarray(pcm, dtype="<i2").tobytes()).hexdigest()


def client_pcm(audio: np.ndarray) -> np.ndarray:
    """The int16 samples the HTTP client sends for float audio (as ``edgeser``'s ``wav_bytes``)."""
    return np.round(np.clip(np.asarray(audio, np.float64), -1.0, 1.0) * 32767.0).astype("<i2")


def server_pcm(audio: np.ndarray) -> np.ndarray:
    """The int16 samples behind the float audio the loopback server decoded (``pcm / 32768``)."""
    return np.round(np.asarray(audio, np.float64) * 32768.0).astype("<i2")


def confusion_rows(labels: Sequence[str], regime: Regime, seed: int = 0) -> np.ndarray:
    """``[C, C]`` rows: where a clip of each true class is perceived. The diagonal is ``accuracy``; the
    error mass goes ``bias_share`` to the bias class (when it is another class) and the rest over the
    other classes with Dirichlet(1) weights fixed by ``seed``: some confusions dominate, as in real models."""
    c = len(labels)
    rng = np.random.default_rng([seed, 8])
    bias = labels.index(regime.bias_class) if regime.bias_class in labels else None
    if regime.accuracy is None:  # deaf: every true class is perceived the same way
        row = np.full(c, (1.0 - regime.bias_share) / c if bias is not None else 1.0 / c)
        if bias is not None:
            row[bias] += regime.bias_share
        return np.tile(row, (c, 1))
    rows = np.zeros((c, c))
    for t in range(c):
        others = [j for j in range(c) if j != t]
        err = 1.0 - regime.accuracy
        if bias is not None and bias != t:
            rows[t, bias] += err * regime.bias_share
            err *= 1.0 - regime.bias_share
        rows[t, others] += err * rng.dirichlet(np.ones(len(others)))
        rows[t, t] += regime.accuracy
    return rows


def perceived_classes(
    y: np.ndarray, keys: Sequence[str], labels: Sequence[str], regime: Regime, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(perceived class [N], refused [N] bool)`` per clip, each drawn once from a generator seeded by the
    clip's key, so that a clip's mistake does not depend on which other clips are asked."""
    rows = confusion_rows(labels, regime, seed)
    perceived = np.empty(len(y), np.int64)
    refused = np.zeros(len(y), bool)
    for i, (t, key) in enumerate(zip(y, keys)):
        rng = np.random.default_rng([seed, int(key[:15], 16)])
        perceived[i] = rng.choice(len(labels), p=rows[t])
        refused[i] = rng.random() < regime.no_answer
    return perceived, refused


def sample_answers(
    perceived: int, refused: bool, labels: Sequence[str], regime: Regime, n: int, rng: np.random.Generator
) -> list[str]:
    """``n`` answer words for one clip."""
    if refused:
        return [REFUSAL] * n
    out = []
    for _ in range(n):
        if rng.random() < regime.vote_purity:
            word = labels[perceived]
        else:
            word = labels[rng.choice([j for j in range(len(labels)) if j != perceived])]
        if rng.random() < regime.out_of_set:
            word = OUT_OF_SET_WORDS[rng.integers(len(OUT_OF_SET_WORDS))]
        out.append(word)
    return out


def regime_answer(
    regime: Regime, audios: Sequence[np.ndarray], y: Sequence[int], labels: Sequence[str], seed: int = 0
) -> Callable[[np.ndarray, str, float, int], list[str]]:
    """``answer(audio, prompt, temperature, n)`` for ``edgeser``'s loopback OpenAI-compatible server, for
    the clips ``audios`` (float 16 kHz, as loaded) with true classes ``y``. An unknown clip is refused.
    Answers are drawn from a generator seeded by the clip and the number of answers already drawn for it,
    so a fresh run (or a cache miss) gets the same answers."""
    keys = [audio_key(client_pcm(a)) for a in audios]
    perceived, refused = perceived_classes(np.asarray(y), keys, labels, regime, seed)
    table = {k: (int(p), bool(r)) for k, p, r in zip(keys, perceived, refused)}
    lock = threading.Lock()
    drawn: dict[str, int] = {}

    def answer(audio: np.ndarray, prompt: str, temperature: float, n: int) -> list[str]:
        key = audio_key(server_pcm(audio))
        if key not in table:
            return [REFUSAL] * n
        with lock:
            start = drawn.get(key, 0)
            drawn[key] = start + n
        rng = np.random.default_rng([seed, int(key[:15], 16), start])
        return sample_answers(*table[key], labels, regime, n, rng)

    return answer
