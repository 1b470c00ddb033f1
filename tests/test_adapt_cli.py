"""adapt -> export -> stream end to end through the CLI, with the LALM teacher answering over real
HTTP on loopback; annotate; training on soft targets with the co-occurrence penalty."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeser.adapt.checkpoint import read_checkpoint
from edgeser.demo import demo_clips, demo_manifest
from edgeser.testing.openai_server import serve


def run(*args, rc=0, env=None):
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", *map(str, args)], capture_output=True, text=True, timeout=600, env=env
    )
    assert r.returncode == rc, (r.returncode, r.stdout, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    return r


@pytest.fixture()
def lalm_url():
    """A stand-in audio LLM: loud clips are 'angry', others 'sad' or 'neutral', sampled at the temperature."""
    calls = []

    def answer(audio, prompt, temperature, n):
        calls.append(n)
        rms = float(np.sqrt(np.mean(audio**2)))
        rng = np.random.default_rng(int(rms * 1e6))
        first = "angry" if rms > 0.08 else "sad"
        return [first if rng.random() > 0.3 * temperature else rng.choice(["neutral", "Happiness"]) for _ in range(n)]

    server, thread, url = serve(answer)
    yield url, calls
    server.shutdown()
    server.server_close()


def test_adapt_export_stream_end_to_end(tiny_checkpoint, tmp_path, lalm_url):
    url, calls = lalm_url
    student = tmp_path / "student.pt"
    args = [
        "adapt",
        "--source-model",
        tiny_checkpoint,
        "--target",
        demo_manifest(),
        "--lalm-url",
        url,
        "--lalm-model",
        "stand-in",
        "--k-lalm",
        "3",
        "--out",
        student,
        "--epochs",
        "2",
        "--penalty-weight",
        "0.5",
    ]
    r = run(*args)
    assert student.exists() and "UA on the labelled target clips" in r.stdout
    assert len(calls) >= len(demo_clips())  # one request (n=3) per clip at least
    # a rerun resumes (nothing left) and asks the LALM nothing new: answers are cached
    before = len(calls)
    r = run(*args)
    assert len(calls) == before and "resuming" in r.stderr
    onnx_path = tmp_path / "student.onnx"
    run("export", student, "-o", onnx_path)
    r = run("stream", demo_clips()[3], "--model", onnx_path, "--fast", "--jsonl")
    events = [json.loads(x) for x in r.stdout.splitlines()]
    assert events and all(e["distribution"] is None or abs(sum(e["distribution"].values()) - 1) < 1e-3 for e in events)
    summary = read_checkpoint(student)["summary"]
    assert summary["method"] == "mi-fuse" and summary["config"]["penalty_weight"] == 0.5
    assert [t["name"] for t in summary["details"]["teachers"]] == ["lalm:stand-in", "classifier"]


@pytest.mark.parametrize("method", ["shot", "nrc"])
def test_adapt_baselines_need_no_lalm(tiny_checkpoint, tmp_path, method):
    # 8 demo clips; NRC needs more clips than neighbours: K=5 fits
    run(
        "adapt",
        "--source-model",
        tiny_checkpoint,
        "--target",
        demo_manifest(),
        "--method",
        method,
        "--out",
        tmp_path / f"{method}.pt",
        "--epochs",
        "1",
    )
    assert (tmp_path / f"{method}.pt").exists()


def test_adapt_errors_are_one_line(tiny_checkpoint, tmp_path):
    r = run("adapt", "--source-model", tiny_checkpoint, "--target", demo_manifest(), "--out", tmp_path / "x.pt", rc=1)
    assert "needs an LALM teacher" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run(
        "adapt",
        "--source-model",
        tiny_checkpoint,
        "--target",
        demo_manifest(),
        "--out",
        tmp_path / "x.pt",
        "--lalm-url",
        "http://127.0.0.1:9/v1",
        "--lalm-model",
        "m",
        "--epochs",
        "1",
        rc=1,
    )
    assert r.stderr.strip().splitlines()[-1].startswith("error:")


def test_annotate_writes_votes_and_trains_on_them(tmp_path, lalm_url):
    url, _ = lalm_url
    votes = tmp_path / "votes.csv"
    run(
        "annotate",
        "--target",
        demo_manifest(),
        "--lalm-url",
        url,
        "--lalm-model",
        "stand-in",
        "--k-lalm",
        "4",
        "-o",
        votes,
    )
    rows = list(csv.DictReader(open(votes)))
    assert len(rows) == len(demo_clips())
    for row in rows:
        v = [float(row[f"votes_{k}"]) for k in ("angry", "happy", "neutral", "sad")]
        assert sum(v) == 4  # every answer parsed: 'Happiness' maps to happy through the synonym table
    # the votes train a model as distributions, with the co-occurrence penalty
    out = tmp_path / "soft.pt"
    run(
        "train",
        "--train",
        votes,
        "--out",
        out,
        "--targets",
        "votes-all",
        "--penalty-weight",
        "0.3",
        "--epochs",
        "1",
        "--batch-size",
        "4",
    )
    assert out.exists()


def test_train_listener_targets(tmp_path):
    out = tmp_path / "listener.pt"
    run(
        "train", "--train", demo_manifest(), "--out", out, "--targets", "listener", "--epochs", "1", "--batch-size", "4"
    )
    assert out.exists()
    r = run("train", "--train", demo_manifest(), "--out", tmp_path / "v.pt", "--targets", "votes-all", rc=1)
    assert "votes_" in r.stderr


# ------------------------------------------------------------------ bad target files, useless teachers (issue 9)


def bad_target(tmp_path, corrupt=True, long=True, good=True):
    """A manifest of the demo clips plus an undecodable file and a 601 s file (over the in-memory limit)."""
    import soundfile as sf

    rows = [(str(p), "") for p in demo_clips()] if good else []
    if corrupt:
        (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all" * 10)
        rows.append((str(tmp_path / "corrupt.wav"), ""))
    if long:
        rng = np.random.default_rng(0)
        sf.write(
            tmp_path / "long.wav", (0.05 * rng.standard_normal(601 * 8000)).astype(np.float32), 8000, subtype="PCM_16"
        )
        rows.append((str(tmp_path / "long.wav"), ""))
    path = tmp_path / "target.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return path


@pytest.fixture()
def recording_lalm():
    """A stand-in audio LLM that records how many seconds of audio each request carried and answers ``word``
    (``None``: 'angry' for loud clips, 'sad' otherwise)."""
    heard, word = [], {"value": None}

    def answer(audio, prompt, temperature, n):
        heard.append(len(audio) / 16000)
        loud = float(np.sqrt(np.mean(audio**2))) > 0.08
        return [word["value"] or ("angry" if loud else "sad")] * n

    server, thread, url = serve(answer)
    yield url, heard, word
    server.shutdown()
    server.server_close()


def test_adapt_skips_unreadable_targets_and_crops_long_ones(tiny_checkpoint, tmp_path, recording_lalm):
    url, heard, _ = recording_lalm
    target, out = bad_target(tmp_path), tmp_path / "student.pt"
    r = run(
        "adapt",
        "--source-model",
        tiny_checkpoint,
        "--target",
        target,
        "--lalm-url",
        url,
        "--lalm-model",
        "m",
        "--k-lalm",
        "2",
        "--out",
        out,
        "--epochs",
        "1",
    )
    assert "skipped 1 of 10 target files that could not be read" in r.stdout and "corrupt.wav" in r.stdout
    summary = read_checkpoint(out)["summary"]
    assert summary["skipped_clips"] == [str(tmp_path / "corrupt.wav")]
    assert summary["train_clips"] == 9  # the 601 s file is used: its first 30 s (max_clip_s), for the LALM too
    assert len(heard) >= 9 and max(heard) == pytest.approx(30.0, abs=0.01)
    # nothing readable: one clean error line, exit 1
    r = run(
        "adapt",
        "--source-model",
        tiny_checkpoint,
        "--target",
        bad_target(tmp_path, long=False, good=False),
        "--method",
        "shot",
        "--out",
        tmp_path / "none.pt",
        rc=1,
    )
    assert r.stderr.strip().splitlines() == [
        "error: none of the 1 target clips could be read (first: "
        f"{tmp_path / 'corrupt.wav'}: cannot decode audio " + r.stderr.split("cannot decode audio ", 1)[1].strip()
    ]


def test_annotate_skips_unreadable_targets_and_crops_long_ones(tmp_path, recording_lalm):
    url, heard, _ = recording_lalm
    votes = tmp_path / "votes.csv"
    r = run(
        "annotate",
        "--target",
        bad_target(tmp_path),
        "--lalm-url",
        url,
        "--lalm-model",
        "m",
        "--k-lalm",
        "2",
        "-o",
        votes,
    )
    rows = list(csv.DictReader(open(votes)))
    assert [Path(row["path"]).name for row in rows] == [p.name for p in demo_clips()] + ["long.wav"]
    assert "skipped 1 of 10 target files" in r.stdout and "corrupt.wav" in r.stdout
    assert max(heard) == pytest.approx(30.0, abs=0.01)
    run(
        "annotate",
        "--target",
        bad_target(tmp_path, long=False, good=False),
        "--lalm-url",
        url,
        "--lalm-model",
        "m",
        "-o",
        tmp_path / "none.csv",
        rc=1,
    )


def test_mifuse_warns_when_the_lalm_contributes_nothing(tiny_checkpoint, tmp_path, recording_lalm):
    url, _, word = recording_lalm
    word["value"] = "calm"  # not one of the labels (and deliberately not read as neutral)
    r = run(
        "adapt",
        "--source-model",
        tiny_checkpoint,
        "--target",
        demo_manifest(),
        "--lalm-url",
        url,
        "--lalm-model",
        "m",
        "--k-lalm",
        "2",
        "--out",
        tmp_path / "s.pt",
        "--epochs",
        "1",
    )
    warning = (
        "teacher lalm:m gave no usable answer for any of the 8 target clips (16 answers could not be parsed, "
        "0 are missing): it contributes nothing; the student trains on the classifier teacher alone"
    )
    assert warning in r.stderr and warning in r.stdout  # when it happens and again at the end
    assert read_checkpoint(tmp_path / "s.pt")["summary"]["notes"][0].startswith(warning)


def test_sfuda_fails_cleanly_when_the_lalm_contributes_nothing(tiny_checkpoint, tmp_path):
    preds = tmp_path / "calm.jsonl"
    preds.write_text(
        "".join(json.dumps({"path": str(p), "labels": ["calm", "calm", "calm"]}) + "\n" for p in demo_clips())
    )
    r = run(
        "adapt",
        "--source-model",
        tiny_checkpoint,
        "--target",
        demo_manifest(),
        "--method",
        "sfuda",
        "--lalm-predictions",
        preds,
        "--k-lalm",
        "3",
        "--out",
        tmp_path / "s.pt",
        rc=1,
    )
    last = r.stderr.strip().splitlines()[-1]  # after the progress lines, one error line (not "unexpected ...")
    assert last.startswith(
        "error: lalm-sfuda: teacher predictions:calm.jsonl gave no usable answer for any of the "
        "8 target clips (24 answers are not in the label set angry, happy, neutral, sad); nothing "
        "to train on"
    ), last
