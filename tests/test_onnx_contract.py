"""docs/ONNX_CONTRACT.md holds: an app that knows only that document (onnxruntime + numpy, no
edgeser.runtime) gets the same distributions, windows and speech decisions as edgeser's Recognizer and
streams, for both graph forms: the incremental graph (the bundled model) and the whole-clip graph (what
``edgeser export`` writes by default; exported here from the bundled model's weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgeser.audio import load_audio
from edgeser.demo import demo_clips

MODEL = Path(__file__).resolve().parents[1] / "edgeser" / "runtime" / "default_model" / "edgeser-default.onnx"

INCREMENTAL_INPUTS = ["audio", "audio_state", "mel_state", "conv_state", "cache"]
INCREMENTAL_OUTPUTS = ["logits", "embeddings", "audio_state_out", "mel_state_out", "conv_state_out"]
STATES = ["audio_state", "mel_state", "conv_state"]

#: chunk size -> samples the test signal has after its last whole hop: a partial block of at least
#: ``tail`` samples (end of input runs a zero-padded block), a shorter partial block, nothing
CHUNKS = {160: 5100, 1000: 4850, 16000: 0}
#: measured max |dp| app vs runtime: 3e-8 (incremental), 7e-8 (whole-clip graph): the same calls, other session options
TOL = 1e-5


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def empty(c: int) -> np.ndarray:
    return np.zeros((1, c, 0), np.float32)


# ----------------------------------------------------------------- the app: only the contract's steps


class App:
    """The metadata, the constants of the streaming loop and its driver (steps 1-3 and end of input); the
    subclasses are the two forms' step 2."""

    def __init__(self, path: Path):
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.meta = json.loads(self.sess.get_modelmeta().custom_metadata_map["edgeser"])
        m = self.meta
        self.labels = m["labels"]
        self.sr, self.rf, self.s, self.c = (
            m["sample_rate"],
            m["receptive_field"],
            m["embedding_stride"],
            m["embedding_dim"],
        )
        self.hop = max(1, round(m["hop_s"] * self.sr / self.s)) * self.s  # H
        self.w = self.n_emb(max(self.rf, int(m["window_s"] * self.sr)))  # W
        self.min_emb = max(1, min(self.w, self.n_emb(self.sr)))  # M: 1 s

    def n_emb(self, t: int) -> int:
        return (t - self.rf) // self.s + 1 if t >= self.rf else 0

    def reset(self) -> None:
        self.buf, self.emb, self.pending, self.total = np.zeros(0, np.float32), empty(self.c), 0, 0

    def window(self, logits: np.ndarray, received: int) -> tuple[float, float, float, np.ndarray]:
        """Step 3: ``(time_s, start_s, window_s, distribution)`` of the window ``emb``."""
        end = (self.total - 1) * self.s + self.rf
        start = (self.total - self.emb.shape[2]) * self.s
        return received / self.sr, start / self.sr, (end - start) / self.sr, softmax(logits[0])

    def step(self, final: bool) -> np.ndarray | None:
        """Step 2: the logits of the new window, or None (no new embedding)."""
        raise NotImplementedError

    def stream(self, x: np.ndarray, chunk: int) -> list[tuple[float, float, float, np.ndarray]]:
        """Feed ``x`` in chunks of ``chunk`` samples, then end the input."""
        self.reset()
        out, received = [], 0
        for i in range(0, len(x), chunk):
            part = x[i : i + chunk]
            while len(part):  # step 1: append, count; step 2 at every hop
                take = min(len(part), self.hop - self.pending)
                self.buf = np.concatenate([self.buf, part[:take]])
                part, self.pending, received = part[take:], self.pending + take, received + take
                if self.pending == self.hop:
                    self.pending = 0
                    logits = self.step(final=False)
                    if logits is not None and self.emb.shape[2] >= self.min_emb:
                        out.append(self.window(logits, received))
        if self.pending >= self.s:  # end of input
            self.pending = 0
            logits = self.step(final=True)
            if logits is not None:
                out.append(self.window(logits, received))
        return out

    def gate_and_smooth(self, x: np.ndarray, windows: list, a: float = 0.5) -> list[tuple[bool, float, np.ndarray]]:
        """App policies: ``(speech, speech share, smoothed distribution or None)`` per window."""
        frame = self.sr // 100
        n_frames = round(max(self.rf, int(self.meta["window_s"] * self.sr)) / self.sr / 0.01)
        smoothed, out = None, []
        for time_s, _, _, p in windows:
            seen = x[: round(time_s * self.sr)]
            frames = seen[: len(seen) // frame * frame].astype(np.float64).reshape(-1, frame)[-n_frames:]
            db = 10 * np.log10(np.maximum((frames**2).mean(axis=1), 1e-10))
            active = int((db > -45).sum())
            share = active / n_frames
            speech = active > 0 and share >= 0.2
            if speech:
                smoothed = p if smoothed is None else a * smoothed + (1 - a) * p
            out.append((speech, share, smoothed if speech else None))
        return out


class IncrementalApp(App):
    def __init__(self, path: Path):
        super().__init__(path)
        inc = self.meta["incremental"]
        self.block, self.warmup, self.tail = inc["block"], inc["warmup"], inc["tail"]
        self.state_shapes = {k: list(inc["states"][k]) for k in STATES}

    def zero_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {k: np.zeros([batch, *s], np.float32) for k, s in self.state_shapes.items()}

    def call(self, audio: np.ndarray, state: dict, cache: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        audio = np.ascontiguousarray(audio, np.float32).reshape(1, -1)
        logits, emb, *out = self.sess.run(None, {"audio": audio, **state, "cache": cache})
        return logits, emb, dict(zip(STATES, out))

    def whole(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A clip's distribution and embeddings: the warmup call from zero states, then the rest."""
        x = np.pad(x, (0, max(0, self.rf - len(x)))).astype(np.float32)
        split = self.warmup * self.block
        _, _, state = self.call(x[:split], self.zero_state(), empty(self.c))
        logits, emb, _ = self.call(x[split:], state, empty(self.c))
        return softmax(logits[0]), emb

    def reset(self) -> None:
        super().reset()
        self.state, self.warm = self.zero_state(), self.warmup

    def step(self, final: bool) -> np.ndarray | None:
        z = self.block
        k = len(self.buf) // z
        if self.warm and k:  # a: warmup blocks in a call of their own, only the states kept
            w = min(self.warm, k)
            _, _, self.state = self.call(self.buf[: w * z], self.state, empty(self.c))
            self.buf, self.warm, k = self.buf[w * z :], self.warm - w, k - w
        extra = final and not self.warm and len(self.buf) - k * z >= self.tail  # end of input: a partial block
        n = k + extra
        if n == 0:  # b
            return None
        keep = max(0, min(self.emb.shape[2], self.w - n))  # c
        cache = self.emb[:, :, self.emb.shape[2] - keep :]
        new, logits = empty(self.c), None
        if k:
            logits, new, self.state = self.call(self.buf[: k * z], self.state, cache)
            self.buf = self.buf[k * z :]
        if extra:  # zero-padded to a block, its states thrown away
            block = np.zeros(z, np.float32)
            block[: len(self.buf)] = self.buf
            logits, last, _ = self.call(block, self.state, np.concatenate([cache, new], axis=2))
            new = np.concatenate([new, last], axis=2)
        self.total += n
        self.emb = np.concatenate([cache, new], axis=2)[:, :, -self.w :]
        return logits


class WholeClipApp(App):
    def whole(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.pad(x, (0, max(0, self.rf - len(x)))).astype(np.float32)
        logits, emb = self.sess.run(None, {"audio": x[None], "cache": empty(self.c)})
        return softmax(logits[0]), emb

    def step(self, final: bool) -> np.ndarray | None:
        n = self.n_emb(len(self.buf))
        if n == 0:
            return None
        keep = max(0, min(self.emb.shape[2], self.w - n))
        cache = self.emb[:, :, self.emb.shape[2] - keep :]
        logits, new = self.sess.run(None, {"audio": self.buf[None, : self.rf + (n - 1) * self.s], "cache": cache})
        self.buf = self.buf[n * self.s :]
        self.total += n
        self.emb = np.concatenate([cache, new], axis=2)[:, :, -self.w :]
        return logits


def open_app(path: Path) -> App:
    """Tell the forms apart: the ``incremental`` metadata entry (equally: an ``audio_state`` input)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["edgeser"])
    assert ("incremental" in meta) == ("audio_state" in [i.name for i in sess.get_inputs()])
    return IncrementalApp(path) if "incremental" in meta else WholeClipApp(path)


# ------------------------------------------------------------------------------ shared checks


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Three demo clips end to end (about 4.6 s)."""
    return np.concatenate([load_audio(p, 16000) for p in demo_clips()[:3]])


def signal(app: App, speech: np.ndarray, chunk: int) -> np.ndarray:
    """``speech`` cut so that ``CHUNKS[chunk]`` samples follow the last whole hop."""
    return speech[: (len(speech) // app.hop - 1) * app.hop + CHUNKS[chunk]]


def check_metadata(app: App) -> None:
    m = app.meta
    assert m["format"] == 1 and m["labels"] and len(set(m["labels"])) == len(m["labels"])
    for k in ("sample_rate", "receptive_field", "embedding_stride", "embedding_dim"):
        assert isinstance(m[k], int) and m[k] > 0, k
    assert m["embedding_stride"] <= m["receptive_field"] <= m["window_s"] * m["sample_rate"]
    assert app.hop == round(m["hop_s"] * m["sample_rate"]) and app.hop % app.s == 0  # hop_s is already rounded
    assert app.hop <= m["window_s"] * m["sample_rate"]
    assert {"edgeser_version", "training", "model_card"} <= set(m)


def dims(values) -> dict[str, list]:  # noqa: ANN001 (onnxruntime NodeArg list)
    """Name -> dims, ``"sym"`` for a symbolic one; every tensor float32."""
    assert all(v.type == "tensor(float)" for v in values)
    return {v.name: [d if isinstance(d, int) else "sym" for d in v.shape] for v in values}


def check_whole_clips(app: App, path: Path) -> float:
    """The app's whole-clip distributions against ``Recognizer.predict``: the demo clips, short audio
    (zero-padded to the receptive field), one receptive field plus a partial stride. Returns max |dp|."""
    from edgeser.runtime import Recognizer

    rec = Recognizer.load(path)
    x0 = load_audio(demo_clips()[0], app.sr)
    clips = [load_audio(p, app.sr) for p in demo_clips()] + [x0[:3000], x0[: app.rf + app.s - 1]]
    worst = 0.0
    for x in clips:
        p, emb = app.whole(x)
        assert emb.shape == (1, app.c, app.n_emb(max(len(x), app.rf)))
        worst = max(worst, float(np.abs(p - rec.predict(x, app.sr).probs).max()))
    assert worst < TOL
    return worst


def check_stream(app: App, path: Path, x: np.ndarray, chunk: int) -> float:
    """The app's streaming loop against ``Recognizer.stream`` (no smoothing, no gate): the same windows at
    the same times with the same raw distributions, end of input included. Returns max |dp|."""
    from edgeser.runtime import Recognizer

    mine = app.stream(x, chunk)
    st = Recognizer.load(path).stream(app.sr, smoothing=0.0, gate=False)
    theirs = list(st.events(x[i : i + chunk] for i in range(0, len(x), chunk)))
    assert len(mine) == len(theirs) > 5
    worst = 0.0
    for (time_s, start_s, window_s, p), ev in zip(mine, theirs):
        assert abs(time_s - ev.time_s) < 1e-9 and abs(start_s - ev.start_s) < 1e-9, (time_s, ev)
        assert abs(window_s - ev.window_s) < 1e-9
        worst = max(worst, float(np.abs(p - ev.raw.probs).max()))
    assert worst < TOL
    # the first window at 1 s (M embeddings), windows grow to W embeddings then slide by the hop
    first = app.rf + (app.min_emb - 1) * app.s
    assert mine[0][2] * app.sr == pytest.approx(first) and mine[0][0] * app.sr == -(-first // app.hop) * app.hop
    assert max(w for _, _, w, _ in mine) * app.sr == pytest.approx(app.rf + (app.w - 1) * app.s)
    return worst


# -------------------------------------------------------------------- the incremental graph (bundled)


@pytest.fixture(scope="module")
def inc() -> IncrementalApp:
    app = open_app(MODEL)
    assert isinstance(app, IncrementalApp)
    return app


def test_bundled_model_is_the_incremental_graph_as_documented(inc: IncrementalApp) -> None:
    check_metadata(inc)
    m, z = inc.meta, inc.meta["incremental"]
    assert {"block", "warmup", "tail", "states", "config"} <= set(z)
    assert z["block"] == m["embedding_stride"] and 0 < z["tail"] <= z["block"]
    assert m["receptive_field"] == z["warmup"] * z["block"] + z["tail"]
    assert m["weights"] == "int8"
    assert [i.name for i in inc.sess.get_inputs()] == INCREMENTAL_INPUTS
    assert [o.name for o in inc.sess.get_outputs()] == INCREMENTAL_OUTPUTS
    states = {k: ["sym", *z["states"][k]] for k in STATES}
    assert dims(inc.sess.get_inputs()) == {"audio": ["sym", "sym"], **states, "cache": ["sym", inc.c, "sym"]}
    assert dims(inc.sess.get_outputs()) == {
        "logits": ["sym", len(m["labels"])],
        "embeddings": ["sym", inc.c, "sym"],
        **{k + "_out": v for k, v in states.items()},
    }


def test_int8_weights_field_matches_the_stored_initializers() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(MODEL))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["edgeser"])
    int8 = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert bool(int8) == (meta.get("weights") == "int8")


def test_incremental_call_gives_one_embedding_per_block(inc: IncrementalApp, speech: np.ndarray) -> None:
    """A call of ``T`` samples: ``(T + block - tail) // block`` embeddings, states of the input shapes; a
    stream in whole blocks, warmup dropped, gives the whole clip's embeddings."""
    z, tail = inc.block, inc.tail
    for t in (tail - 1, tail, z, z + tail - 1, z + tail, 7 * z, 16000):
        logits, emb, state = inc.call(speech[:t], inc.zero_state(), empty(inc.c))
        assert emb.shape == (1, inc.c, (t + z - tail) // z) and logits.shape == (1, len(inc.labels))
        assert {k: list(v.shape[1:]) for k, v in state.items()} == inc.state_shapes
    x = speech[: 60 * z + tail]
    _, ref = inc.whole(x)
    state, outs, i = inc.zero_state(), [], 0
    for k in (1, 5, 3, 25, 2, 24):  # 60 whole blocks
        _, emb, state = inc.call(x[i * z : (i + k) * z], state, empty(inc.c))
        outs, i = outs + [emb], i + k
    streamed = np.concatenate(outs, axis=2)[:, :, inc.warmup :]
    assert streamed.shape[2] == ref.shape[2] - 1  # the last one needs the `tail` samples of block 60
    assert np.abs(streamed - ref[:, :, :-1]).max() < 1e-5 * max(1.0, np.abs(ref).max())


def test_incremental_whole_clip_equals_the_recognizer(inc: IncrementalApp) -> None:
    check_whole_clips(inc, MODEL)


@pytest.mark.parametrize("chunk", sorted(CHUNKS))
def test_incremental_streaming_loop_equals_the_recognizer_stream(
    inc: IncrementalApp, speech: np.ndarray, chunk: int
) -> None:
    check_stream(inc, MODEL, signal(inc, speech, chunk), chunk)


def test_speech_gate_and_smoothing_as_documented(inc: IncrementalApp, speech: np.ndarray) -> None:
    """The default stream (gate on, smoothing 0.5): speech flags, shares and smoothed distributions."""
    from edgeser.runtime import Recognizer

    x = np.concatenate([speech[:40000], np.zeros(48000, np.float32), speech[40000:]])
    windows = inc.stream(x, 1000)
    mine = inc.gate_and_smooth(x, windows)
    theirs = list(Recognizer.load(MODEL).stream(inc.sr).events(x[i : i + 1000] for i in range(0, len(x), 1000)))
    assert len(mine) == len(theirs) and {s for s, _, _ in mine} == {True, False}
    for (speech_, share, p), ev in zip(mine, theirs):
        assert speech_ == ev.speech and abs(share - ev.speech_fraction) < 1e-9
        assert (p is None) == (ev.distribution is None)
        if p is not None:
            assert np.abs(p - ev.distribution.probs).max() < TOL


# ---------------------------------------------------------- the whole-clip graph (edgeser export's default)


@pytest.fixture(scope="module")
def whole_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model's weights (rebuilt from its initializers, saved as a checkpoint) exported as the
    whole-clip graph."""
    pytest.importorskip("torch")
    from edgeser.adapt.checkpoint import save_checkpoint
    from edgeser.adapt.from_onnx import load_onnx_weights
    from edgeser.export import export_onnx

    folder = tmp_path_factory.mktemp("whole_form")
    save_checkpoint(folder / "default.pt", load_onnx_weights(MODEL))
    export_onnx(folder / "default.pt", folder / "default.onnx", parity_audio=demo_clips()[:2])
    return folder / "default.onnx"


@pytest.fixture(scope="module")
def whole(whole_file: Path) -> WholeClipApp:
    app = open_app(whole_file)
    assert isinstance(app, WholeClipApp)
    return app


def test_whole_clip_graph_as_documented(whole: WholeClipApp) -> None:
    check_metadata(whole)
    assert "incremental" not in whole.meta and "weights" not in whole.meta
    assert dims(whole.sess.get_inputs()) == {"audio": ["sym", "sym"], "cache": ["sym", whole.c, "sym"]}
    assert [i.name for i in whole.sess.get_inputs()] == ["audio", "cache"]
    assert [o.name for o in whole.sess.get_outputs()] == ["logits", "embeddings"]
    assert dims(whole.sess.get_outputs()) == {
        "logits": ["sym", len(whole.labels)],
        "embeddings": ["sym", whole.c, "sym"],
    }


def test_whole_clip_graph_whole_clip_equals_the_recognizer(
    whole: WholeClipApp, whole_file: Path, inc: IncrementalApp
) -> None:
    """Also: the two forms of the same weights agree (measured: 1.4e-7 on the demo clips)."""
    check_whole_clips(whole, whole_file)
    for path in demo_clips()[:2]:
        x = load_audio(path, whole.sr)
        (p, emb), (q, emb2) = whole.whole(x), inc.whole(x)
        assert np.abs(p - q).max() < 1e-4 and np.abs(emb - emb2).max() < 1e-4 * max(1.0, np.abs(emb).max())


@pytest.mark.parametrize("chunk", sorted(CHUNKS))
def test_whole_clip_graph_streaming_loop_equals_the_emotion_stream(
    whole: WholeClipApp, whole_file: Path, speech: np.ndarray, chunk: int
) -> None:
    check_stream(whole, whole_file, signal(whole, speech, chunk), chunk)
