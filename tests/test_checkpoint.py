"""Checkpoints and training states: exact round trips of the safe (safetensors + tagged JSON) format,
and refusal -- without running anything -- of pickles, garbage, empty and truncated files, through the
library and the real CLI (issue 9, items 1 and 7)."""

from __future__ import annotations

import collections
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeser.adapt.checkpoint import (
    CHECKPOINT_FORMAT,
    decode_tree,
    encode_tree,
    load_model,
    load_state,
    read_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    save_state,
)
from edgeser.adapt.model import EmotionNet, ModelConfig
from edgeser.demo import demo_manifest
from edgeser.errors import ModelError

TINY = {"channels": 16, "bottleneck": 16, "dilations": (1, 2)}


def same(a, b) -> bool:
    """Exact equality: same types all the way down, same dtypes and shapes, same bits (NaN == NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.contiguous().reshape(-1).view(torch.uint8).tolist()
            == b.contiguous().reshape(-1).view(torch.uint8).tolist()
        )
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and np.shape(a) == np.shape(b) and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(type(k) is type(kb) for k, kb in zip(a, b))
            and all(same(a[k], b[k]) for k in a)
            and same(getattr(a, "_metadata", None), getattr(b, "_metadata", None))
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def roundtrip(obj):
    tensors: dict = {}
    tree = json.loads(json.dumps(encode_tree(obj, tensors)))
    return decode_tree(tree, tensors)


# ---------------------------------------------------------------------------------- pure encoding


def test_encoding_of_known_values():
    tensors: dict = {}
    tree = encode_tree({"a": (1, float("nan"), -float("inf")), 3: None, "l": [True, "x", 2**127 + 1]}, tensors)
    assert tree == {
        "$dict": [
            ["a", {"$tuple": [1, {"$float": "nan"}, {"$float": "-inf"}]}],
            [3, None],
            ["l", [True, "x", 2**127 + 1]],
        ]
    }
    assert tensors == {}
    tree = encode_tree({"w": torch.arange(3), "x": np.float64(0.5), "$k": 1.5}, tensors, "p:")
    assert tree == {"$dict": [["w", {"$tensor": "p:0"}], ["x", {"$npscalar": "p:1", "dtype": "<f8"}], ["$k", 1.5]]}
    assert list(tensors) == ["p:0", "p:1"] and tensors["p:1"].dtype == torch.float64 and tensors["p:1"].shape == ()
    assert encode_tree({"plain": {"k": 1}}, {}) == {"plain": {"k": 1}}


VALUES = {
    "none": None,
    "bools": [True, False],
    "str": 'näïve "quoted" $tag',
    "empty": ["", [], (), {}],
    "ints": [0, -1, 2**64 + 3, -(2**127) - 5, 2**128 - 1],
    "floats": [0.1, -0.0, 1e-310, 1.7976931348623157e308, float("nan"), float("inf"), -float("inf")],
    "int_keys": {0: {"step": torch.tensor(3.0)}, 7: {"x": 1}, -2: "neg"},
    "mixed_keys": {1: "a", "1": "b", (2, "t"): "c", None: "d", False: "e", 2.5: "f"},
    "dollar": {"$tensor": "not a tag", "$float": "nan"},
    "tuples": (1, (2.5, (None,)), [3, (4,)]),
    "betas": (0.9, 0.999),
    "tensors": [
        torch.randn(3, 4),
        torch.arange(5, dtype=torch.int64),
        torch.get_rng_state(),
        torch.tensor(True),
        torch.tensor([True, False]),
        torch.tensor(2.5),
        torch.zeros(0, 3),
        torch.randn(2).to(torch.bfloat16),
        torch.tensor([1, 2], dtype=torch.int8),
        torch.tensor([65535], dtype=torch.uint16),
        torch.tensor([float("nan"), float("inf")], dtype=torch.float16),
        torch.randn(4, 3).t(),
    ],
    "arrays": [
        np.array([[0.5, np.nan], [np.inf, -0.0]]),
        np.arange(6, dtype=np.int8).reshape(2, 3),
        np.array([2**64 - 1], dtype=np.uint64),
        np.array([True, False]),
        np.array(7, dtype=np.int32),
        np.zeros((0, 4), np.float32),
        np.array([1.5, 2.5], dtype=">f8"),
        np.arange(10.0)[::3],
    ],
    "scalars": [np.float64(np.nan), np.float32(0.1), np.int64(-5), np.uint8(255), np.bool_(True), np.float16(1.5)],
    "numpy_rng": np.random.default_rng(12345).bit_generator.state,
}


def test_every_kind_of_value_roundtrips_exactly():
    back = roundtrip(VALUES)
    assert same(back, VALUES)
    assert type(back["tuples"][1][1]) is tuple and type(back["int_keys"]) is dict and 7 in back["int_keys"]
    assert back["arrays"][6].dtype.str == ">f8" and back["arrays"][0].flags.writeable


def test_module_and_optimizer_states_roundtrip_exactly():
    net = EmotionNet(ModelConfig(labels=["a", "b"], **TINY))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10)
    net(torch.randn(2, 4000)).sum().backward()
    opt.step()
    sched.step()
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    sgd.step()
    state = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "sgd": sgd.state_dict(),
        "rng": rng_state(np.random.default_rng(3)),
    }
    back = roundtrip(state)
    assert same(back, state)
    assert type(back["model"]) is collections.OrderedDict and back["model"]._metadata == state["model"]._metadata
    assert type(back["optimizer"]["param_groups"][0]["betas"]) is tuple
    assert all(type(k) is int for k in back["optimizer"]["state"])


@pytest.mark.parametrize(
    "bad",
    [
        object(),
        {"p": __import__("pathlib").Path("x")},
        [1, {2: {3j}}],
        np.array(["a"]),
        torch.nn.Parameter(torch.zeros(1)),
        1j,
        np.array([1j]),
        collections.namedtuple("P", "a")(1),
    ],
)
def test_values_it_cannot_store_exactly_are_refused_at_save(bad):
    with pytest.raises(TypeError, match="cannot store"):
        encode_tree({"k": bad}, {})


@pytest.mark.parametrize(
    "tree",
    [
        {"$tensor": "missing"},
        {"$float": "1.0"},
        {"$bogus": 1},
        {"$tuple": 3},
        {"$dict": [[1]]},
        {"$ndarray": "0", "dtype": "O"},
        {"$ndarray": "0", "dtype": "<i8"},
        {"$npscalar": "1", "dtype": "<f4"},
        {"$tensor": "0", "$tuple": []},
    ],
)
def test_malformed_trees_are_value_errors(tree):
    with pytest.raises(ValueError):
        decode_tree(tree, {"0": torch.zeros(2), "1": torch.zeros(2)})


# ------------------------------------------------------------------------------------ files


def _net() -> EmotionNet:
    torch.manual_seed(0)
    return EmotionNet(ModelConfig(labels=["angry", "happy", "neutral", "sad"], **TINY)).eval()


def test_checkpoint_roundtrip(tmp_path):
    net = _net()
    summary = {"history": [{"epoch": 1, "val_ua": float("nan")}], "betas": (0.9, 0.999), "n": np.int64(3)}
    save_checkpoint(tmp_path / "m.pt", net, **summary)
    ckpt = read_checkpoint(tmp_path / "m.pt")
    assert set(ckpt) == {"format", "config", "state_dict", "summary"} and ckpt["format"] == CHECKPOINT_FORMAT
    assert ckpt["config"] == net.cfg.to_dict() and same(ckpt["summary"], summary)
    assert same(ckpt["state_dict"], {k: v for k, v in net.state_dict().items()})
    x = torch.randn(1, 8000)
    assert torch.equal(load_model(tmp_path / "m.pt")(x), net(x))
    # the weights keep their names: any safetensors reader gets them
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "m.pt"))) >= set(net.state_dict())
    assert not list(tmp_path.glob("*.tmp"))


def test_state_roundtrip_and_resumed_rng(tmp_path):
    rng = np.random.default_rng(7)
    rng.random(3)
    torch.manual_seed(5)
    state = {**VALUES, "rng": rng_state(rng), "epoch": 2}
    save_state(tmp_path / "s.pt.state", state)
    want = (rng.random(4), torch.rand(4))
    back = load_state(tmp_path / "s.pt.state")
    assert same(back, state)
    rng2 = np.random.default_rng(0)
    restore_rng_state(rng2, back["rng"])
    got = (rng2.random(4), torch.rand(4))
    assert np.array_equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert load_state(tmp_path / "none.state") is None


def _evil(path, marker):
    """A torch.save file whose unpickling would create ``marker`` (the audit's repro)."""
    import os

    evil = type("E", (), {"__reduce__": lambda s: (os.system, (f"touch {marker}",))})
    torch.save({"format": "edgeser-checkpoint-1", "x": evil()}, path)


def _bad_files(tmp_path):
    save_checkpoint(tmp_path / "good.pt", _net())
    good = (tmp_path / "good.pt").read_bytes()
    files = {
        "empty": b"",
        "garbage": b"this is not a model at all\n" * 20,
        "short": b"\x01\x02",
        "cut_in_header": good[:40],
        "cut_in_data": good[:-100],
        "zeros": bytes(4096),
        "json_only": b'{"a": 1}',
        "bad_json": (30).to_bytes(8, "little") + b"{" + b"x" * 29,
    }
    for name, data in files.items():
        (tmp_path / f"{name}.pt").write_bytes(data)
    torch.save(
        {"format": "edgeser-checkpoint-1", "config": {}, "state_dict": {}, "summary": {}}, tmp_path / "old_format.pt"
    )
    _evil(tmp_path / "evil.pt", tmp_path / "PWNED")
    save_state(tmp_path / "a_state.pt", {"epoch": 1})
    return [*files, "old_format", "evil", "a_state"]


def test_read_checkpoint_refuses_everything_else_in_one_line(tmp_path):
    for name in _bad_files(tmp_path):
        path = tmp_path / f"{name}.pt"
        with pytest.raises(ModelError) as e:
            load_model(path)
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg, (name, msg)
    assert "pickle" in str(pytest.raises(ModelError, read_checkpoint, tmp_path / "evil.pt").value)
    assert "empty" in str(pytest.raises(ModelError, read_checkpoint, tmp_path / "empty.pt").value)
    assert "truncated" in str(pytest.raises(ModelError, read_checkpoint, tmp_path / "cut_in_header.pt").value)
    with pytest.raises(ModelError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(ModelError, match="folder"):
        read_checkpoint(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_load_state_refuses_everything_else_and_says_fresh_starts_over(tmp_path):
    names = _bad_files(tmp_path)
    save_checkpoint(tmp_path / "a_checkpoint.pt", _net())
    for name in [*names[:-1], "a_checkpoint"]:
        path = tmp_path / f"{name}.pt"
        with pytest.raises(ModelError) as e:
            load_state(path)
        msg = str(e.value)
        assert str(path) in msg and "--fresh" in msg and "\n" not in msg, (name, msg)
    assert not (tmp_path / "PWNED").exists()


def test_weights_that_do_not_fit_the_config_are_a_model_error(tmp_path):
    net = _net()
    save_checkpoint(tmp_path / "m.pt", net)
    other = EmotionNet(ModelConfig(labels=["a", "b"], **TINY))
    save_checkpoint(tmp_path / "o.pt", other)
    # graft the 2-label weights under the 4-label config
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tmp_path / "m.pt"), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(tmp_path / "o.pt")), str(tmp_path / "mix.pt"), metadata=meta)
    with pytest.raises(ModelError, match="do not fit"):
        load_model(tmp_path / "mix.pt")


def test_train_resumed_after_an_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch, demo_clips_list):
    """The state round trip is exact enough for ``train`` to resume bit-identically (its config check
    compares tuples, its optimizer state has int keys and tuples, the numpy RNG 128-bit ints)."""
    import edgeser.adapt.engine as engine
    import edgeser.adapt.train as tr

    cfg = tr.TrainConfig(epochs=3, batch_size=4, model=dict(TINY))
    tr.train(demo_clips_list, None, tmp_path / "full.pt", cfg, progress=False)
    real, calls = engine.save_state, []

    def crash_after_first_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(engine, "save_state", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        tr.train(demo_clips_list, None, tmp_path / "cut.pt", cfg, progress=False)
    assert load_state(tmp_path / "cut.pt.state")["epoch"] == 1
    saved = []
    monkeypatch.setattr(engine, "save_state", lambda path, state: (saved.append(state["epoch"]), real(path, state)))
    res = tr.train(demo_clips_list, None, tmp_path / "cut.pt", cfg, progress=False)
    assert saved == [2, 3] and [h["epoch"] for h in res.history] == [1, 2, 3]  # resumed, not restarted
    full, cut = load_state(tmp_path / "full.pt.state"), load_state(tmp_path / "cut.pt.state")
    for key in ("model", "optimizer", "schedule", "rng", "epoch", "identity"):
        assert same(cut[key], full[key]), key
    assert same(read_checkpoint(tmp_path / "cut.pt")["state_dict"], read_checkpoint(tmp_path / "full.pt")["state_dict"])


# ---------------------------------------------------------------------------------------- CLI


def cli(*args, cwd=None, rc=1):
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
    )
    assert r.returncode == rc, (r.returncode, r.stdout, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr and "interrupted" not in r.stderr
    return r


def test_export_of_a_pickle_runs_nothing(tmp_path):
    """The audit's repro, through the real CLI."""
    _evil(tmp_path / "evil.pt", "PWNED")
    r = cli("export", "evil.pt", "-o", "x.onnx", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: evil.pt: a pickle"), r.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "x.onnx").exists()


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "src.pt"
    save_checkpoint(out, _net())
    return out


def _plant(state_path, kind, marker):
    if kind == "pickle":
        _evil(state_path, marker)
    elif kind == "empty":
        state_path.write_bytes(b"")
    else:  # a real state cut short by a full disk, say
        save_state(state_path, {"epoch": 1, "model": _net().state_dict()})
        state_path.write_bytes(state_path.read_bytes()[:-500])


@pytest.mark.parametrize("kind", ["pickle", "empty", "truncated"])
def test_train_refuses_a_bad_state_file_and_names_it(tmp_path, kind):
    out = tmp_path / "out.pt"
    _plant(tmp_path / "out.pt.state", kind, tmp_path / "PWNED")
    r = cli("train", "--train", demo_manifest(), "--out", out, "--epochs", "1", "--batch-size", "4")
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {out}.state: ") and lines[-1].endswith("--fresh (resume=False) starts over")
    assert not (tmp_path / "PWNED").exists() and not out.exists()


@pytest.mark.parametrize("kind", ["pickle", "empty", "truncated"])
@pytest.mark.parametrize("method", ["shot", "mifuse"])
def test_adapt_refuses_a_bad_state_file_and_names_it(tmp_path, tiny_source, kind, method):
    out = tmp_path / "student.pt"
    _plant(tmp_path / "student.pt.state", kind, tmp_path / "PWNED")
    extra = ["--lalm-predictions", _predictions(tmp_path)] if method == "mifuse" else []
    r = cli(
        "adapt",
        "--source-model",
        tiny_source,
        "--target",
        demo_manifest(),
        "--method",
        method,
        "--out",
        out,
        "--epochs",
        "1",
        *extra,
    )
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {out}.state: ") and "--fresh" in lines[-1], r.stderr
    assert not (tmp_path / "PWNED").exists()


def _predictions(tmp_path):
    from pathlib import Path

    from edgeser.manifest import read_manifest

    path = tmp_path / "preds.jsonl"
    with open(path, "w") as f:
        f.writelines(
            json.dumps({"path": str(Path(c.path).resolve()), "labels": ["angry", "sad", "happy"]}) + "\n"
            for c in read_manifest(demo_manifest())
        )
    return path


def test_fresh_starts_over_past_a_bad_state(tmp_path, tiny_source):
    out = tmp_path / "student.pt"
    _plant(tmp_path / "student.pt.state", "pickle", tmp_path / "PWNED")
    cli(
        "adapt",
        "--source-model",
        tiny_source,
        "--target",
        demo_manifest(),
        "--method",
        "shot",
        "--out",
        out,
        "--epochs",
        "1",
        "--fresh",
        rc=0,
    )
    assert load_state(tmp_path / "student.pt.state")["epoch"] == 1 and read_checkpoint(out)["summary"]["epochs"] == 1
    assert not (tmp_path / "PWNED").exists()


def test_an_eof_error_is_not_reported_as_an_interruption(tmp_path):
    """click turns any EOFError raised in a command into Abort; main() must not call that "interrupted"."""
    code = (
        "import sys\nfrom edgeser import cli as c\n"
        "@c.cli.command()\ndef boom():\n    raise EOFError('Ran out of input')\n"
        "sys.argv = ['edgeser', 'boom']\nc.main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: unexpected EOFError: Ran out"), (
        r.returncode,
        r.stderr,
    )
