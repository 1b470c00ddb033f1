"""Streaming CPU cost of edgeser next to silero-vad, side by side in one process on one thread.

    pip download --no-deps silero-vad==6.2.3 -d /tmp/sv
    unzip -o /tmp/sv/silero_vad-*.whl 'silero_vad/data/*' -d /tmp/sv
    python benchmarks/runtime/vs_silero.py --silero /tmp/sv/silero_vad/data/silero_vad.onnx --out benchmarks/runtime

silero-vad is a benchmark-only dependency: its wheel's packaged ``silero_vad.onnx`` is driven with
ONNX Runtime directly (512-sample chunks at 16 kHz, 64 samples of context and the state carried, as
the wheel's own ``OnnxWrapper`` does), nothing is installed. Without ``--silero`` (or when the file is
absent) the silero rows are skipped and said so.

Measured for each hop: CPU time per second of audio of the default stream (``Recognizer.load().stream()``:
an ``IncrementalStream`` over the bundled model, the incremental graph with int8-stored weights, whose calls
encode only each hop's new audio), of ``EmotionStream`` over the whole-clip graph of the same weights (each
hop re-encodes the receptive field's context; the bundled form before 0.2) and of silero-vad, all fed the
same speech (the bundled demo clips looped) in ``--chunk-s`` chunks, speech gate and smoothing on (the
defaults). Repetitions are interleaved (the order rotates) and the ratios are taken within each repetition;
medians are reported. ``--whole`` names the whole-clip ONNX file; without it the bundled model's weights are
rebuilt and exported to a temporary file (needs the [adapt] extra: torch, onnx, onnxscript)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine  # noqa: E402

from edgeser.runtime import DEFAULT_MODEL, EmotionStream, OnnxModel, Recognizer  # noqa: E402
from edgeser.runtime.bench import _speech  # noqa: E402
from edgeser.runtime.incremental import IncrementalModel  # noqa: E402

HOPS = (0.1, 0.25, 0.5, 1.0)


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def silero_run(path: Path):
    """silero-vad over 16 kHz audio: 512-sample chunks with 64 samples of context and the state carried
    (the wheel's ``OnnxWrapper.__call__`` without torch); returns the speech probabilities."""
    sess = _session(path)
    sr = np.array(16000, np.int64)

    def run(audio: np.ndarray) -> np.ndarray:
        state, ctx, probs = np.zeros((2, 1, 128), np.float32), np.zeros((1, 64), np.float32), []
        for i in range(0, len(audio) - 511, 512):
            x = np.concatenate([ctx, audio[None, i : i + 512]], axis=1)
            out, state = sess.run(None, {"input": x, "state": state, "sr": sr})
            ctx = x[:, -64:]
            probs.append(float(out[0, 0]))
        return np.array(probs)

    return run


def stream_run(make, chunk: int):
    """Feed ``audio`` in ``chunk``-sample pieces to a fresh stream from ``make()``; returns the events."""

    def run(audio: np.ndarray) -> list:
        st = make()
        return [ev for i in range(0, len(audio), chunk) for ev in st.feed(audio[i : i + chunk])]

    return run


def calls_run(model: IncrementalModel, hop_s: float):
    """The incremental graph alone, driven like silero-vad above: one call per hop, state carried, the
    window's embeddings as the cache; no resampling, speech gate, smoothing or events."""
    hop = max(1, round(hop_s * 16000 / model.block)) * model.block
    window = model.n_embeddings(int(model.window_s * 16000))

    def run(audio: np.ndarray) -> np.ndarray:
        state, cache = model.initial_state(1), model.empty_cache(1)
        _, _, state = model.step(audio[None, : model.warmup * model.block], state)
        for i in range(model.warmup * model.block, len(audio) - hop + 1, hop):
            logits, emb, state = model.step(audio[None, i : i + hop], state, cache)
            cache = np.concatenate([cache, emb], axis=2)[:, :, -window:]
        return logits

    return run


def build_whole(folder: Path) -> Path:
    """The bundled model's weights (rebuilt from its initializers) exported as the whole-clip graph."""
    from edgeser.adapt.checkpoint import save_checkpoint
    from edgeser.adapt.from_onnx import load_onnx_weights
    from edgeser.export import export_onnx

    save_checkpoint(folder / "default.pt", load_onnx_weights(DEFAULT_MODEL))
    export_onnx(folder / "default.pt", folder / "default-whole.onnx")
    return folder / "default-whole.onnx"


def measure(runs: dict, audio: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """CPU ms per second of audio of each run, ``repeats`` times, the order rotating each repetition."""
    names, seconds = list(runs), len(audio) / 16000
    for name in names:  # warm-up
        runs[name](audio[: 16000 * 5])
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.process_time()
            runs[name](audio)
            cpu[name].append((time.process_time() - t) * 1000 / seconds)
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--silero", type=Path, default=None, help="silero_vad.onnx from the silero-vad wheel")
    ap.add_argument("--whole", type=Path, default=None, help="whole-clip ONNX of the bundled model's weights")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--chunk-s", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=None, help="write vs_silero.{json,md} into this folder")
    args = ap.parse_args()

    rec = Recognizer.load(threads=1)
    inc = rec.model
    assert isinstance(inc, IncrementalModel), "the bundled model is the incremental graph since 0.2"
    tmp = None
    if args.whole is None:
        tmp = tempfile.TemporaryDirectory()
        args.whole = build_whole(Path(tmp.name))
    whole = OnnxModel(args.whole, threads=1)
    audio = _speech(args.seconds, 16000)
    chunk = int(round(args.chunk_s * 16000))

    runs = {}
    silero = args.silero if args.silero and args.silero.is_file() else None
    if silero is None:
        print(f"silero-vad: skipped ({'no --silero given' if args.silero is None else f'{args.silero} not found'})")
    else:
        runs["silero"] = silero_run(silero)
    for hop in HOPS:
        runs[f"old@{hop}"] = stream_run(lambda hop=hop: EmotionStream(whole, 16000, hop_s=hop), chunk)
        runs[f"new@{hop}"] = stream_run(lambda hop=hop: rec.stream(16000, hop_s=hop), chunk)
        runs[f"calls@{hop}"] = calls_run(inc, hop)

    # the two streams must agree before their costs are compared
    agree = 0.0
    for hop in HOPS:
        a, b = runs[f"old@{hop}"](audio[: 16000 * 20]), runs[f"new@{hop}"](audio[: 16000 * 20])
        assert len(a) == len(b) and [e.time_s for e in a] == [e.time_s for e in b]
        agree = max(agree, max(float(np.abs(e.raw.probs - f.raw.probs).max()) for e, f in zip(a, b) if e.raw))

    cpu = measure(runs, audio, args.repeats)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    rows = []
    for hop in HOPS:
        o, n = cpu[f"old@{hop}"], cpu[f"new@{hop}"]
        c = cpu[f"calls@{hop}"]
        row = {
            "hop_s": hop,
            "old_ms": med[f"old@{hop}"],
            "new_ms": med[f"new@{hop}"],
            "calls_ms": med[f"calls@{hop}"],
            "old_over_new": statistics.median(x / y for x, y in zip(o, n)),
        }
        if silero:
            s = cpu["silero"]
            for key, v in (("old", o), ("new", n), ("calls", c)):
                ratios = [x / y for x, y in zip(v, s)]
                row[f"{key}_over_silero"] = statistics.median(ratios)
                row[f"{key}_over_silero_range"] = [min(ratios), max(ratios)]
        rows.append(row)
    info = machine()
    res = {
        "command": "python benchmarks/runtime/vs_silero.py " + " ".join(sys.argv[1:]),
        "audio_s": len(audio) / 16000,
        "chunk_s": args.chunk_s,
        "repeats": args.repeats,
        "silero_ms": med.get("silero"),
        "silero_model": str(silero) if silero else None,
        "stream_agreement_max_abs_prob_diff": agree,
        "rows": rows,
        "cpu_ms_per_audio_s": cpu,
        "model_bytes": {"whole_clip": whole.path.stat().st_size, "incremental": DEFAULT_MODEL.stat().st_size},
        "machine": info,
    }
    md = render(res)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "vs_silero.json").write_text(json.dumps(res, indent=2) + "\n")
        (args.out / "vs_silero.md").write_text(md)
    if tmp is not None:
        tmp.cleanup()


def render(res: dict) -> str:
    m = res["machine"]
    silero = res["silero_ms"] is not None
    head = (
        "| hop | EmotionStream, whole-clip graph (old), ms CPU / s audio | default stream (new) | new graph's calls alone "
        "| old / new |"
    )
    sep = "|---|---|---|---|---|"
    if silero:
        head += " old / silero-vad | new / silero-vad | calls alone / silero-vad |"
        sep += "---|---|---|"
    lines = [head, sep]
    for r in res["rows"]:
        line = (
            f"| {r['hop_s']:.2f} s | {r['old_ms']:.2f} | {r['new_ms']:.2f} | {r['calls_ms']:.2f} "
            f"| {r['old_over_new']:.2f} |"
        )
        if silero:
            lo, hi = r["new_over_silero_range"]
            line += (
                f" {r['old_over_silero']:.2f} | **{r['new_over_silero']:.2f}** ({lo:.2f}–{hi:.2f}) |"
                f" {r['calls_over_silero']:.2f} |"
            )
        lines.append(line)
    sil = (
        f"silero-vad 6.2.3 `silero_vad.onnx` (512-sample chunks, state carried): **{res['silero_ms']:.2f} ms** "
        "CPU per second of audio."
        if silero
        else "silero-vad: not measured (no `--silero` file)."
    )
    return f"""# edgeser streaming vs silero-vad (one thread, one process)

Command: `{res["command"]}` (git {m.get("git_commit", "?")}), {m.get("cpu")} ({m["cores"]} cores, shared),
Python {m["python"]}, ONNX Runtime {m["onnxruntime"]}, numpy {m["numpy"]}. Audio: the bundled demo clips
(EmoDB speech) looped to {res["audio_s"]:.0f} s, fed in {res["chunk_s"] * 1000:.0f} ms chunks; speech gate and
smoothing on. {res["repeats"]} interleaved repetitions; medians of CPU time and of the per-repetition ratios
(range in brackets). {sil}

{chr(10).join(lines)}

"Calls alone": the incremental graph driven as silero-vad is (one ONNX Runtime call per hop, state and
window carried), without the stream's resampler, speech gate, smoothing and event objects.

"New" is the default stream (`Recognizer.load().stream()`): an IncrementalStream over the bundled model (the
incremental graph, int8-stored weights, fp32 arithmetic); "old" is EmotionStream over the whole-clip graph of the
same weights (fp32), the bundled form before 0.2.

Streams agree: largest difference between the two streams' distributions on the first 20 s, all hops:
{res["stream_agreement_max_abs_prob_diff"]:.1e} (the int8 storage of the weights). Model files: whole-clip graph
{res["model_bytes"]["whole_clip"] / 1e6:.2f} MB, bundled incremental graph {res["model_bytes"]["incremental"] / 1e6:.2f} MB.
"""


if __name__ == "__main__":
    main()
