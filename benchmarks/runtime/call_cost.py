"""Where one call of the incremental graph spends its CPU time (issue 10, item 1), measurements only.

    python benchmarks/runtime/call_cost.py --silero /tmp/sv/silero_vad/data/silero_vad.onnx --out benchmarks/runtime

The bundled model's weights (rebuilt from its initializers, fp32) are exported as the incremental graph and
as cut-down and rewritten forms of it, and each is timed per call on one thread (interleaved repetitions,
the order rotating) for calls of 1, 5 and 25 blocks (20 ms, 0.1 s and 0.5 s of audio):

* parts (the same inputs and outputs, the rest of the graph cut off): ``io`` (states passed through),
  ``+frontend`` (the log-mel of the new audio), ``+encoder`` (stem and dilated blocks: the new
  embeddings) and ``full`` (the head's pooled logits as well: the exported graph);
* rewrites, each checked against ``full`` on random inputs (largest output difference in the table):
  ``conv`` (the stem and blocks as ONNX ``Conv`` nodes in channel-major layout instead of gathered taps
  and a matrix product), ``gemm2d`` (the blocks' products as 2-D ``Gemm`` with the bias and ReLU that
  ONNX Runtime fuses into them), ``twiddle`` (the DFT's twiddle factors folded into a per-row second
  stage and the power spectrum into the mel product: 9 fewer elementwise nodes);
* smaller encoders (``SHAPES``: 64 channels, 3 dilated blocks, both), random weights, timed only: what a
  cheaper model would save per call, whatever its accuracy.

A linear fit over the block counts splits ``full`` into a fixed cost per call and a cost per block; with
``--silero`` the silero-vad call (512 samples, state carried) is timed in the same rotation, and the
table gives what the calls alone would cost next to it at each hop, before any stream overhead."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine  # noqa: E402

from edgeser.adapt.from_onnx import load_onnx_weights  # noqa: E402
from edgeser.adapt.incremental import IncrementalGraph  # noqa: E402
from edgeser.adapt.model import EmotionNet, incremental_sizes  # noqa: E402
from edgeser.export.incremental import INPUTS, OUTPUTS, incremental_metadata  # noqa: E402
from edgeser.export.onnx_export import dynamo_export  # noqa: E402
from edgeser.runtime import DEFAULT_MODEL  # noqa: E402

BLOCKS = (1, 5, 25)
#: smaller encoders, random weights, timed only (what a cheaper model would save per call)
SHAPES = {
    "64 channels": {"channels": 64, "bottleneck": 64},
    "3 blocks": {"dilations": (1, 2, 4)},
    "64 channels, 3 blocks": {"channels": 64, "bottleneck": 64, "dilations": (1, 2, 4)},
}
CACHE = 90  # embeddings of earlier audio in the window (a 2-s window holds 93)


class Part(IncrementalGraph):
    """The graph up to ``stage`` (0 io, 1 frontend, 2 encoder, 3 full), with the full graph's inputs and outputs."""

    stage = 3

    def forward(self, audio, audio_state, mel_state, conv_state, cache):  # noqa: ANN001, ANN201
        z = self.sizes
        x = torch.cat([audio_state, audio], dim=1)
        if self.stage == 0:
            return cache.sum(dim=2), cache, x[:, -z.audio :], mel_state + 0, conv_state + 0
        if self.stage == 1:
            mel = torch.cat([mel_state, self.log_mel(x)], dim=1)
            return cache.sum(dim=2), cache, x[:, -z.audio :], mel[:, -z.mel :], conv_state + 0
        emb, a, m, c = self.encode(audio, audio_state, mel_state, conv_state)
        if self.stage == 2:
            return cache.sum(dim=2), emb, a, m, c
        return self.head(torch.cat([cache, emb], dim=2)), emb, a, m, c


class ConvGraph(IncrementalGraph):
    """Stem and blocks as ``Conv`` nodes (channel-major), the states as before."""

    def __init__(self, net):  # noqa: ANN001
        super().__init__(net)
        c, m = self.cfg.channels, self.cfg.n_mels
        self.register_buffer("stem_k", self.stem_w.T.reshape(c, 3, m).permute(0, 2, 1).contiguous())
        for i in range(len(self.cfg.dilations)):
            w = getattr(self, f"block{i}_w")
            self.register_buffer(f"block{i}_k", w.T.reshape(c, 3, c).permute(0, 2, 1).contiguous())

    def encode(self, audio, audio_state, mel_state, conv_state):  # noqa: ANN001, ANN201
        z = self.sizes
        x = torch.cat([audio_state, audio], dim=1)
        mel = torch.cat([mel_state, self.log_mel(x)], dim=1)
        conv = nn.functional.conv1d
        h = torch.relu(conv(mel.transpose(1, 2), self.stem_k, self.stem_b, stride=self.cfg.stem_stride))
        states, outs = torch.split(conv_state.transpose(1, 2), list(z.convs), dim=2), []
        for i, d in enumerate(self.cfg.dilations):
            h = torch.cat([states[i], h], dim=2)
            outs.append(h[:, :, -2 * d :])
            k, b = getattr(self, f"block{i}_k"), getattr(self, f"block{i}_b")
            h = h[:, :, d:-d] + torch.relu(conv(h, k, b, dilation=d))
        return h, x[:, -z.audio :], mel[:, -z.mel :], torch.cat(outs, dim=2).transpose(1, 2)


class Gemm2dGraph(IncrementalGraph):
    """The blocks' products on ``[B*T, 3C]``: ``Gemm`` with the bias and ReLU fused by ONNX Runtime."""

    def encode(self, audio, audio_state, mel_state, conv_state):  # noqa: ANN001, ANN201
        z, s, c = self.sizes, self.cfg.stem_stride, self.cfg.channels
        x = torch.cat([audio_state, audio], dim=1)
        mel = torch.cat([mel_state, self.log_mel(x)], dim=1)
        g = torch.cat([mel[:, j : j - 2 if j < 2 else None : s] for j in range(3)], dim=2)
        lin = nn.functional.linear
        h = torch.relu(lin(g.reshape(-1, g.shape[2]), self.stem_w.T, self.stem_b)).reshape(g.shape[0], -1, c)
        outs, start = [], 0
        for i, (d, size) in enumerate(zip(self.cfg.dilations, z.convs)):
            h = torch.cat([conv_state[:, start : start + size], h], dim=1)
            outs.append(h[:, -size:])
            taps = torch.cat([h[:, : -2 * d], h[:, d:-d], h[:, 2 * d :]], dim=2).reshape(-1, 3 * c)
            y = torch.relu(lin(taps, getattr(self, f"block{i}_w").T, getattr(self, f"block{i}_b")))
            h = h[:, d:-d] + y.reshape(h.shape[0], -1, c)
            start += size
        return h.transpose(1, 2), x[:, -z.audio :], mel[:, -z.mel :], torch.cat(outs, dim=1)


class TwiddleGraph(IncrementalGraph):
    """The twiddle factors folded into one second-stage matrix per first-stage bin, the power into the mel."""

    def __init__(self, net):  # noqa: ANN001
        super().__init__(net)
        n1, n2, k2 = self.n1, self.n2, self.k2
        s2, tc, ts = self.stage2.numpy(), self.twiddle_cos.numpy(), self.twiddle_sin.numpy()
        stage = np.zeros((n1, 2 * n2, 2 * k2), np.float32)
        for k1 in range(n1):  # [re | im] -> [re*cos + im*sin | im*cos - re*sin], then the second stage
            rot = np.block([[np.diag(tc[k1]), -np.diag(ts[k1])], [np.diag(ts[k1]), np.diag(tc[k1])]])
            stage[k1] = rot @ s2
        self.register_buffer("stage2k", torch.from_numpy(stage))
        mel = self.mel.numpy().reshape(n1, 1, k2, -1)  # power rows (k1, k2) -> squared rows (k1, re/im, k2)
        self.register_buffer("mel2", torch.from_numpy(np.repeat(mel, 2, axis=1).reshape(n1 * 2 * k2, -1).copy()))

    def log_mel(self, x):  # noqa: ANN001, ANN201
        frames = self._frames(x)
        a = self.stage1 @ (frames * self.window).unflatten(2, (self.n1, self.n2))  # [B, F, 2 n1, n2]
        a = a.unflatten(2, (2, self.n1)).permute(3, 0, 1, 2, 4).flatten(3)  # [n1, B, F, 2 n2]
        y = a.flatten(1, 2) @ self.stage2k  # [n1, B*F, 2 k2]
        y = y.unflatten(1, (frames.shape[0], -1)).permute(1, 2, 0, 3).flatten(2)
        return torch.log((y * y) @ self.mel2 + self.floor)


def export(graph: IncrementalGraph, path: Path) -> Path:
    """The incremental export's example and dynamic shapes (``export_incremental_net``), without its checks."""
    import onnx

    cfg, z = graph.cfg, incremental_sizes(graph.cfg)
    audio = torch.randn(2, 7 * z.block) * 0.1
    states = tuple(s + 0.1 * torch.randn_like(s) for s in graph.initial_state(2))
    b, t, f = torch.export.Dim("batch"), torch.export.Dim("samples", min=z.block), torch.export.Dim("frames")
    shapes = {"audio": {0: b, 1: t}, "audio_state": {0: b}, "mel_state": {0: b}, "conv_state": {0: b}}
    shapes["cache"] = {0: b, 2: f}
    example = (audio, *states, torch.randn(2, cfg.channels, 3))
    model = dynamo_export(graph.eval(), example, list(INPUTS), list(OUTPUTS), shapes)
    onnx.save(model, str(path))
    return path


def session(path: Path):  # noqa: ANN201
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def n_nodes(sess_path: Path) -> int:
    """Nodes of the graph after ONNX Runtime's optimisations (as a session runs it)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable form
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(sess_path), opts, providers=["CPUExecutionProvider"])
        return len(onnx.load(str(Path(tmp) / "opt.onnx")).graph.node)


def feeds(meta: dict, blocks: int, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {k: (0.3 * rng.standard_normal((batch, *s))).astype(np.float32) for k, s in meta["states"].items()}
    feed["audio"] = (0.1 * rng.standard_normal((batch, blocks * meta["block"]))).astype(np.float32)
    feed["cache"] = rng.standard_normal((batch, meta["channels"], CACHE)).astype(np.float32)
    return feed


def silero_call(path: Path):  # noqa: ANN201
    """One silero-vad call as ``vs_silero.silero_run`` makes it (512 samples plus 64 of context, state carried)."""
    sess = session(path)
    feed = {
        "input": (0.1 * np.random.default_rng(0).standard_normal((1, 576))).astype(np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000, np.int64),
    }
    return lambda: sess.run(None, feed)


def time_calls(calls: dict, repeats: int, number: int) -> dict[str, float]:
    """Median CPU microseconds per call of each entry, the entries' order rotating each repetition."""
    names = list(calls)
    for n in names:
        for _ in range(50):
            calls[n]()
    res: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t = time.process_time()
            for _ in range(number):
                calls[n]()
            res[n].append((time.process_time() - t) / number * 1e6)
    return {n: statistics.median(v) for n, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--silero", type=Path, default=None, help="silero_vad.onnx from the silero-vad wheel")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--number", type=int, default=100, help="calls per timed repetition")
    ap.add_argument("--out", type=Path, default=None, help="folder for call_cost.md and call_cost.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    net = load_onnx_weights(DEFAULT_MODEL).eval()
    z = incremental_sizes(net.cfg)
    meta = {**incremental_metadata(net), "channels": net.cfg.channels}
    forms: dict[str, IncrementalGraph] = {}
    for stage, name in enumerate(("io", "+frontend", "+encoder", "full")):
        forms[name] = Part(net)
        forms[name].stage = stage
    forms.update(conv=ConvGraph(net), gemm2d=Gemm2dGraph(net), twiddle=TwiddleGraph(net))
    metas = dict.fromkeys(forms, meta)
    for name, change in SHAPES.items():
        small = EmotionNet(dataclasses.replace(net.cfg, **change)).eval()
        forms[name] = Part(small)
        metas[name] = {**incremental_metadata(small), "channels": small.cfg.channels}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: export(g, Path(tmp) / f"{n}.onnx") for n, g in forms.items()}
        sessions = {n: session(p) for n, p in paths.items()}
        nodes = {n: n_nodes(p) for n, p in paths.items()}
    diff = {}
    for n in ("conv", "gemm2d", "twiddle"):
        d = 0.0
        for k in BLOCKS:
            f = feeds(meta, k, batch=2, seed=k)
            ref, out = sessions["full"].run(None, f), sessions[n].run(None, f)
            d = max(d, max(float(np.abs(a - b).max() / max(1.0, np.abs(a).max())) for a, b in zip(ref, out)))
        diff[n] = d
    silero = silero_call(args.silero) if args.silero and args.silero.exists() else None
    us: dict[int, dict[str, float]] = {}
    for k in BLOCKS:
        fs = {n: feeds(metas[n], k) for n in sessions}
        calls = {n: (lambda s=s, f=fs[n]: s.run(None, f)) for n, s in sessions.items()}
        if silero is not None:
            calls["silero-vad"] = silero
        us[k] = time_calls(calls, args.repeats, args.number)
        print(f"{k} blocks: " + ", ".join(f"{n} {v:.1f}" for n, v in us[k].items()), flush=True)
    ks = np.array(BLOCKS, float)
    slope, fixed = np.polyfit(ks, [us[k]["full"] for k in BLOCKS], 1)
    result = {
        "command": "python benchmarks/runtime/call_cost.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "block_s": z.block / net.cfg.sample_rate,
        "cache_embeddings": CACHE,
        "nodes_after_optimisation": nodes,
        "max_rel_diff_vs_full": diff,
        "us_per_call": {str(k): v for k, v in us.items()},
        "fit_full": {"fixed_us": fixed, "per_block_us": slope},
    }
    md = report(result, silero is not None)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "call_cost.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "call_cost.md").write_text(md)


def report(r: dict, silero: bool) -> str:
    us, ks, m = r["us_per_call"], [str(k) for k in BLOCKS], r["machine"]
    names = [n for n in us[ks[0]] if n != "silero-vad" and n not in SHAPES]
    blocks = " | ".join(f"{k} block{'s' if k != '1' else ''}" for k in ks)
    rows = [f"| form | nodes | {blocks} | max diff |"]
    rows.append("|---|---|" + "---|" * len(ks) + "---|")
    for n in names:
        cells = [f"{us[k][n]:.0f} µs ({us[k][n] / us[k]['full']:.2f})" for k in ks]
        d = r["max_rel_diff_vs_full"].get(n)
        rows.append(
            f"| {n} | {r['nodes_after_optimisation'][n]} | "
            + " | ".join(cells)
            + f" | {'' if d is None else f'{d:.1e}'} |"
        )
    fit = r["fit_full"]
    text = [
        "# One call of the incremental graph: where the time goes (issue 10, item 1)",
        "",
        f"Command: `{r['command']}` (git {m.get('git_commit', '?')}), {m.get('cpu')} ({m['cores']} cores, shared), "
        f"Python {m['python']}, ONNX Runtime {m['onnxruntime']}, torch {m.get('torch')} (for the exports).",
        "",
        "CPU time per call on one thread, median of interleaved repetitions; in brackets the ratio to `full` (the",
        f"exported graph, fp32) in the same call size. A block is {r['block_s'] * 1000:.0f} ms of audio; the cache holds "
        f"{r['cache_embeddings']} embeddings. Nodes: after ONNX Runtime's portable optimisations.",
        "",
        *rows,
        "",
        f"Linear fit of `full` over the block counts: **{fit['fixed_us']:.0f} µs per call + {fit['per_block_us']:.1f} µs "
        "per block**.",
    ]
    if silero:
        sv = statistics.median(us[k]["silero-vad"] for k in ks)
        silero_ms = sv * (16000 / 512) / 1000  # CPU ms per second of audio
        text += [
            "",
            f"silero-vad, timed in the same rotation: {sv:.0f} µs per 32-ms call, {silero_ms:.2f} ms CPU per second "
            "of audio. What the calls alone (no stream: no gate, smoothing, events) would cost next to it, from the fit:",
            "",
            "| hop | calls per s | ms CPU per s of audio | / silero-vad | issue 10's target (whole stream) |",
            "|---|---|---|---|---|",
        ]
        for hop, target in ((0.1, "0.30"), (0.25, "-"), (0.5, "0.15"), (1.0, "-")):
            k = round(hop / r["block_s"])
            ms = (fit["fixed_us"] + fit["per_block_us"] * k) / hop / 1000
            text.append(f"| {hop:g} s | {1 / hop:g} | {ms:.2f} | {ms / silero_ms:.2f} | {target} |")
    text += [
        "",
        "Smaller encoders (random weights: cost only, no accuracy), the same graph otherwise; in brackets the ratio to",
        "`full`"
        + (
            "; the last two columns: the calls alone next to silero-vad at a 0.1-s hop (5 blocks) and a 0.5-s hop (25 blocks)."
            if silero
            else "."
        ),
        "",
        f"| encoder | nodes | {blocks}" + (" | / silero-vad, 0.1 s | / silero-vad, 0.5 s |" if silero else " |"),
        "|---|---|" + "---|" * (len(ks) + 2 * silero),
    ]
    for n in ["full", *SHAPES]:
        cells = [f"{us[k][n]:.0f} µs ({us[k][n] / us[k]['full']:.2f})" for k in ks]
        if silero:  # 5 blocks are a 0.1-s hop (10 calls per s), 25 a 0.5-s hop (2 calls per s)
            cells += [f"{us['5'][n] * 10 / 1000 / silero_ms:.2f}", f"{us['25'][n] * 2 / 1000 / silero_ms:.2f}"]
        label = "128 channels, 5 blocks (`full`)" if n == "full" else n
        text.append(f"| {label} | {r['nodes_after_optimisation'][n]} | " + " | ".join(cells) + " |")
    return "\n".join(text) + "\n"


if __name__ == "__main__":
    main()
