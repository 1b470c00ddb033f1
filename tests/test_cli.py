"""The CLI as a user runs it: real subprocesses, real files, exit codes and one-line errors."""

import json
import subprocess
import sys

from edgeser.adapt.checkpoint import read_checkpoint
from edgeser.adapt.train import TrainConfig
from edgeser.demo import demo_clips, demo_manifest


def run(*args, check_rc=None, env=None):
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )
    if check_rc is not None:
        assert r.returncode == check_rc, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_predict_table_and_bad_file(tiny_onnx, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    r = run("predict", demo_clips()[0], bad, demo_clips()[1], "--model", tiny_onnx, check_rc=1)
    assert "ERROR" in r.stdout and demo_clips()[1].name in r.stdout and demo_clips()[0].name in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 files failed")


def test_predict_jsonl(tiny_onnx):
    r = run("predict", *demo_clips()[:3], "--model", tiny_onnx, "--jsonl", check_rc=0)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert abs(sum(row["distribution"].values()) - 1) < 1e-3 and row["top"] in row["distribution"]


def test_stream_fast_jsonl(tiny_onnx):
    r = run("stream", demo_clips()[3], "--model", tiny_onnx, "--fast", "--jsonl", "--hop", "0.5", check_rc=0)
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(events) >= 8  # a 5.3 s clip, a distribution every 0.5 s after the first second
    assert all(e["speech"] is False or abs(sum(e["distribution"].values()) - 1) < 1e-3 for e in events)


def test_one_line_errors(tmp_path, tiny_onnx):
    r = run("predict", tmp_path / "missing.wav", "--model", tmp_path / "missing.onnx", check_rc=1)
    assert r.stderr.strip() == f"error: {tmp_path / 'missing.onnx'}: no such model file"
    r = run("export", tmp_path / "nope.pt", "-o", tmp_path / "x.onnx", check_rc=1)
    assert len(r.stderr.strip().splitlines()) == 1 and "no such checkpoint" in r.stderr
    r = run("stream", tmp_path / "nope.wav", "--model", tiny_onnx, check_rc=1)
    assert "no such file" in r.stderr
    r = run("predict", check_rc=2)  # usage error
    r = run("listen", "--device", "no-such-device-xyz", "--model", tiny_onnx, check_rc=1)
    assert len(r.stderr.strip().splitlines()) == 1


def test_train_export_evaluate_roundtrip(tmp_path):
    pt, onnx_path = tmp_path / "m.pt", tmp_path / "m.onnx"
    run(
        "train",
        "--train",
        demo_manifest(),
        "--val",
        demo_manifest(),
        "--out",
        pt,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        check_rc=0,
    )
    assert pt.exists()
    # rerun resumes from the saved state: nothing left to train
    r = run(
        "train",
        "--train",
        demo_manifest(),
        "--val",
        demo_manifest(),
        "--out",
        pt,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        check_rc=0,
    )
    assert "resuming" in r.stderr
    # the last epoch is kept by default, the validation UA is reported; --select best needs validation clips
    assert "(epoch 1, validation UA" in r.stdout
    best = run("train", "--train", demo_manifest(), "--out", tmp_path / "b.pt", "--select", "best", check_rc=1)
    assert best.stderr.strip() == "error: --select best needs validation clips (--val)"
    # room and telephone augmentation are on by default and each can be turned off; the CLI's defaults are
    # TrainConfig's (the CLI states them as literals so that --help needs no torch)
    recorded = read_checkpoint(pt)["summary"]["config"]
    assert {k: recorded[k] for k in ("reverb_prob", "band_prob")} == {"reverb_prob": 0.3, "band_prob": 0.2}
    assert {k: recorded[k] for k in ("reverb_prob", "band_prob", "mixup", "select")} == {
        k: getattr(TrainConfig(), k) for k in ("reverb_prob", "band_prob", "mixup", "select")
    }
    off = tmp_path / "off.pt"
    run("train", "--train", demo_manifest(), "--out", off, "--epochs", "1", "--reverb-prob", "0", "--band-prob", "0")
    assert read_checkpoint(off)["summary"]["config"]["reverb_prob"] == 0.0
    assert read_checkpoint(off)["summary"]["config"]["band_prob"] == 0.0
    bad = run("train", "--train", demo_manifest(), "--out", off, "--band-prob", "2", check_rc=2)
    assert "--band-prob" in bad.stderr
    r = run("export", pt, "-o", onnx_path, check_rc=0)
    assert "parity" in r.stdout and onnx_path.exists()
    for model in (onnx_path, pt):
        out = tmp_path / f"eval_{model.suffix[1:]}"
        r = run("evaluate", model, demo_manifest(), "--out", out, check_rc=0)
        rep = json.loads((out / "report.json").read_text())
        assert {"ua", "macro_f1", "ece", "nll", "brier", "confusion_matrix"} <= set(rep)
        assert (out / "confusion_matrix.png").stat().st_size > 1000
    r = run("evaluate", onnx_path, demo_manifest(), "--out", tmp_path / "soft", "--reference", "listener", check_rc=0)
    rep = json.loads((tmp_path / "soft" / "report.json").read_text())
    assert "js" in rep and "multilabel_f1" in rep


def test_train_rejects_unknown_labels(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(f"path,label\n{demo_clips()[0]},bored\n")
    r = run("train", "--train", m, "--out", tmp_path / "x.pt", "--labels", "angry,sad", check_rc=1)
    assert "bored" in r.stderr and len(r.stderr.strip().splitlines()) == 1
