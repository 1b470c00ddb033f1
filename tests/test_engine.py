"""The one training loop (edgeser.adapt.engine) and what every method gets from it: one-clip batches
skipped, resume, the same summary keys, one writer of training state, one method registry."""

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeser.adapt.baselines import NRCConfig, SHOTConfig, nrc_adapt, shot_adapt
from edgeser.adapt.checkpoint import load_model, load_state, read_checkpoint
from edgeser.adapt.engine import FitResult
from edgeser.adapt.mifuse import EMATeacher, MIFuseConfig, mifuse_adapt, sfuda_adapt
from edgeser.adapt.registry import METHODS, get_method
from edgeser.adapt.teachers import FixedSamples
from edgeser.adapt.train import TrainConfig, train
from edgeser.errors import EdgeserError
from edgeser.testing.models import TINY, untrained_checkpoint

REPO = Path(__file__).resolve().parents[1]
LABELS = ["angry", "happy", "neutral", "sad"]


def tiny_train_cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 4, "crop_s": 1.0, "model": dict(TINY), "device": "cpu", **kw})


def weights(path):
    return load_model(path).state_dict()


def test_training_skips_a_one_clip_batch(demo_clips_list, tmp_path):
    # 9 clips in batches of 4: the last batch holds one clip, on which batch norm cannot train (this raised
    # "Expected more than 1 value per channel when training" before supervised training skipped it too)
    clips = demo_clips_list + demo_clips_list[:1]
    res = train(clips, None, tmp_path / "nine.pt", tiny_train_cfg(epochs=1), progress=False)
    assert isinstance(res, FitResult) and res.epochs == 1 and np.isfinite(res.history[0]["loss"])
    assert res.summary["train_clips"] == 9 and res.best_val_ua is None
    with pytest.raises(EdgeserError, match="batch size >= 2"):
        train(clips, None, tmp_path / "one.pt", tiny_train_cfg(batch_size=1), progress=False)


def test_training_resumes_to_the_same_weights_and_keeps_the_best_epoch(demo_clips_list, tmp_path):
    clips = demo_clips_list
    best_of = tiny_train_cfg(select="best")
    full = train(clips, clips, tmp_path / "full.pt", best_of, progress=False)

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(clips, clips, tmp_path / "cut.pt", best_of, progress=False, on_epoch=stop)
    res = train(clips, clips, tmp_path / "cut.pt", best_of, progress=False)
    assert [h["epoch"] for h in res.history] == [1, 2]
    a, b = weights(tmp_path / "full.pt"), weights(tmp_path / "cut.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    best = max(range(2), key=lambda i: (full.history[i]["val_ua"], -i))
    assert full.summary["best_epoch"] == best + 1 and full.best_val_ua == full.history[best]["val_ua"]
    # other training data (labels included: they are the supervision) -> a fresh run, not a resume
    relabelled = [dataclasses.replace(c, label="sad") for c in clips[:1]] + clips[1:]
    seen = []
    train(relabelled, clips, tmp_path / "cut.pt", best_of, progress=False, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2]


def test_select_last_keeps_the_last_epoch_and_mixup_changes_the_steps(demo_clips_list, tmp_path):
    clips = demo_clips_list
    last = train(clips, clips, tmp_path / "last.pt", tiny_train_cfg(epochs=3, select="last"), progress=False)
    assert last.summary["best_epoch"] == 3 and last.best_val_ua == last.history[-1]["val_ua"]
    assert all("val_ua" in h for h in last.history)  # validation is still measured and reported
    mixed = train(clips, None, tmp_path / "mixed.pt", tiny_train_cfg(mixup=0.4), progress=False)
    plain = train(clips, None, tmp_path / "plain.pt", tiny_train_cfg(mixup=0.0), progress=False)
    assert mixed.history[0]["loss"] != plain.history[0]["loss"]
    a, b = weights(tmp_path / "mixed.pt"), weights(tmp_path / "plain.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="select must be"):
        train(clips, clips, tmp_path / "x.pt", tiny_train_cfg(select="first"), progress=False)
    with pytest.raises(ValueError, match="mixup must be >= 0"):
        train(clips, None, tmp_path / "x.pt", tiny_train_cfg(mixup=-1.0), progress=False)


def test_every_method_writes_the_same_summary_keys(demo_clips_list, tmp_path):
    clips = demo_clips_list
    source = untrained_checkpoint(tmp_path / "source.pt", LABELS, data="demo clips (EmoDB, CC0)", model_card="card")
    rng = np.random.default_rng(0)
    lalm = FixedSamples(np.eye(4)[rng.integers(0, 4, (len(clips), 3))], labels=LABELS)
    mcfg = MIFuseConfig(epochs=1, batch_size=4, crop_s=1.0, device="cpu")
    results = {
        "train": train(clips, clips, tmp_path / "t.pt", tiny_train_cfg(epochs=1), progress=False),
        "mi-fuse": mifuse_adapt(source, clips, [lalm, EMATeacher(k=2)], tmp_path / "m.pt", mcfg, progress=False),
        "lalm-sfuda": sfuda_adapt(source, clips, lalm, tmp_path / "s.pt", mcfg, progress=False),
        "classifier-self-training": mifuse_adapt(
            source, clips, [EMATeacher(k=2)], tmp_path / "c.pt", mcfg, progress=False
        ),
        "shot": shot_adapt(source, clips, tmp_path / "shot.pt", SHOTConfig(epochs=1, crop_s=1.0), progress=False),
        "nrc": nrc_adapt(source, clips, tmp_path / "nrc.pt", NRCConfig(epochs=1, crop_s=1.0), progress=False),
    }
    keys = {name: set(read_checkpoint(r.model)["summary"]) for name, r in results.items()}
    assert all(k == keys["train"] for k in keys.values()), keys
    for name, r in results.items():
        assert r.method == name == r.summary["method"]
        assert r.summary["labels"] == LABELS and r.summary["epochs"] == 1
        if name != "train":  # a student inherits the source's data and model card
            assert (r.summary["data"], r.summary["model_card"]) == ("demo clips (EmoDB, CC0)", "card")
            assert r.summary["source"] == str(source) and r.summary["best_epoch"] == 1


def test_training_state_is_written_by_one_function():
    """Only edgeser.adapt.engine._save_state calls save_state (checkpoint.py defines it)."""
    callers = []
    for path in (REPO / "edgeser").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if (
                        isinstance(node, ast.Call)
                        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "save_state"
                    ):
                        callers.append((path.relative_to(REPO).as_posix(), fn.name))
    assert sorted(set(callers)) == [("edgeser/adapt/engine.py", "_save_state")]


def test_state_of_other_settings_is_ignored_and_labels_do_not_count(demo_clips_list, tmp_path):
    clips = demo_clips_list
    source = untrained_checkpoint(tmp_path / "source.pt", LABELS)
    cfg = SHOTConfig(epochs=1, crop_s=1.0)
    shot_adapt(source, clips, tmp_path / "a.pt", cfg, progress=False)
    st = load_state(tmp_path / "a.pt.state")
    assert st["identity"] == read_checkpoint(tmp_path / "a.pt")["summary"]["identity"]
    # the same clips without labels: labels are never part of the identity -> resumed (nothing left to do)
    seen = []
    unlabelled = [dataclasses.replace(c, label=None) for c in clips]
    shot_adapt(source, unlabelled, tmp_path / "a.pt", cfg, progress=False, on_epoch=seen.append)
    assert seen == []
    # the clips in another order: other data -> a fresh run
    shot_adapt(source, clips[::-1], tmp_path / "a.pt", cfg, progress=False, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [1]


def test_the_registry_is_the_one_method_list():
    assert list(METHODS) == ["sfuda", "shot", "nrc", "mifuse"]
    for spec in METHODS.values():
        assert dataclasses.is_dataclass(spec.config) and callable(spec.run)
    with pytest.raises(EdgeserError, match="unknown method"):
        get_method("tent")
    with pytest.raises(EdgeserError, match="methods that have: sfuda, mifuse"):
        get_method("shot").make_config(penalty_weight=0.5)
    # the CLI's --method choices and the benchmark's rows come from it
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", "adapt", "--help"], capture_output=True, text=True, timeout=120
    )
    assert "[sfuda|shot|nrc|mifuse]" in " ".join(r.stdout.split())
    code = (
        "import sys, json; sys.path[:0] = sys.argv[1:]; import run; "
        "print(json.dumps([[s.name for s in run.ADAPT.values()], run.METHODS]))"
    )
    paths = [str(REPO / "benchmarks" / "cross_corpus"), str(REPO / "benchmarks")]
    r = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120, cwd=REPO)
    names, rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert names == list(METHODS)
    assert rows[2:6] == ["lalm_sfuda", "shot", "nrc", "mi_fuse"]  # the registry's keys, as its results are named
