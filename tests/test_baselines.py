"""SHOT and NRC baselines: the pure pieces on hand-made values, then short end-to-end runs on the demo
clips with a tiny model (checkpoints, frozen head, labels never used, resume)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from edgeser.adapt.baselines import (
    NRCConfig,
    SHOTConfig,
    nrc_adapt,
    nrc_loss,
    nrc_neighbours,
    param_groups,
    schedule_factor,
    shot_adapt,
    shot_pseudo_labels,
)
from edgeser.adapt.checkpoint import load_model, read_checkpoint
from edgeser.adapt.data import n_steps
from edgeser.adapt.model import EmotionNet, ModelConfig
from edgeser.demo import demo_manifest
from edgeser.manifest import read_manifest
from edgeser.testing.models import TINY, untrained_checkpoint

# ------------------------------------------------------------------------------ SHOT pseudo-labels


def test_shot_pseudo_labels_fix_wrong_argmax_on_two_clusters():
    # two obvious clusters (along x and along y); the model's argmax is wrong on the last clip of each
    feats = np.array([[3, 0.1], [3, -0.1], [2.5, 0], [0.1, 3], [-0.1, 3], [0, 2.5]])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.1, 0.9], [0.2, 0.8], [0.6, 0.4]])
    assert probs.argmax(axis=1).tolist() == [0, 0, 1, 1, 1, 0]
    labels = shot_pseudo_labels(feats, probs)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert labels.dtype == np.int64


def test_shot_pseudo_labels_drop_classes_without_members():
    # class 2 is never the argmax, so it has no centroid; without dropping it, the clip in the middle
    # (direction (1, 1)) would go to class 2's soft centroid, which sits among all the clips
    feats = np.array([[3, 0.1], [3, -0.1], [0.1, 3], [-0.1, 3], [2, 2]])
    probs = np.array([[0.6, 0.1, 0.3], [0.6, 0.1, 0.3], [0.1, 0.6, 0.3], [0.1, 0.6, 0.3], [0.4, 0.35, 0.25]])
    assert shot_pseudo_labels(feats, probs, threshold=-1).tolist()[-1] == 2  # every class kept
    labels = shot_pseudo_labels(feats, probs)
    assert 2 not in labels.tolist()
    assert labels[:4].tolist() == [0, 0, 1, 1]


def test_shot_pseudo_labels_use_the_appended_one_and_cosine():
    # (1, 0) and (10, 0) have the same direction but not after appending 1 and normalising:
    # (1, 0, 1)/sqrt2 vs (10, 0, 1)/sqrt101; the hand-made centroids are the clips themselves
    feats = np.array([[1.0, 0.0], [10.0, 0.0]])
    probs = np.eye(2)
    assert shot_pseudo_labels(feats, probs).tolist() == [0, 1]


# ----------------------------------------------------------------------------------- NRC neighbours


def _circle(degrees):
    a = np.deg2rad(np.asarray(degrees, np.float64))
    return torch.tensor(np.stack([np.cos(a), np.sin(a)], axis=1), dtype=torch.float32)


def test_nrc_neighbours_reciprocal_weights_on_a_circle():
    # unit vectors at these angles: similarity = cos(angle difference), so neighbours are nearest angles
    bank = _circle([0, 10, 25, 100, 115, 210])
    near, w, nn_, w_nn = nrc_neighbours(bank, torch.tensor([0, 3]), K=3, KK=2)
    # clip 0 (0 deg): nearest 10 (#1), 25 (#2), 100 (#3)
    #   #1's two nearest: 0, 25 -> [0, 2] contains 0 -> reciprocal
    #   #2's two nearest: 10, 0 -> [1, 0] contains 0 -> reciprocal
    #   #3's two nearest: 115, 25 -> [4, 2] -> not reciprocal
    # clip 3 (100 deg): nearest 115 (#4), 25 (#2), 10 (#1)
    #   #4's: 100, 25 -> [3, 2] reciprocal; #2's: [1, 0] no; #1's: [0, 2] no
    assert near.tolist() == [[1, 2, 3], [4, 2, 1]]
    assert nn_.tolist() == [[[0, 2], [1, 0], [4, 2]], [[3, 2], [1, 0], [0, 2]]]
    assert np.allclose(w.numpy(), [[1, 1, 0.1], [1, 0.1, 0.1]])
    assert w_nn.shape == (2, 3, 2) and torch.all(w_nn == 0.1)


def test_nrc_neighbours_exclude_self_even_with_a_duplicate():
    bank = _circle([0, 0, 90, 180])  # clip 1 duplicates clip 0
    near, w, nn_, _ = nrc_neighbours(bank, torch.tensor([0]), K=1, KK=1)
    assert near.tolist() == [[1]] and nn_.tolist() == [[[0]]] and w.tolist() == [[1.0]]


def test_nrc_loss_hand_computed():
    probs = torch.tensor([[0.75, 0.25]], requires_grad=True)
    bank = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    near, w = torch.tensor([[1, 2]]), torch.tensor([[1.0, 0.1]])
    nn_, w_nn = torch.tensor([[[0], [0]]]), torch.full((1, 2, 1), 0.1)
    loss, parts = nrc_loss(probs, bank, near, w, nn_, w_nn, epsilon=0.0)
    # neighbours: -(1 * 0.75 + 0.1 * 0.25); expanded: -(0.1 * 0.5 + 0.1 * 0.5); diversity: sum p log p
    div = 0.75 * np.log(0.75) + 0.25 * np.log(0.25)
    assert parts["neighbours"] == pytest.approx(-0.775)
    assert parts["expanded"] == pytest.approx(-0.1)
    assert loss.item() == pytest.approx(-0.875 + div, abs=1e-6)
    loss.backward()
    assert probs.grad is not None


# ---------------------------------------------------------------------------- shared pieces


def test_param_groups_and_schedule():
    net = EmotionNet(ModelConfig(labels=["a", "b"], **TINY))
    groups = param_groups(net, 1e-2, 0.1, 1.0, None)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", pytest.approx(1e-3)), ("bottleneck", 1e-2)]
    assert not any(p.requires_grad for p in net.classifier.parameters())
    n = sum(p.numel() for g in groups for p in g["params"]) + sum(p.numel() for p in net.classifier.parameters())
    assert n == sum(p.numel() for p in net.parameters())
    assert schedule_factor(0, 100) == 1.0
    assert schedule_factor(100, 100) == pytest.approx(11**-0.75)
    assert n_steps(129, 64) == 2 and n_steps(130, 64) == 3 and n_steps(1, 64) == 0


# ------------------------------------------------------------------------------ end to end

EPOCHS = 2
METHODS = {
    "shot": (shot_adapt, SHOTConfig(epochs=EPOCHS, crop_s=1.5, device="cpu", eval_batch_size=8)),
    "nrc": (nrc_adapt, NRCConfig(epochs=EPOCHS, crop_s=1.5, device="cpu", eval_batch_size=8)),
}


@pytest.fixture(scope="module")
def clips():
    return read_manifest(demo_manifest())


@pytest.fixture(scope="module")
def source(clips, tmp_path_factory):
    return untrained_checkpoint(
        tmp_path_factory.mktemp("src") / "source.pt", sorted({c.label for c in clips}), data="demo clips (EmoDB, CC0)"
    )


@pytest.fixture(scope="module")
def runs(clips, source, tmp_path_factory):
    """One uninterrupted, labelled run of each method (shared by the tests below)."""
    out = {}
    for name, (fn, cfg) in METHODS.items():
        path = tmp_path_factory.mktemp(name) / f"{name}.pt"
        out[name] = (path, fn(source, clips, path, cfg, progress=False))
    return out


def _weights(path):
    return {k: v.clone() for k, v in load_model(path).state_dict().items()}


@pytest.mark.parametrize("name", list(METHODS))
def test_end_to_end_writes_a_loadable_checkpoint(runs, source, name):
    path, result = runs[name]
    net = load_model(path)
    assert isinstance(net, EmotionNet) and net.cfg.channels == 16
    with torch.no_grad():
        logits = net(torch.randn(2, net.cfg.receptive_field + 800) * 0.1)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    summary = read_checkpoint(path)["summary"]
    assert summary == result.summary
    assert summary["method"] == name and summary["epochs"] == EPOCHS
    assert summary["data"] == "demo clips (EmoDB, CC0)"  # carried over from the source
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert 0.0 <= summary["initial"]["target_ua"] <= 1.0  # the source model, before adapting
    assert all(0.0 <= h["target_ua"] <= 1.0 for h in summary["history"])
    assert all(np.isfinite(h["loss"]) for h in summary["history"])
    assert result.final_target_ua == summary["history"][-1]["target_ua"]
    # the backbone and the bottleneck really moved
    before, after = _weights(source), _weights(path)
    assert not torch.equal(before["stem.0.weight"], after["stem.0.weight"])
    assert not torch.equal(before["bottleneck_layer.0.weight"], after["bottleneck_layer.0.weight"])
    assert path.with_name(path.name + ".state").exists()


def test_shot_keeps_the_head_frozen_and_nrc_trains_it(runs, source):
    before = _weights(source)
    shot, nrc = _weights(runs["shot"][0]), _weights(runs["nrc"][0])
    for k in ("classifier.weight", "classifier.bias"):
        assert torch.equal(before[k], shot[k])
    assert not torch.equal(before["classifier.weight"], nrc["classifier.weight"])  # as in the NRC reference
    hist = read_checkpoint(runs["shot"][0])["summary"]["history"]
    assert sum(hist[0]["pseudo_label_counts"]) == 8 and "pseudo_label_ua" in hist[0]


def test_source_network_object_is_not_modified(clips, tmp_path):
    torch.manual_seed(1)
    net = EmotionNet(ModelConfig(labels=sorted({c.label for c in clips}), **TINY))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = replace(METHODS["shot"][1], epochs=1)
    shot_adapt(net, clips, tmp_path / "a.pt", cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("name", list(METHODS))
def test_labels_are_never_used(runs, clips, source, tmp_path, name):
    fn, cfg = METHODS[name]
    unlabelled = [replace(c, label=None) for c in clips]
    result = fn(source, unlabelled, tmp_path / "u.pt", cfg, progress=False)
    assert result.final_target_ua is None
    with_labels, without = _weights(runs[name][0]), _weights(tmp_path / "u.pt")
    assert with_labels.keys() == without.keys()
    for k in with_labels:
        assert torch.equal(with_labels[k], without[k]), k
    history = read_checkpoint(tmp_path / "u.pt")["summary"]["history"]
    assert [h["epoch"] for h in history] == [1, 2] and "target_ua" not in history[-1]


@pytest.mark.parametrize("name", list(METHODS))
def test_labels_never_used_with_report_labels_off(runs, clips, source, tmp_path, name):
    fn, cfg = METHODS[name]
    result = fn(source, clips, tmp_path / "q.pt", cfg, progress=False, report_labels=False)
    assert result.final_target_ua is None and "target_ua" not in result.summary["initial"]
    ref, got = _weights(runs[name][0]), _weights(tmp_path / "q.pt")
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("name", list(METHODS))
def test_resume_after_an_interruption_gives_the_same_model(runs, clips, source, tmp_path, name):
    fn, cfg = METHODS[name]
    out = tmp_path / "r.pt"

    def crash_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fn(source, clips, out, cfg, progress=False, on_epoch=crash_after_first_epoch)
    assert read_checkpoint(out)["summary"]["epochs"] == 1
    result = fn(source, clips, out, cfg, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    ref, got = _weights(runs[name][0]), _weights(out)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in runs[name][1].history]
    # a finished run resumed again does nothing and returns the same result
    again = fn(source, clips, out, cfg, progress=False)
    assert again.history == result.history and again.summary == result.summary
    # settings changed: the state is ignored and the run starts over
    other = replace(cfg, epochs=1)
    assert [h["epoch"] for h in fn(source, clips, out, other, progress=False).history] == [1]


def test_foreign_labels_switch_the_report_off_and_nrc_needs_enough_clips(clips, source, tmp_path):
    renamed = [replace(c, label="anger" if c.label == "angry" else c.label) for c in clips]
    cfg = replace(METHODS["shot"][1], epochs=1)
    assert shot_adapt(source, renamed, tmp_path / "s.pt", cfg, progress=False).final_target_ua is None
    from edgeser.errors import ManifestError

    with pytest.raises(ManifestError, match="needs more than 5"):
        nrc_adapt(source, clips[:5], tmp_path / "n.pt", replace(METHODS["nrc"][1], epochs=1), progress=False)
