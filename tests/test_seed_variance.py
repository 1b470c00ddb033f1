"""The seed-variance benchmark's math: the weight soup and the split of the variance (known values)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_path = list(sys.path)
_spec = importlib.util.spec_from_file_location(
    "seed_variance", REPO / "benchmarks" / "cross_corpus" / "seed_variance.py"
)
seed_variance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_variance)  # type: ignore[union-attr]
# the script puts benchmarks/ and benchmarks/cross_corpus/ first on the path for its imports (run, common, standin);
# other tests need not see them
sys.path[:] = _path
for _name in ("run", "common", "standin"):
    sys.modules.pop(_name, None)


def _net(w: float, steps: int) -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(w)
        net[0].bias.fill_(-w)
        net[1].running_mean.fill_(2 * w)
    net[1].num_batches_tracked.fill_(steps)
    return net


def test_weight_soup_averages_floats_and_keeps_the_first_integer_buffers() -> None:
    soup = seed_variance.weight_soup([_net(1.0, 5), _net(2.0, 9), _net(6.0, 7)])
    assert torch.allclose(soup[0].weight, torch.full((1, 2), 3.0))
    assert torch.allclose(soup[0].bias, torch.tensor([-3.0]))
    assert torch.allclose(soup[1].running_mean, torch.tensor([6.0]))
    assert int(soup[1].num_batches_tracked) == 5
    assert not soup.training


def test_summarise_splits_source_and_adaptation_variance() -> None:
    # two source seeds, each adapted with two adaptation seeds (rows "a" and "b")
    cells = {
        "emodb_nemo": {
            0: {"ua": {"a": 40.0, "b": 42.0}, "ensemble": 41.0, "soup": 40.0, "within_std": 2.0},
            1: {"ua": {"a": 50.0, "b": 48.0}, "ensemble": 49.0, "soup": 52.0, "within_std": 1.0},
        }
    }
    s = seed_variance.summarise(cells, ["a", "b"])["emodb_nemo"]
    assert s["mean"] == {"a": 45.0, "b": 45.0, "ensemble": 45.0, "soup": 46.0}
    assert s["seed_std"]["a"] == pytest.approx(7.0710678)  # stdev of 40, 50
    assert s["seed_std"]["b"] == pytest.approx(4.2426407)
    assert s["within_std"] == 1.5
