"""``edgeser adapt``: pick the method, fetch the LALM teacher's samples once (cached), adapt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import EdgeserError
from ..manifest import read_manifest
from .checkpoint import read_checkpoint
from .progress import log

METHODS = ("mifuse", "sfuda", "shot", "nrc")


def run_adaptation(source_model: str | Path, target: str | Path, method: str, out: str | Path,
                   make_lalm: Callable[[list[str]], object | None], epochs: int | None = None, seed: int = 0,
                   device: str | None = None, resume: bool = True, k_lalm: int = 5, progress: bool = True,
                   penalty_weight: float = 0.0) -> dict:
    """Adapt ``source_model`` to the clips of ``target`` with ``method``; returns the summary and a
    one-line ``message``. ``make_lalm(labels)`` builds the LALM (or predictions-file) teacher, or
    returns None when none was configured."""
    if penalty_weight and method not in ("mifuse", "sfuda"):
        raise EdgeserError("--penalty-weight needs an LALM method (mifuse, sfuda): its answers give the co-occurrences")
    if method not in METHODS:
        raise EdgeserError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    labels = read_checkpoint(source_model)["config"]["labels"]
    clips = read_manifest(target)
    unknown = sorted({c.label for c in clips if c.label and c.label not in labels})
    if unknown:
        log(f"note: target labels {unknown} are not in the model's label set; they are ignored", progress)
    over = {"seed": seed, "device": device, **({"epochs": epochs} if epochs else {})}
    if method in ("mifuse", "sfuda"):
        teacher = make_lalm(labels)
        if teacher is None:
            raise EdgeserError(f"--method {method} needs an LALM teacher: --lalm-url and --lalm-model, "
                               "or --lalm-predictions (or use --method shot / nrc)")
        log(f"asking the LALM teacher for {k_lalm} samples of each of {len(clips)} clips (cached)", progress)
        samples = teacher.sample(clips, k_lalm)
        usage = getattr(teacher, "usage", None)
        if usage is not None:
            log(usage.summary(), progress)
        from .mifuse import MIFuseConfig, mifuse_adapt, sfuda_adapt

        cfg = replace(MIFuseConfig(), k_lalm=k_lalm, penalty_weight=penalty_weight, **over)
        fn = mifuse_adapt if method == "mifuse" else sfuda_adapt
        res = fn(source_model, clips, samples, out, cfg, progress=progress, resume=resume)
    else:
        if method == "shot":
            from .baselines.shot import SHOTConfig as Config, shot_adapt as fn
        else:
            from .baselines.nrc import NRCConfig as Config, nrc_adapt as fn
        res = fn(source_model, clips, out, replace(Config(), **over), progress=progress, resume=resume)
    hist = res.get("history") or [{}]
    ua = hist[-1].get("target_ua")
    ua = ua.get("student") if isinstance(ua, dict) else ua  # MI-Fuse reports student/fused/teachers
    res["message"] = (f"wrote {out} ({method}, {len(clips)} target clips)"
                      + (f"; UA on the labelled target clips (reporting only): {ua:.4f}" if ua is not None else "")
                      + f"\nnext: edgeser export {out} -o {Path(out).with_suffix('.onnx')}")
    return res
