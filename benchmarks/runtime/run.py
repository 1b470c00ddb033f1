"""Runtime benchmark of the bundled default model (ONNX Runtime, one thread).

    python benchmarks/runtime/run.py [--model M.onnx] [--seconds 120]      # (make bench)

Writes benchmarks/runtime/results.{json,md}. Measures: latency of one whole window (median, p99),
streaming CPU time per second of audio (target <= 2 ms on one core), real-time factor, the largest
difference between streamed and whole-window distributions, peak memory (RSS) and model size."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import REPO, machine  # noqa: E402

from edgeser.runtime.bench import run_benchmark  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    res = run_benchmark(args.model, stream_seconds=args.seconds, repeats=500)
    res["command"] = "python benchmarks/runtime/run.py " + " ".join(sys.argv[1:])
    res["machine"].update({k: v for k, v in machine().items() if k in ("git_commit", "cpu")})
    res["model"] = (
        str(Path(res["model"]).resolve().relative_to(REPO))
        if Path(res["model"]).resolve().is_relative_to(REPO)
        else res["model"]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    lat, st = res["window_latency_ms"], res["stream"]
    md = f"""# Runtime benchmark

Command: `{res["command"]}` (git {res["machine"].get("git_commit", "?")}), model `{res["model"]}`
({res["model_bytes"] / 1e6:.2f} MB), ONNX Runtime {res["machine"]["onnxruntime"]} on one thread,
{res["machine"].get("cpu")} ({res["machine"]["cores"]} cores), Python {res["machine"]["python"]}, numpy {res["machine"]["numpy"]}.
Audio: the bundled demo clips (real speech) looped to {st["audio_s"]:.0f} s, fed in {st["chunk_s"] * 1000:.0f} ms chunks.

| measure | value |
|---|---|
| latency of one {res["window_s"]:.2f} s window, median | {lat["median"]:.3f} ms |
| latency of one window, p99 | {lat["p99"]:.3f} ms |
| streaming CPU per second of audio (hop {res["hop_s"]:.2f} s, incl. speech gate) | **{st["cpu_ms_per_audio_s"]:.3f} ms** (target ≤ 2 ms) |
| the same windows recomputed whole each hop | {res["recompute_whole_window_cpu_ms_per_audio_s"]:.3f} ms |
| real-time factor (wall time / audio time) | {st["real_time_factor"]:.5f} |
| streamed vs whole-window distribution, max abs difference | {res["stream_vs_whole_window_max_abs_prob_diff"]:.1e} |
| peak RSS of the process (Python + ORT + model) | {res["peak_rss_mb"]:.1f} MB ({res["peak_rss_mb_before_model"]:.1f} MB before loading the model) |
| model file | {res["model_bytes"] / 1e6:.2f} MB |

The streaming cost does not grow with the window: each hop encodes only the new audio (the incremental
graph; a whole-clip model re-encodes the receptive field's context as well) ({res["window_s"]:.2f} s window, a
distribution every {res["hop_s"]:.2f} s). Next to silero-vad, measured side by side: `vs_silero.md`.
"""
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
