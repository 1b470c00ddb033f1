"""Adapting from the bundled model (issue 8, item 6): no source checkpoint ships, only the ONNX file; the
source network is rebuilt from its weights and the whole flow -- adapt, export, load -- works without one."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeser.adapt.bundled import bundled_description, bundled_labels, is_bundled, load_bundled
from edgeser.adapt.checkpoint import read_checkpoint
from edgeser.adapt.data import load_clips
from edgeser.adapt.engine import load_source
from edgeser.adapt.from_onnx import calibrate_batchnorm
from edgeser.demo import demo_clips, demo_manifest
from edgeser.manifest import read_manifest
from edgeser.runtime import DEFAULT_MODEL, Recognizer
from edgeser.testing.openai_server import serve


@pytest.fixture(scope="module")
def wavs():
    return load_clips(read_manifest(demo_manifest()), 16000, progress=False)


def test_the_rebuilt_source_computes_what_the_bundled_onnx_computes(wavs):
    """The bundled file is the incremental graph with int8-stored weights; the net is rebuilt from its
    dequantized weights. Measured max |dp| over the 8 demo clips: 1.8e-7 (float32 rounding); the test
    allows 1e-5."""
    net, desc, summary = load_source(None)
    assert load_source("default")[1] == desc == bundled_description()
    assert desc.startswith("bundled default model edgeser-default.onnx (sha256 ")
    assert net.labels == bundled_labels() == Recognizer.load().labels
    assert "EmoDB" in summary["model_card"]
    rec = Recognizer.load()
    with torch.no_grad():
        for w in wavs:
            torch_p = torch.softmax(net.eval()(torch.from_numpy(w)[None]), dim=1)[0].numpy()
            onnx_p = np.asarray(rec.predict(w, 16000).probs)
            np.testing.assert_allclose(torch_p, onnx_p, atol=1e-5)


def test_calibration_keeps_the_eval_output(wavs):
    net = load_bundled()[0]
    x = torch.from_numpy(wavs[0])[None]
    with torch.no_grad():
        before = net.eval()(x)
        calibrate_batchnorm(net, wavs)
        after = net.eval()(x)
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)
    assert float(net.stem[1].running_var.mean()) != pytest.approx(1 - net.stem[1].eps)  # statistics were set


def test_is_bundled():
    assert is_bundled(None) and is_bundled("default")
    assert not is_bundled("default.pt") and not is_bundled(DEFAULT_MODEL)


def run(*args, rc=0):
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == rc, (r.returncode, r.stdout, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    return r


def test_adapt_without_a_source_export_and_load(tmp_path):
    """The user's whole flow: point at the audio and the LALM, adapt (no --source-model), export, load."""
    calls = []

    def answer(audio, prompt, temperature, n):
        calls.append(n)
        return ["angry" if float(np.sqrt(np.mean(audio**2))) > 0.08 else "sad"] * n

    server, _, url = serve(answer)
    try:
        student = tmp_path / "student.pt"
        flags = {"--target": demo_manifest(), "--lalm-url": url, "--lalm-model": "m", "--k-lalm": 2, "--epochs": 1}
        run("adapt", *[x for kv in flags.items() for x in kv], "--out", student)
    finally:
        server.shutdown()
        server.server_close()
    assert calls and student.exists()
    summary = read_checkpoint(student)["summary"]
    assert summary["source"] == bundled_description()
    assert "EmoDB" in summary["model_card"]
    onnx_path = tmp_path / "student.onnx"
    run("export", student, "-o", onnx_path)
    rec = Recognizer.load(onnx_path)
    assert rec.labels == bundled_labels()
    p = rec.predict_file(demo_clips()[0]).probs
    assert abs(float(np.sum(p)) - 1) < 1e-4
    r = run("predict", demo_clips()[0], "--model", onnx_path, "--jsonl")
    assert json.loads(r.stdout.splitlines()[0])
