"""``edgeser adapt``: look the method up in the registry, build its LALM teacher from the options (when it
needs one), adapt, and describe the result in a few lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import EdgeserError
from ..manifest import read_manifest
from .bundled import bundled_labels, is_bundled
from .checkpoint import read_checkpoint
from .engine import FitResult
from .registry import METHODS, get_method
from .teachers.factory import LALMOptions, lalm_teacher_from_options


def source_labels(source_model: str | Path | None) -> list[str]:
    """The label set of a source: the bundled model's (None or ``"default"``) or the checkpoint's."""
    return bundled_labels() if is_bundled(source_model) else read_checkpoint(source_model)["config"]["labels"]


def run_adaptation(
    source_model: str | Path | None,
    target: str | Path,
    method: str,
    out: str | Path,
    lalm: LALMOptions | None = None,
    *,
    k_lalm: int = 5,
    epochs: int | None = None,
    seed: int = 0,
    device: str | None = None,
    workers: int | None = None,
    penalty_weight: float | None = None,
    lalm_budget: int | str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> FitResult:
    """Adapt ``source_model`` (a checkpoint; None or ``"default"``: the bundled model) to the clips of
    ``target`` (manifest or folder) with the registered ``method``. ``lalm`` describes the LALM teacher for the methods that need one (its answers are
    cached next to ``out`` unless ``lalm.cache_path`` says otherwise). Settings left None keep the
    method's defaults; a setting the method does not have is an error."""
    spec = get_method(method)
    settings: dict[str, Any] = {
        "seed": seed, "device": device, "epochs": epochs, "penalty_weight": penalty_weight, "workers": workers
    }  # fmt: skip
    if spec.needs_teacher:
        settings["k_lalm"] = k_lalm
        settings["lalm_budget"] = lalm_budget
    elif lalm_budget is not None:
        raise EdgeserError(f"--lalm-budget applies to methods with an LALM teacher, not --method {spec.name}")
    cfg = spec.make_config(**{k: v for k, v in settings.items() if v is not None})
    labels = source_labels(source_model)
    clips = read_manifest(target)
    teacher = None
    if spec.needs_teacher:
        teacher = lalm_teacher_from_options(
            labels, lalm or LALMOptions(progress=progress), Path(out).with_suffix(".lalm-cache.sqlite")
        )
        if teacher is None:
            raise EdgeserError(
                f"--method {spec.name} needs an LALM teacher: --lalm-url and --lalm-model, or "
                f"--lalm-predictions (or use --method "
                f"{' / '.join(n for n, m in METHODS.items() if not m.needs_teacher)})"
            )
    try:
        return spec.run(source_model, clips, out, cfg, teacher=teacher, progress=progress, resume=resume)
    finally:
        close = getattr(teacher, "close", None)
        if callable(close):
            close()


def adaptation_message(result: FitResult) -> str:
    """What ``edgeser adapt`` prints at the end: what was written, the reported UA, warnings (skipped
    files, teachers that contributed nothing) and the next command."""
    return result.message + f"\nnext: edgeser export {result.model} -o {Path(result.model).with_suffix('.onnx')}"
