"""Incremental encoder (issue 10, item 1): per-layer left-context states make each call encode only new
audio; streamed embeddings and whole-clip logits must equal the whole-clip model's."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edgeser.adapt.incremental import IncrementalGraph, factored_dft
from edgeser.adapt.model import EmotionNet, ModelConfig, incremental_sizes
from edgeser.audio import load_audio
from edgeser.demo import demo_clips

LABELS = ["angry", "happy", "neutral", "sad"]
CONFIGS = [
    {},
    {"stem_stride": 1},
    {"stem_stride": 3},
    {"n_fft": 512},
    {"n_fft": 320, "hop_length": 128},
    {"dilations": (1, 3)},
]


def random_net(seed: int = 0, channels: int = 16, **cfg) -> EmotionNet:
    """A random EmotionNet in eval mode whose batch norms are not the identity."""
    torch.manual_seed(seed)
    net = EmotionNet(ModelConfig(labels=LABELS, channels=channels, bottleneck=16, **cfg))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Real speech: the bundled demo clips, end to end (about 20 s)."""
    return np.concatenate([load_audio(p, 16000) for p in demo_clips()])


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    """``a == b`` within ``tol`` relative to the reference's scale (random nets' embeddings reach ~10)."""
    return bool((a - b).abs().max() <= tol * max(1.0, float(b.abs().max())))


def stream_embeddings(graph: IncrementalGraph, wav: torch.Tensor, blocks: list[int]) -> torch.Tensor:
    """Feed ``wav`` in calls of ``blocks[i % len] * block`` samples from a zero state; all outputs."""
    z, outs, i, j = graph.sizes, [], 0, 0
    state = graph.initial_state(wav.shape[0])
    with torch.no_grad():
        while i + z.block <= wav.shape[1]:
            k = min(blocks[j % len(blocks)], (wav.shape[1] - i) // z.block)
            emb, *state = graph.encode(wav[:, i : i + k * z.block], *state)
            assert [s.shape for s in state] == [s.shape for s in graph.initial_state(wav.shape[0])]
            outs.append(emb)
            i, j = i + k * z.block, j + 1
    return torch.cat(outs, dim=2)


def whole_clip(graph: IncrementalGraph, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and embeddings of a whole clip: the warmup blocks from a zero state, then the rest."""
    z, empty = graph.sizes, torch.zeros(wav.shape[0], graph.cfg.channels, 0)
    with torch.no_grad():
        _, _, *state = graph(wav[:, : z.warmup * z.block], *graph.initial_state(wav.shape[0]), empty)
        logits, emb, *_ = graph(wav[:, z.warmup * z.block :], *state, empty)
    return logits, emb


@pytest.mark.parametrize("n_fft", [400, 512, 320, 480, 256])
def test_factored_dft_equals_numpy_rfft(n_fft):
    n_bins = n_fft // 2 + 1
    f = factored_dft(n_fft, n_bins)
    n1 = len(f["stage1"]) // 2
    x = np.random.default_rng(n_fft).standard_normal(n_fft)
    a = f["stage1"].astype(np.float64) @ (x * f["window"]).reshape(n1, -1)
    re, im = a[:n1], a[n1:]
    tr = re * f["twiddle_cos"] + im * f["twiddle_sin"]
    ti = im * f["twiddle_cos"] - re * f["twiddle_sin"]
    y = np.concatenate([tr, ti], axis=1) @ f["stage2"]
    k2 = y.shape[1] // 2
    spec = (y[:, :k2] + 1j * y[:, k2:]).reshape(-1)
    ref = np.fft.rfft(x * f["window"])
    ok = f["order"] < n_bins
    assert sorted(f["order"][ok]) == list(range(n_bins))
    assert np.abs(spec[ok] - ref[f["order"][ok]]).max() < 1e-4 * np.abs(ref).max()


def test_factored_dft_needs_a_factor():
    assert factored_dft(401, 201) is None  # prime: the graph falls back to one DFT product


def test_sizes_of_the_default_config():
    z = incremental_sizes(ModelConfig(labels=LABELS))
    assert (z.block, z.audio, z.mel, z.convs, z.conv, z.warmup, z.tail) == (320, 320, 2, (2, 4, 8, 2, 4), 20, 22, 80)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_warmup_is_the_receptive_field_in_blocks(cfg):
    c = ModelConfig(labels=LABELS, **cfg)
    z = incremental_sizes(c)
    assert z.warmup == math.ceil((c.receptive_field - c.embedding_stride) / c.embedding_stride)
    assert 0 < z.tail <= z.block and z.tail == c.receptive_field - z.warmup * z.block


@pytest.mark.parametrize("cfg", CONFIGS)
def test_streamed_embeddings_equal_whole_clip(cfg):
    net = random_net(**cfg)
    graph = IncrementalGraph(net)
    z = graph.sizes
    wav = torch.randn(2, net.cfg.receptive_field + 41 * z.block + 7) * 0.1
    ref = net.embed(wav).detach()
    for blocks in ([1], [3, 1, 7, 2], [50]):
        out = stream_embeddings(graph, wav, blocks)
        valid = out[:, :, z.warmup :]
        # every complete block is encoded once; the last whole-clip embedding needs `tail` samples more
        assert valid.shape[2] == net.cfg.n_embeddings((wav.shape[1] // z.block) * z.block)
        assert valid.shape[2] == ref.shape[2] - (wav.shape[1] % z.block >= z.tail)
        assert close(valid, ref[:, :, : valid.shape[2]])


def test_streamed_embeddings_on_real_speech(speech):
    net = random_net(seed=1, channels=64)
    graph = IncrementalGraph(net)
    z = graph.sizes
    wav = torch.from_numpy(speech[None])
    ref = net.embed(wav).detach()
    for blocks in ([5], [1, 2, 25, 3]):
        valid = stream_embeddings(graph, wav, blocks)[:, :, z.warmup :]
        assert valid.shape[2] >= ref.shape[2] - 1
        assert close(valid, ref[:, :, : valid.shape[2]])


@pytest.mark.parametrize("cfg", CONFIGS[:2] + CONFIGS[4:5])
def test_whole_clip_logits_from_a_zero_state(cfg, speech):
    net = random_net(seed=2, **cfg)
    graph = IncrementalGraph(net)
    z, rf = graph.sizes, net.cfg.receptive_field
    for t in (rf, rf + z.tail - 1, rf + z.tail, 16000, 16001, 16320, 33333, len(speech)):
        wav = torch.from_numpy(speech[None, :t].copy())
        logits, emb = whole_clip(graph, wav)
        with torch.no_grad():
            ref, ref_emb = net(wav), net.embed(wav)
        assert emb.shape == ref_emb.shape and close(emb, ref_emb)
        assert close(logits, ref), t


def test_logits_pool_the_cache_and_the_new_embeddings(speech):
    net = random_net(seed=3)
    graph = IncrementalGraph(net)
    z = graph.sizes
    wav = torch.from_numpy(speech[None, : 40 * z.block].copy())
    with torch.no_grad():
        emb = stream_embeddings(graph, wav, [40])
        cache = torch.randn(1, net.cfg.channels, 6)
        logits, out, *_ = graph(wav, *graph.initial_state(1), cache)
        ref = net.classify_embeddings(torch.cat([cache, emb], dim=2))
    assert torch.equal(out, emb)
    assert close(logits, ref)


def test_the_graph_is_a_snapshot_for_inference():
    net = random_net(seed=6).train()
    graph = IncrementalGraph(net)
    assert net.training  # the caller's net is left as it was
    wav = torch.randn(1, 20000) * 0.1
    before = whole_clip(graph, wav)[0]
    with torch.no_grad():
        net.classifier.bias.add_(1.0)
    assert torch.equal(whole_clip(graph, wav)[0], before)


# --- ONNX export (item 1, step 2) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from edgeser.export.incremental import export_incremental_net
    from edgeser.export.onnx_export import metadata_for

    net = random_net(seed=4)
    out = tmp_path_factory.mktemp("incr") / "incr.onnx"
    return net, out, export_incremental_net(net, out, metadata_for(net, {}))


def test_export_saves_static_states_and_symbolic_batch_and_length(exported):
    import onnx

    net, path, info = exported
    m = onnx.load(str(path))
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(m.graph.input) + list(m.graph.output)
    }
    assert dims["audio_state"] == ["batch", 320] and dims["audio_state_out"] == ["batch", 320]
    assert dims["mel_state"] == ["batch", 2, 40] and dims["conv_state"] == ["batch", 20, 16]
    assert dims["conv_state_out"] == ["batch", 20, 16] and "skip" not in dims
    symbolic = (dims["audio"][0], dims["audio"][1], dims["cache"][2], dims["embeddings"][2])
    assert all(isinstance(d, str) for d in symbolic)
    assert any(o.version == 18 for o in m.opset_import if o.domain in ("", "ai.onnx"))
    meta = json.loads({p.key: p.value for p in m.metadata_props}["edgeser"])
    assert meta["incremental"] == {
        "config": net.cfg.to_dict(),  # what load_onnx_weights rebuilds the network from
        "block": 320,
        "warmup": 22,
        "tail": 80,
        "states": {"audio_state": [320], "mel_state": [2, 40], "conv_state": [20, 16]},
    }
    assert meta["receptive_field"] == 7120 and meta["labels"] == LABELS
    p = info["parity"]
    assert p["clips"] == 8 and max(p["max_abs_prob_diff"], p["max_abs_prob_diff_streamed"]) < 1e-5
    assert p["max_embedding_diff_streamed"] < 1e-5


def test_exported_graph_runs_other_batches_and_lengths(exported, speech):
    import onnxruntime as ort

    from edgeser.export.incremental import zero_state

    net, path, _ = exported
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, t in ((1, 320), (3, 16000), (1, 33333)):
        x = np.stack([speech[i * 1000 : i * 1000 + t] for i in range(batch)])
        logits, emb, *states = sess.run(
            None, {"audio": x, **zero_state(net, batch), "cache": np.zeros((batch, 16, 0), np.float32)}
        )
        assert emb.shape == (batch, 16, 22 + net.cfg.n_embeddings(t)) and logits.shape == (batch, 4)
        assert [s.shape[1:] for s in states] == [(320,), (2, 40), (20, 16)]
        if t >= net.cfg.receptive_field:
            with torch.no_grad():
                ref = net.embed(torch.from_numpy(x)).numpy()
            assert np.abs(emb[:, :, 22:] - ref).max() < 1e-5 * max(1.0, np.abs(ref).max())


def test_export_refuses_on_parity_failure(tmp_path):
    from edgeser.export.incremental import export_incremental_net
    from edgeser.export.onnx_export import ParityError, metadata_for

    net = random_net(seed=5)
    out = tmp_path / "x.onnx"
    with pytest.raises(ParityError):
        export_incremental_net(net, out, metadata_for(net, {}), tol=-1.0)
    assert not out.exists() and not (tmp_path / "x.onnx.partial").exists()


# --- the bundled model rebuilt from its ONNX initializers (item 1, step 4) --------------------------


@pytest.fixture(scope="module")
def bundled():
    """The bundled default model (the incremental graph, int8-stored weights): its ``Recognizer`` and the
    EmotionNet rebuilt from its initializers."""
    from edgeser.adapt.from_onnx import load_onnx_weights
    from edgeser.runtime import DEFAULT_MODEL, Recognizer

    return Recognizer.load(DEFAULT_MODEL), load_onnx_weights(DEFAULT_MODEL)


def test_rebuilt_bundled_model_equals_its_onnx_session(bundled):
    """Measured over the 8 demo clips: max |dp| 1.8e-7 (float rounding)."""
    from edgeser.runtime.incremental import IncrementalModel

    rec, net = bundled
    assert isinstance(rec.model, IncrementalModel) and rec.model.metadata.get("weights") == "int8"
    assert net.cfg.labels == rec.labels and net.cfg.receptive_field == rec.model.receptive_field
    assert (net.cfg.channels, net.cfg.dilations, net.cfg.bottleneck) == (128, (1, 2, 4, 1, 2), 128)
    for path in demo_clips():
        x = load_audio(path, 16000)
        logits, emb = rec.model.run(x[None])
        with torch.no_grad():
            ref_logits, ref_emb = net(torch.from_numpy(x)[None]).numpy(), net.embed(torch.from_numpy(x)[None]).numpy()
        assert np.abs(logits - ref_logits).max() < 1e-5
        assert np.abs(emb - ref_emb).max() < 1e-6 * np.abs(ref_emb).max()
        probs = torch.softmax(torch.from_numpy(ref_logits), dim=1)[0].numpy()
        assert np.abs(rec.predict(x, 16000).probs - probs).max() < 1e-4


def test_rebuilt_bundled_model_refolds_to_its_graph(bundled):
    """Folding the rebuilt net again (``IncrementalGraph``) gives the file's dequantized weights back."""
    import onnx

    from edgeser.export.storage import stored_weights
    from edgeser.runtime import DEFAULT_MODEL

    _, net = bundled
    weights = stored_weights(onnx.load(str(DEFAULT_MODEL)))
    graph = IncrementalGraph(net)
    names = ["stem_w", "stem_b", "mel"] + [f"block{i}_{k}" for i in range(5) for k in "wb"]
    for name in names:
        ref = weights[name]
        assert np.abs(getattr(graph, name).numpy() - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), name


def test_rebuilt_net_from_an_incremental_export(exported):
    """Round trip: a random net (batch norms that are not identities) exported as the fp32 incremental
    graph and rebuilt computes what it computes."""
    from edgeser.adapt.from_onnx import load_onnx_weights

    net, path, _ = exported
    rebuilt = load_onnx_weights(path)
    assert rebuilt.cfg == net.cfg and not rebuilt.training
    wav = torch.randn(2, 20000) * 0.1
    with torch.no_grad():
        assert close(rebuilt.embed(wav), net.embed(wav))
        assert close(rebuilt(wav), net(wav))
    ref, got = IncrementalGraph(net), IncrementalGraph(rebuilt)
    for name, buf in ref.named_buffers(recurse=False):  # the folded layers and the frontend (not the head)
        assert close(getattr(got, name), buf, 1e-6), name


def test_rebuilt_net_from_an_incremental_export_of_another_shape(tmp_path):
    """Stem stride 3, two blocks, n_fft 480 (another factored DFT: 20 x 24) and 24 channels."""
    from edgeser.adapt.from_onnx import load_onnx_weights
    from edgeser.export.incremental import export_incremental_net
    from edgeser.export.onnx_export import metadata_for

    net = random_net(seed=8, channels=24, stem_stride=3, dilations=(1, 3), n_fft=480)
    export_incremental_net(net, tmp_path / "r.onnx", metadata_for(net, {}), parity_audio=demo_clips()[:1])
    rebuilt = load_onnx_weights(tmp_path / "r.onnx")
    assert rebuilt.cfg == net.cfg
    wav = torch.randn(2, 20000) * 0.1
    with torch.no_grad():
        assert close(rebuilt(wav), net(wav))
        assert close(rebuilt.embed(wav), net.embed(wav))


def test_load_onnx_weights_refuses_an_incremental_graph_without_its_config(exported, tmp_path):
    import onnx

    from edgeser.adapt.from_onnx import load_onnx_weights
    from edgeser.errors import ModelError

    m = onnx.load(str(exported[1]))
    entry = next(p for p in m.metadata_props if p.key == "edgeser")
    meta = json.loads(entry.value)
    del meta["incremental"]["config"]
    entry.value = json.dumps(meta)
    onnx.save(m, str(tmp_path / "old.onnx"))
    with pytest.raises(ModelError, match="lacks its network config") as e:
        load_onnx_weights(tmp_path / "old.onnx")
    assert "\n" not in str(e.value)


def test_rebuilt_net_from_an_exported_random_net(tmp_path):
    from edgeser.adapt.checkpoint import save_checkpoint
    from edgeser.adapt.from_onnx import load_onnx_weights
    from edgeser.export import export_onnx

    net = random_net(seed=7, dilations=(1, 3))  # batch norms that are not identities, another shape
    save_checkpoint(tmp_path / "r.pt", net)
    export_onnx(tmp_path / "r.pt", tmp_path / "r.onnx")
    rebuilt = load_onnx_weights(tmp_path / "r.onnx")
    assert rebuilt.cfg.channels == 16 and rebuilt.cfg.dilations == (1, 3)
    wav = torch.randn(2, 20000) * 0.1
    with torch.no_grad():
        assert close(rebuilt(wav), net(wav))


def test_calibrated_batchnorm_keeps_eval_output_and_fits_train_mode(bundled, speech):
    from edgeser.adapt.from_onnx import calibrate_batchnorm, load_onnx_weights
    from edgeser.runtime import DEFAULT_MODEL

    _, ref = bundled
    net = load_onnx_weights(DEFAULT_MODEL)
    crops = np.stack([speech[i : i + 32000] for i in range(0, 8 * 32000, 32000)])
    calibrate_batchnorm(net, list(crops))
    x = torch.from_numpy(crops)
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max() < 1e-4
        c = net.stem[0](net.input_norm(net.frontend(x)))
        bn = net.stem[1]
        eval_out = bn(c)
        bn.train()
        train_out = bn(c)  # batch statistics of the calibration audio itself: the same affine map
    assert (train_out - eval_out).abs().max() < 1e-3


def test_load_onnx_weights_refuses_other_files(tmp_path):
    from edgeser.adapt.from_onnx import load_onnx_weights
    from edgeser.errors import ModelError

    with pytest.raises(ModelError, match="no such model"):
        load_onnx_weights(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a readable ONNX"):
        load_onnx_weights(junk)


# --- runtime: IncrementalModel / IncrementalStream (item 1, step 3) --------------------------------


@pytest.fixture(scope="module")
def whole_default(bundled, tmp_path_factory):
    """The bundled model's weights (rebuilt, saved as a checkpoint) exported as the whole-clip graph: the
    ``Recognizer`` over its ``OnnxModel``, whose stream is an ``EmotionStream``, and the checkpoint."""
    from edgeser.adapt.checkpoint import save_checkpoint
    from edgeser.export import export_onnx
    from edgeser.runtime import OnnxModel, Recognizer

    folder = tmp_path_factory.mktemp("whole_default")
    save_checkpoint(folder / "default.pt", bundled[1])
    export_onnx(folder / "default.pt", folder / "default.onnx")
    rec = Recognizer.load(folder / "default.onnx")
    assert isinstance(rec.model, OnnxModel)
    return rec, folder / "default.pt"


@pytest.fixture(scope="module")
def incremental_default(whole_default, tmp_path_factory):
    """The same weights exported as the incremental graph (fp32, no retraining)."""
    from edgeser.adapt.checkpoint import load_model
    from edgeser.export.incremental import export_incremental_net
    from edgeser.runtime.incremental import IncrementalModel

    rec, checkpoint = whole_default
    out = tmp_path_factory.mktemp("incr_default") / "default-incremental.onnx"
    info = export_incremental_net(load_model(checkpoint), out, rec.model.metadata)
    assert info["parity"]["max_abs_prob_diff"] < 1e-6 and info["parity"]["max_abs_prob_diff_streamed"] < 1e-6
    return IncrementalModel(out)


def events_differ(a, b) -> float:
    """Largest probability difference between two event lists that must agree on everything else."""
    assert len(a) == len(b) > 0
    worst = 0.0
    for e, f in zip(a, b):
        assert (e.time_s, e.start_s, e.window_s, e.speech, e.speech_fraction) == (
            f.time_s,
            f.start_s,
            f.window_s,
            f.speech,
            f.speech_fraction,
        )
        for p, q in ((e.distribution, f.distribution), (e.raw, f.raw)):
            assert (p is None) == (q is None)
            if p is not None:
                worst = max(worst, float(np.abs(p.probs - q.probs).max()))
    return worst


#: measured: at most 3.0e-7 over rates 16/44.1 kHz, hops 0.1-1 s and chunks 1-48000 samples
STREAM_TOL = 1e-6


@pytest.mark.parametrize("rate", [16000, 44100])
@pytest.mark.parametrize("chunk", [1, 160, 1000, 48000])
def test_incremental_stream_events_equal_emotion_stream(whole_default, incremental_default, speech, rate, chunk):
    import soxr

    from edgeser.runtime.incremental import IncrementalStream

    rec, _ = whole_default
    # speech, 3 s of silence (the gate says no speech), speech; the length leaves a partial hop and a tail for flush()
    x = np.concatenate([speech[:96000], np.zeros(48000, np.float32), speech[96000:]])
    x = x if chunk > 1 else x[:48000]  # sample by sample: 3 s
    y = x if rate == 16000 else soxr.resample(x, 16000, rate)
    for hop in (0.1, 0.5):
        a = list(rec.stream(rate, hop_s=hop).events(y[i : i + chunk] for i in range(0, len(y), chunk)))
        b = list(
            IncrementalStream(incremental_default, rate, hop_s=hop).events(
                y[i : i + chunk] for i in range(0, len(y), chunk)
            )
        )
        assert events_differ(a, b) < STREAM_TOL
        assert any(e.speech for e in a) and (chunk == 1 or any(not e.speech for e in a))


def test_incremental_stream_flush_tail_then_more_audio(whole_default, incremental_default, speech):
    from edgeser.runtime.incremental import IncrementalStream

    rec, _ = whole_default
    old = rec.stream(16000, hop_s=0.25, smoothing=0.0)
    new = IncrementalStream(incremental_default, hop_s=0.25, smoothing=0.0)
    evs = []
    for st in (old, new):
        # 2.0 s + 500 samples: flush() needs the zero-padded tail block (500 % 320 >= tail), then audio goes on
        ev = st.feed(speech[:32500]) + st.flush()
        ev += st.feed(speech[32500:80000]) + st.flush()
        st.reset()
        evs.append(ev + st.feed(speech[:40000]))
    assert events_differ(*evs) < STREAM_TOL
    assert len(evs[0]) > 10


def test_incremental_model_is_a_drop_in_for_whole_clips(whole_default, incremental_default):
    from edgeser.runtime import Recognizer

    rec, _ = whole_default
    rec2 = Recognizer(incremental_default)
    for path in demo_clips()[:4]:
        a, b = rec.predict_file(path), rec2.predict_file(path)
        assert np.abs(a.probs - b.probs).max() < STREAM_TOL
    x = load_audio(demo_clips()[0])
    assert np.abs(rec.predict(x[:3000], 16000).probs - rec2.predict(x[:3000], 16000).probs).max() < STREAM_TOL
    _, emb = incremental_default.run(x[None, :16000])
    assert emb.shape == (1, 128, incremental_default.n_embeddings(16000))


def test_incremental_model_refuses_the_whole_clip_graph(whole_default):
    from edgeser.errors import ModelError
    from edgeser.runtime.incremental import IncrementalModel, IncrementalStream

    rec, _ = whole_default
    with pytest.raises(ModelError, match="lacks \\['incremental'\\]"):
        IncrementalModel(rec.path)
    with pytest.raises(ModelError, match="not an incremental model"):
        IncrementalStream(rec)


def test_incremental_runtime_imports_neither_torch_nor_onnx():
    import subprocess
    import sys

    code = (
        "import sys, edgeser.runtime.incremental; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxscript')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
