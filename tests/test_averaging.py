"""Weight averaging (issue 8, item 3): the moving average on known values, and a run that scores and writes
its averaged weights, resumably."""

import numpy as np
import pytest
import torch

from edgeser.adapt.averaging import WeightAverage, decay_for
from edgeser.adapt.checkpoint import load_model, load_state
from edgeser.adapt.train import TrainConfig, train
from edgeser.testing.models import TINY


def test_decay_spans_the_horizon():
    assert decay_for(0.5, 100) == pytest.approx(0.98)
    assert decay_for(0.01, 50) == 0.0  # under one step: no averaging


def test_moving_average_on_known_values():
    net = torch.nn.BatchNorm1d(2)
    avg = WeightAverage(net, decay=0.75)
    with torch.no_grad():
        net.weight.fill_(5.0)  # started at 1
        net.running_mean.fill_(4.0)  # started at 0
    net.num_batches_tracked.fill_(3)
    avg.update(net)
    assert torch.allclose(avg.shadow["weight"], torch.full((2,), 2.0))  # 0.75 * 1 + 0.25 * 5
    assert torch.allclose(avg.shadow["running_mean"], torch.full((2,), 1.0))
    assert int(avg.shadow["num_batches_tracked"]) == 3  # integers follow the network
    with avg.applied(net):
        assert torch.allclose(net.weight, torch.full((2,), 2.0))
    assert torch.allclose(net.weight, torch.full((2,), 5.0))  # its own weights again


def cfg(**kw):
    return TrainConfig(
        **{"epochs": 2, "batch_size": 4, "crop_s": 1.0, "model": dict(TINY), "device": "cpu", "average": 0.5, **kw}
    )


def test_a_run_writes_its_averaged_weights_and_resumes_to_them(demo_clips_list, tmp_path):
    clips = demo_clips_list
    train(clips, None, tmp_path / "full.pt", cfg(), progress=False)
    state = load_state(tmp_path / "full.pt.state")
    written = load_model(tmp_path / "full.pt").state_dict()
    assert all(torch.equal(written[k], state["average"][k].to(written[k].dtype)) for k in written)
    trained = state["model"]
    assert not all(torch.equal(written[k], trained[k]) for k in written if written[k].dtype.is_floating_point)

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(clips, None, tmp_path / "cut.pt", cfg(), progress=False, on_epoch=stop)
    train(clips, None, tmp_path / "cut.pt", cfg(), progress=False)
    resumed = load_model(tmp_path / "cut.pt").state_dict()
    assert all(torch.equal(written[k], resumed[k]) for k in written)


def test_validation_scores_the_averaged_weights(demo_clips_list, tmp_path):
    # with validation clips the best epoch is chosen by the averaged network's UA: the checkpoint is that epoch's
    res = train(demo_clips_list, demo_clips_list, tmp_path / "v.pt", cfg(epochs=3, select="best"), progress=False)
    uas = [h["val_ua"] for h in res.history]
    assert res.best_val_ua == max(uas) and np.isfinite(uas).all()
