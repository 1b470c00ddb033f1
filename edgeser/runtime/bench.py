"""Runtime benchmark (ONNX Runtime, one thread): latency per window, streaming CPU cost per second of
audio, real-time factor, streaming-vs-whole-window agreement, peak memory, model size."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..demo import demo_clips
from .recognizer import Recognizer


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _speech(seconds: float, sr: int) -> np.ndarray:
    """Real speech (the demo clips, looped) of the given length."""
    clips = [load_audio(p, sr) for p in demo_clips()]
    x = np.concatenate(clips)
    reps = int(np.ceil(seconds * sr / len(x)))
    return np.tile(x, reps)[: int(seconds * sr)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_benchmark(
    model_path: str | Path | None = None, stream_seconds: float = 60.0, repeats: int = 200, chunk_s: float = 0.1
) -> dict:
    """Measure on this machine with ONNX Runtime on one thread; returns a JSON-able dict."""
    import onnxruntime as ort

    rss0 = _peak_rss_mb()
    rec = Recognizer.load(model_path, threads=1)
    m = rec.model
    sr = m.sample_rate
    audio = _speech(max(stream_seconds, m.window_s + 1), sr)

    # latency of one whole window (the cost of recomputing a window from scratch)
    win = audio[: int(m.window_s * sr)][None]
    for _ in range(10):
        m.run(win)
    lat = []
    for _ in range(repeats):
        t = time.perf_counter()
        m.run(win)
        lat.append((time.perf_counter() - t) * 1000)
    lat = np.array(lat)

    # streaming: CPU time per second of audio, fed in chunk_s pieces
    st = rec.stream(sample_rate=sr, smoothing=0.0, gate=True)
    step = int(chunk_s * sr)
    chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    events = [ev for c in chunks for ev in st.feed(c)]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    seconds = len(audio) / sr

    # the same windows recomputed whole, for comparison, and the agreement of the two
    st2 = rec.stream(sample_rate=sr, smoothing=0.0, gate=False)
    evs = [ev for c in chunks[: int(20 / chunk_s)] for ev in st2.feed(c)]
    diff = 0.0
    for ev in evs:
        a = int(round(ev.start_s * sr))
        b = a + int(round(ev.window_s * sr))
        diff = max(diff, float(np.abs(rec.predict(audio[a:b], sr).probs - ev.raw.probs).max()))
    hops_per_s = 1.0 / (st.hop / sr)
    return {
        "model": str(m.path),
        "model_bytes": m.path.stat().st_size,
        "labels": m.labels,
        "window_s": round(st.window_s, 3),
        "hop_s": st.hop / sr,
        "threads": 1,
        "window_latency_ms": {
            "median": round(float(np.median(lat)), 3),
            "p99": round(float(np.percentile(lat, 99)), 3),
            "mean": round(float(lat.mean()), 3),
            "runs": repeats,
        },
        "stream": {
            "audio_s": round(seconds, 1),
            "chunk_s": chunk_s,
            "events": len(events),
            "cpu_ms_per_audio_s": round(cpu * 1000 / seconds, 3),
            "wall_ms_per_audio_s": round(wall * 1000 / seconds, 3),
            "real_time_factor": round(wall / seconds, 5),
        },
        "recompute_whole_window_cpu_ms_per_audio_s": round(float(np.median(lat)) * hops_per_s, 3),
        "stream_vs_whole_window_max_abs_prob_diff": diff,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_mb_before_model": round(rss0, 1),
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "providers": m.providers,
        },
    }
