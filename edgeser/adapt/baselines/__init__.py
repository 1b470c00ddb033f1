"""Source-free domain-adaptation baselines on EmotionNet, in the same loop and protocol as MI-Fuse:
SHOT (:func:`shot_adapt`) and NRC (:func:`nrc_adapt`). Each writes an ordinary EmotionNet checkpoint."""

from .common import AdaptConfig, param_groups, schedule_factor
from .nrc import NRCConfig, NRCMethod, nrc_adapt, nrc_loss, nrc_neighbours
from .shot import SHOTConfig, SHOTMethod, information_maximization, shot_adapt, shot_pseudo_labels

__all__ = [
    "AdaptConfig",
    "SHOTConfig",
    "SHOTMethod",
    "shot_adapt",
    "shot_pseudo_labels",
    "information_maximization",
    "NRCConfig",
    "NRCMethod",
    "nrc_adapt",
    "nrc_neighbours",
    "nrc_loss",
    "param_groups",
    "schedule_factor",
]
