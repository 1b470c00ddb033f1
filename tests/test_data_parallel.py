"""Data-parallel training (issue 11, item 2): real ``torchrun`` runs of 2 CPU processes over gloo -- the
collective helpers on known values, gradients that really are shared (both processes end with the same
weights), the CLI command of the docs against a loopback LALM (asked once, by rank 0), and a run stopped on
2 processes that resumes on 1."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeser.adapt.distributed import World, world_from_env
from edgeser.demo import demo_manifest
from edgeser.errors import EdgeserError
from edgeser.testing.models import tiny_checkpoint
from edgeser.testing.openai_server import serve

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo process groups are tested on POSIX")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
EDGESER = shutil.which("edgeser", path=str(Path(sys.executable).parent))
N_CLIPS = 8  # the demo clips
ENV = {"OMP_NUM_THREADS": "1"}


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV})


def test_world_from_env(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert world_from_env() == World(0, 1, 0) and not world_from_env().parallel
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    w = world_from_env()
    assert (w.rank, w.size, w.local_rank, w.is_main) == (3, 4, 1, False)
    assert w.shard(np.arange(10)).tolist() == [3, 7]
    from edgeser.adapt.distributed import device_for

    assert device_for(w, "cpu") == "cpu" and device_for(World(), "cuda:1") == "cuda:1"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(EdgeserError, match="every process of this machine on one GPU"):
        device_for(w, "cuda:1")
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(EdgeserError, match="RANK=4 and WORLD_SIZE=4"):
        world_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(EdgeserError, match="RANK='x' is not an integer"):
        world_from_env()


COLLECTIVES = """
import json, sys, numpy as np, torch, torch.distributed as dist
from edgeser.adapt.distributed import (all_rows, current, join, leave, main_first, map_rows, mean_over,
                                       shared_batch_norm, whole_batch)
w = current()
opened = join(w, torch.device("cpu"))
seen = []
rows = map_rows(lambda ix: (seen.extend(ix.tolist()), np.stack([ix * 10.0, ix + 0.5], axis=1))[1], 7, w)
mean = mean_over([float(w.rank), 10.0 * (w.rank + 1)], w)
allr = all_rows(torch.arange(w.rank + 1) + 100 * w.rank, w).tolist()
t = torch.arange(w.rank + 1, dtype=torch.float32).add(10 * w.rank).requires_grad_(True)  # rows: [0], [10, 11]
g = whole_batch(t, w)
(g ** 2).sum().backward()  # each process's loss is the same; the gather's backward sums their gradients
bn = torch.nn.BatchNorm1d(1)
x = torch.tensor([[0.0], [2.0]]) + 4 * w.rank  # the whole batch: 0, 2, 4, 6 (mean 3, variance 5)
with shared_batch_norm(bn, w):
    y = bn(x)
restored = "forward" not in vars(bn)
order = []
with main_first(w):
    order.append(__import__("time").monotonic())
json.dump({"rank": w.rank, "seen": seen, "rows": rows.tolist(), "mean": mean, "all": allr, "t": order[0],
           "g": g.tolist(), "grad": t.grad.tolist(),
           "bn": y.detach().flatten().tolist(), "rm": bn.running_mean.item(), "rv": bn.running_var.item(),
           "restored": restored},
          open(sys.argv[1] + f"/r{w.rank}.json", "w"))
leave(opened)
"""


def test_collectives_on_known_values(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    r = run([*TORCHRUN, str(script), str(tmp_path)])
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"r{i}.json").read_text()) for i in (0, 1))
    assert r0["seen"] == [0, 2, 4, 6] and r1["seen"] == [1, 3, 5]  # each computed its share only
    want = [[i * 10.0, i + 0.5] for i in range(7)]
    assert r0["rows"] == want and r1["rows"] == want  # and both got every row, in order
    assert r0["mean"] == r1["mean"] == [0.5, 15.0]
    assert r0["all"] == r1["all"] == [0, 100, 101]
    assert r0["t"] <= r1["t"]  # rank 0 ran the block first
    assert r0["g"] == r1["g"] == [0.0, 10.0, 11.0]
    # d/dt of sum(g^2) is 2t in each of the 2 processes, summed: 4t (DistributedDataParallel then halves it)
    assert r0["grad"] == [0.0] and r1["grad"] == [40.0, 44.0]
    # batch norm over both shares, as one process over [0, 2, 4, 6]
    z = (np.array([0.0, 2.0, 4.0, 6.0]) - 3.0) / np.sqrt(5.0 + 1e-5)
    np.testing.assert_allclose(r0["bn"] + r1["bn"], z, rtol=1e-5)
    assert r0["rm"] == pytest.approx(0.3) and r1["rv"] == pytest.approx(0.9 + 0.1 * 5.0 * 4 / 3)
    assert r0["restored"] and r1["restored"]


FIT = """
import hashlib, json, sys
import numpy as np, torch
from edgeser.adapt.distributed import current
from edgeser.adapt.engine import fit
from edgeser.adapt.mifuse import FusionMethod, MIFuseConfig
from edgeser.adapt.teachers import FixedSamples
from edgeser.adapt.teachers.classifier import EMATeacher
from edgeser.testing.models import demo_clip_list

src, out = sys.argv[1], sys.argv[2]
clips = demo_clip_list()
rng = np.random.default_rng(0)
answers = rng.dirichlet(np.ones(4), size=(len(clips), 3))
ema = EMATeacher(k=2, resample_every=1)
m = FusionMethod(src, clips, [FixedSamples(answers, labels=["angry", "happy", "neutral", "sad"]), ema],
                 MIFuseConfig(epochs=3, batch_size=8, device="cpu"))
res = fit(m, out, progress=False)
h = hashlib.sha256()
for k, v in sorted(ema.net.state_dict().items()):
    h.update(k.encode() + v.numpy().tobytes())
h.update(np.ascontiguousarray(m.targets).tobytes())
json.dump({"ema": h.hexdigest(), "processes": res.summary["processes"], "epochs": res.epochs},
          open(out + f".rank{current().rank}.json", "w"))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("src") / "src.pt")


def test_two_processes_share_their_gradients(tmp_path, source):
    """Each process trains on half of every batch; with the gradients averaged both end with the same
    weights (the EMA teacher follows the student step by step) and the same fused targets."""
    script = tmp_path / "fit.py"
    script.write_text(FIT)
    out = tmp_path / "student.pt"
    r = run([*TORCHRUN, str(script), str(source), str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (json.loads(Path(f"{out}.rank{i}.json").read_text()) for i in (0, 1))
    assert r0["ema"] == r1["ema"]
    assert r0["processes"] == r1["processes"] == 2 and r0["epochs"] == 3
    assert out.exists() and Path(f"{out}.state").exists()


@pytest.fixture()
def lalm():
    """A counting loopback LALM."""
    state = {"calls": 0}
    lock = threading.Lock()

    def answer(audio, prompt, temperature, n):
        with lock:
            state["calls"] += 1
        return ["angry" if float(np.sqrt(np.mean(audio**2))) > 0.08 else "sad"] * n

    srv, _, url = serve(answer)
    yield url, state
    srv.shutdown()
    srv.server_close()


def adapt_args(source: Path, url: str, out: Path, epochs: int) -> list[str]:
    return ["adapt", "--source-model", str(source), "--target", str(demo_manifest()), "--lalm-url", url,
            "--lalm-model", "m", "--out", str(out), "--epochs", str(epochs), "--device", "cpu"]  # fmt: skip


@pytest.mark.skipif(EDGESER is None, reason="the edgeser console script is not installed next to this Python")
def test_torchrun_adapt_cli_then_export_and_load(tmp_path, source, lalm):
    url, state = lalm
    out = tmp_path / "student.pt"
    r = run([*TORCHRUN, "--no-python", EDGESER, *adapt_args(source, url, out, 2)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data-parallel over 2 processes (gloo, cpu)" in r.stderr
    assert r.stdout.count("wrote ") == 1  # rank 0 alone prints the result
    assert state["calls"] == N_CLIPS  # rank 0 asked; rank 1 read the cache
    # the state does not depend on the number of processes: one process finds the run done
    r = run([sys.executable, "-m", "edgeser.cli", *adapt_args(source, url, out, 2)])
    assert r.returncode == 0 and "already trained for 2 epochs" in r.stderr, r.stderr[-2000:]
    onnx = tmp_path / "student.onnx"
    r = run([sys.executable, "-m", "edgeser.cli", "export", str(out), "-o", str(onnx)])
    assert r.returncode == 0, r.stderr[-2000:]
    from edgeser.runtime import Recognizer

    rec = Recognizer.load(onnx)
    res = rec.predict(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    assert abs(float(res.probs.sum()) - 1.0) < 1e-5 and list(res.labels) == list(rec.labels)


@pytest.mark.skipif(EDGESER is None, reason="the edgeser console script is not installed next to this Python")
def test_stopped_on_two_processes_resumes_on_one(tmp_path, source, lalm):
    import os

    url, _ = lalm
    out, epochs = tmp_path / "student.pt", 30
    cmd = [*TORCHRUN, "--no-python", EDGESER, *adapt_args(source, url, out, epochs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    state = Path(f"{out}.state")
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # waits on a condition: the first epoch's state
    assert state.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "interrupted in epoch" in err, err[-3000:]
    r = run([sys.executable, "-m", "edgeser.cli", *adapt_args(source, url, out, epochs)])
    assert r.returncode == 0, r.stderr[-3000:]
    done = int(r.stderr.split("resuming from")[1].split("after epoch ")[1].split("/")[0])
    assert 1 <= done < epochs
    from edgeser.adapt.checkpoint import read_checkpoint

    assert read_checkpoint(out)["summary"]["epochs"] == epochs


@pytest.mark.skipif(EDGESER is None, reason="the edgeser console script is not installed next to this Python")
def test_torchrun_train_cli(tmp_path):
    out = tmp_path / "source.pt"
    m = str(demo_manifest())
    r = run([*TORCHRUN, "--no-python", EDGESER, "train", "--train", m, "--val", m, "--out", str(out), "--epochs", "2",
             "--batch-size", "4", "--device", "cpu"])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data-parallel over 2 processes (gloo, cpu)" in r.stderr and r.stdout.count("wrote ") == 1
    from edgeser.adapt.checkpoint import read_checkpoint

    summary = read_checkpoint(out)["summary"]
    assert summary["processes"] == 2 and summary["best_val_ua"] is not None
