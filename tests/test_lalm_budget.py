"""The LALM call budget (issue 8, item 4): which clips are chosen, and that only those reach the LALM."""

import subprocess
import sys

import numpy as np
import pytest

from edgeser.adapt.budget import entropy_rows, parse_budget, quotas, select_clips
from edgeser.adapt.checkpoint import read_checkpoint
from edgeser.adapt.mifuse import EMATeacher, MIFuseConfig, _check_cfg, mifuse_adapt
from edgeser.demo import demo_manifest
from edgeser.errors import EdgeserError
from edgeser.manifest import read_manifest
from edgeser.testing.models import untrained_checkpoint
from edgeser.testing.openai_server import serve

LABELS = ["angry", "happy", "neutral", "sad"]


def test_parse_budget():
    assert parse_budget(None, 10) is None
    assert parse_budget(3, 10) == 3 and parse_budget("3", 10) == 3
    assert parse_budget("25%", 10) == 3  # rounded up
    assert parse_budget("100%", 10) == 10 and parse_budget(50, 10) == 10
    for bad in ("0", "-2", "0%", "150%", "many", "2.5"):
        with pytest.raises(EdgeserError, match="LALM budget"):
            parse_budget(bad, 10)


def test_quotas_by_hand():
    # one per predicted class first (largest first), then in proportion by largest remainder
    assert quotas(np.array([6, 3, 1, 0]), 4).tolist() == [2, 1, 1, 0]
    assert quotas(np.array([6, 3, 1, 0]), 2).tolist() == [1, 1, 0, 0]
    assert quotas(np.array([50, 30, 20, 0]), 10).tolist() == [5, 3, 2, 0]
    assert quotas(np.array([5, 5]), 10).tolist() == [5, 5]
    assert quotas(np.array([1, 9]), 5).tolist() == [1, 4]  # never more than a class has


def test_select_clips_stratified_least_sure_first():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8], [0.4, 0.6]])
    # class 0 predicted for clips 0-2, class 1 for 3-4; budget 2: one each, the least sure of each class
    assert select_clips(p, 2).tolist() == [2, 4]
    # budget 3: quotas (2, 1) -> clips 2, 1 of class 0 (entropy order) and 4 of class 1
    assert select_clips(p, 3).tolist() == [1, 2, 4]
    assert select_clips(p, 9).tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(entropy_rows(np.array([[1.0, 0.0], [0.5, 0.5]])), [0.0, np.log(2)])


def test_select_clips_rules():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.95, 0.05], [0.2, 0.8], [0.4, 0.6]])
    least = select_clips(p, 2, seed=0)
    assert least.tolist() == [2, 5]  # the least sure of each predicted class
    for seed in range(5):  # stratified: still one per predicted class, but not by entropy
        strat = select_clips(p, 2, seed=seed, rule="stratified")
        assert sorted(int(p[i].argmax()) for i in strat) == [0, 1]
    picks = {tuple(select_clips(p, 2, seed=s, rule="stratified").tolist()) for s in range(20)}
    assert len(picks) > 1 and any(pick != (2, 5) for pick in picks)  # the order within a class is the seed's
    randoms = [select_clips(p, 2, seed=s, rule="random") for s in range(40)]
    assert all(len(r) == 2 and len(set(r.tolist())) == 2 for r in randoms)
    assert any(all(p[i].argmax() == 0 for i in r) for r in randoms)  # no strata: both may be of one class
    assert select_clips(p, 2, seed=3, rule="random").tolist() == select_clips(p, 2, seed=3, rule="random").tolist()
    with pytest.raises(ValueError, match="budget rule"):
        select_clips(p, 2, rule="cheapest")
    with pytest.raises(ValueError, match="budget_rule"):  # refused when a run is set up, before any work
        _check_cfg(MIFuseConfig(lalm_budget="50%", budget_rule="cheapest"))


def test_ties_follow_the_seed():
    p = np.full((6, 2), 0.5)
    a, b = select_clips(p, 3, seed=0), select_clips(p, 3, seed=1)
    assert len(a) == len(b) == 3 and a.tolist() == select_clips(p, 3, seed=0).tolist()
    assert a.tolist() != b.tolist()


@pytest.fixture()
def counting_server():
    heard = []

    def answer(audio, prompt, temperature, n):
        heard.append(round(float(np.sum(audio**2)), 3))
        return ["angry" if float(np.sqrt(np.mean(audio**2))) > 0.08 else "sad"] * n

    server, _, url = serve(answer)
    yield url, heard
    server.shutdown()
    server.server_close()


def test_only_the_budgeted_clips_reach_the_lalm(tmp_path, counting_server):
    url, heard = counting_server
    source = untrained_checkpoint(tmp_path / "source.pt", LABELS)
    out = tmp_path / "student.pt"
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", "adapt", "--source-model", source, "--target", demo_manifest(),
         "--lalm-url", url, "--lalm-model", "m", "--k-lalm", "2", "--epochs", "1", "--lalm-budget", "25%",
         "--out", out],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(set(heard)) == 2  # 25 % of the 8 demo clips, each heard once or more (n answers per call)
    assert "asking lalm:m for 2 samples of each of 2 (budget) of 8 clips" in r.stderr
    summary = read_checkpoint(out)["summary"]
    assert summary["config"]["lalm_budget"] == "25%"
    assert any("hear 2 of 8 clips" in n for n in summary["notes"])
    assert summary["details"]["fusion"]["covered"] == 8  # every clip still trains the student
    assert summary["details"]["fusion"]["teachers"]["lalm:m"]["coverage"] == pytest.approx(2 / 8)


def test_budget_in_the_api_and_a_bad_one(tmp_path, counting_server):
    url, heard = counting_server
    from edgeser.adapt.teachers import LALMOptions, lalm_teacher_from_options

    source = untrained_checkpoint(tmp_path / "source.pt", LABELS)
    clips = read_manifest(demo_manifest())
    lalm = lalm_teacher_from_options(LABELS, LALMOptions(url=url, model="m", cache_path=tmp_path / "c.sqlite"))
    cfg = MIFuseConfig(epochs=1, batch_size=4, crop_s=1.0, device="cpu", lalm_budget=3, k_lalm=1)
    res = mifuse_adapt(source, clips, [lalm, EMATeacher(k=2)], tmp_path / "s.pt", cfg, progress=False)
    assert len(set(heard)) == 3 and res.history[0]["trained_clips"] == 8
    with pytest.raises(EdgeserError, match="LALM budget"):
        mifuse_adapt(source, clips, [EMATeacher()], tmp_path / "x.pt", MIFuseConfig(lalm_budget="lots"))


def test_a_positional_teacher_keeps_only_the_budgeted_rows(tmp_path):
    from edgeser.adapt.teachers import FixedSamples

    source = untrained_checkpoint(tmp_path / "source.pt", LABELS)
    clips = read_manifest(demo_manifest())
    votes = np.zeros((8, 2, 4))
    votes[:, :, 0] = 1.0
    cfg = MIFuseConfig(epochs=1, batch_size=4, crop_s=1.0, device="cpu", lalm_budget=3, k_lalm=2)
    res = mifuse_adapt(
        source, clips, [FixedSamples(votes, labels=LABELS), EMATeacher(k=2)], tmp_path / "s.pt", cfg, progress=False
    )
    assert res.summary["details"]["fusion"]["teachers"]["lalm"]["coverage"] == pytest.approx(3 / 8)
