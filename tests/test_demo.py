"""'edgeser demo' and 'edgeser stream' share one set of stream defaults; the demo says what it shows."""

import json
import subprocess
import sys

from edgeser.audio import audio_info
from edgeser.demo import demo_clips
from edgeser.runtime import Recognizer


def cli(*args):
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return r.stdout


def per_clip(jsonl: str) -> list[list[dict]]:
    """The demo's JSON lines cut into clips (each clip starts a new stream: time goes back)."""
    clips: list[list[dict]] = []
    for ev in map(json.loads, jsonl.splitlines()):
        if not clips or ev["time_s"] < clips[-1][-1]["time_s"]:
            clips.append([])
        clips[-1].append(ev)
    return clips


def test_demo_streams_like_stream_with_the_same_defaults():
    clips = demo_clips()
    demo = per_clip(cli("demo", "--fast", "--jsonl"))
    assert len(demo) == len(clips)
    for i in (0, 3):  # a short and the longest clip
        stream = [json.loads(line) for line in cli("stream", clips[i], "--fast", "--jsonl").splitlines()]
        # the demo adds 0.5 s of silence after the clip: compare the events of the clip's own audio
        # (all of 'stream' but its final flush at the end of the file)
        end = stream[-1]["time_s"]
        assert end == round(audio_info(clips[i])[2], 3)
        assert [e for e in demo[i] if e["time_s"] < end] == stream[:-1]
        assert len(stream) - 1 >= (1 if i == 0 else 8)


def test_demo_options_are_the_stream_options():
    a = per_clip(cli("demo", "--fast", "--jsonl", "--hop", "0.25", "--smoothing", "0", "--no-gate"))
    b = [
        json.loads(line)
        for line in cli(
            "stream", demo_clips()[3], "--fast", "--jsonl", "--hop", "0.25", "--smoothing", "0", "--no-gate"
        ).splitlines()
    ]
    assert [e for e in a[3] if e["time_s"] < b[-1]["time_s"]] == b[:-1]
    assert all(e["distribution"] == e["raw"] for e in b)  # smoothing 0 really reached the stream


def test_demo_header_explains_what_it_shows():
    out = cli("demo", "--fast")
    hop = Recognizer.load().model.hop_s
    head = out.split("\n▶")[0]
    assert f"every {hop:.2f} s" in head and "smoothing" in head and "no speech" in head and "final" in head
    assert "'edgeser stream FILE'" in head
    assert out.count("(first after") == len(demo_clips()) and out.count("  final: ") == len(demo_clips())
    assert f"of {len(demo_clips())} clips ended on the acted emotion" in out
