"""docs/ONNX_CONTRACT.md holds: an app that knows only that document (onnxruntime + numpy, no
edgeser.runtime) gets the same distributions as edgeser's Recognizer and EmotionStream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgeser.audio import load_audio
from edgeser.demo import demo_clips

MODEL = Path(__file__).resolve().parents[1] / "edgeser" / "runtime" / "default_model" / "edgeser-default.onnx"


# ----------------------------------------------------------------- the app: only the contract's steps


class ContractApp:
    def __init__(self, path: Path):
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = json.loads(self.sess.get_modelmeta().custom_metadata_map["edgeser"])
        self.labels = meta["labels"]
        self.sr, self.rf, self.s, self.c = (
            meta["sample_rate"],
            meta["receptive_field"],
            meta["embedding_stride"],
            meta["embedding_dim"],
        )
        self.hop = int(round(meta["hop_s"] * self.sr))
        self.w = (int(meta["window_s"] * self.sr) - self.rf) // self.s + 1

    @staticmethod
    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def whole(self, x: np.ndarray) -> np.ndarray:
        x = np.pad(x, (0, max(0, self.rf - len(x)))).astype(np.float32)
        logits, emb = self.sess.run(None, {"audio": x[None], "cache": np.zeros((1, self.c, 0), np.float32)})
        assert emb.shape == (1, self.c, (len(x) - self.rf) // self.s + 1)
        return self.softmax(logits[0])

    def stream(self, x: np.ndarray, chunk: int) -> list[tuple[float, float, np.ndarray]]:
        """``(start_s, end_s, distribution)`` per window, from chunks of ``chunk`` samples."""
        buf, emb, pending, total, out = np.zeros(0, np.float32), np.zeros((1, self.c, 0), np.float32), 0, 0, []
        min_emb = (self.sr - self.rf) // self.s + 1
        for i in range(0, len(x), chunk):
            part = x[i : i + chunk]
            while len(part):  # step 1: append, count; step 2 at every hop
                take = min(len(part), self.hop - pending)
                buf, part, pending = np.concatenate([buf, part[:take]]), part[take:], pending + take
                if pending < self.hop:
                    continue
                pending = 0
                if len(buf) < self.rf:
                    continue
                n = (len(buf) - self.rf) // self.s + 1
                keep = max(0, min(emb.shape[2], self.w - n))
                cache = emb[:, :, emb.shape[2] - keep :]
                logits, new = self.sess.run(None, {"audio": buf[None, : self.rf + (n - 1) * self.s], "cache": cache})
                buf = buf[n * self.s :]
                emb = np.concatenate([cache, new], axis=2)[:, :, -self.w :]
                total += n
                if emb.shape[2] >= min_emb:  # step 3
                    end = (total - 1) * self.s + self.rf
                    start = end - (emb.shape[2] - 1) * self.s - self.rf
                    out.append((start / self.sr, end / self.sr, self.softmax(logits[0])))
        return out


# ------------------------------------------------------------------------------ the checks


@pytest.fixture(scope="module")
def app() -> ContractApp:
    return ContractApp(MODEL)


def test_metadata_and_graph_as_documented(app: ContractApp) -> None:
    names_in = [(i.name, i.type) for i in app.sess.get_inputs()]
    names_out = [(o.name, o.type) for o in app.sess.get_outputs()]
    assert names_in == [("audio", "tensor(float)"), ("cache", "tensor(float)")]
    assert names_out == [("logits", "tensor(float)"), ("embeddings", "tensor(float)")]
    assert app.sess.get_outputs()[0].shape[1] == len(app.labels)
    assert app.hop % app.s == 0


def test_whole_clip_equals_the_recognizer(app: ContractApp) -> None:
    from edgeser.runtime import Recognizer

    rec = Recognizer.load(MODEL)
    for path in demo_clips()[:4]:
        x = load_audio(path, app.sr)
        np.testing.assert_allclose(app.whole(x), rec.predict(x, app.sr).probs, atol=1e-6)


@pytest.mark.parametrize("chunk", [160, 1000, 16000])
def test_streaming_loop_equals_the_emotion_stream(app: ContractApp, chunk: int) -> None:
    from edgeser.runtime import Recognizer

    rec = Recognizer.load(MODEL)
    x = np.concatenate([load_audio(p, app.sr) for p in demo_clips()[:3]])
    mine = app.stream(x, chunk)
    st = rec.stream(sample_rate=app.sr, smoothing=0.0, gate=False)
    theirs = [ev for i in range(0, len(x), chunk) for ev in st.feed(x[i : i + chunk])]
    assert len(mine) == len(theirs) > 5
    for (start, end, p), ev in zip(mine, theirs):
        assert abs(start - ev.start_s) < 1e-9 and abs(end - (ev.start_s + ev.window_s)) < 1e-9
        np.testing.assert_allclose(p, ev.raw.probs, atol=1e-6)
