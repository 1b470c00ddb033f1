"""The adaptation methods: the one list that ``edgeser adapt --method``, :mod:`edgeser.adapt.run` and the
cross-corpus benchmark read. Importing it does not import torch (the CLI builds its options from it).

A method's runner has the signature
``run(source, target_clips, out, cfg, teacher=None, progress=True, resume=True, report_labels=True,
on_epoch=None) -> FitResult``; ``teacher`` is the fixed (LALM) teacher built from the command line's
options, given only to methods with ``needs_teacher``. Adding a method = one module with its
:class:`~edgeser.adapt.engine.Method`, config and runner, plus one line below (see DEVELOPERS.md)."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import EdgeserError


@dataclass(frozen=True)
class MethodSpec:
    """One adaptation method: ``name`` (the ``--method`` value), ``key`` (its name in checkpoints and
    results), ``title`` (for tables), ``help``, whether it needs a fixed (LALM) teacher, and where its config
    class and runner live (``"module:attribute"``, imported on first use)."""

    name: str
    key: str
    title: str
    help: str
    needs_teacher: bool
    config_ref: str
    run_ref: str

    @property
    def config(self) -> type:
        """The method's config dataclass."""
        return _load(self.config_ref)

    @property
    def run(self) -> Callable[..., Any]:
        """The method's runner (see the module docstring)."""
        return _load(self.run_ref)

    def make_config(self, **settings: Any) -> Any:
        """The config with ``settings`` applied; a setting the method does not have is an error."""
        fields = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(k for k in settings if k not in fields)
        if unknown:
            users = [
                s.name
                for s in METHODS.values()
                if all(k in {f.name for f in dataclasses.fields(s.config)} for k in unknown)
            ]
            raise EdgeserError(
                f"--method {self.name} has no setting {', '.join(unknown)}"
                + (f" (methods that have: {', '.join(users)})" if users else "")
            )
        return self.config(**settings)


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


METHODS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        MethodSpec(
            "sfuda",
            "lalm-sfuda",
            "LALM-SFUDA",
            "the student on the LALM's pseudo-labels alone",
            True,
            "edgeser.adapt.mifuse:MIFuseConfig",
            "edgeser.adapt.mifuse:run_sfuda",
        ),
        MethodSpec(
            "shot",
            "shot",
            "SHOT",
            "frozen head, information maximisation + clustering pseudo-labels (no LALM)",
            False,
            "edgeser.adapt.baselines.shot:SHOTConfig",
            "edgeser.adapt.baselines.shot:run_shot",
        ),
        MethodSpec(
            "nrc",
            "nrc",
            "NRC",
            "reciprocal-neighbour consistency + diversity (no LALM)",
            False,
            "edgeser.adapt.baselines.nrc:NRCConfig",
            "edgeser.adapt.baselines.nrc:run_nrc",
        ),
        MethodSpec(
            "mifuse",
            "mi-fuse",
            "MI-Fuse",
            "LALM + EMA classifier teachers, fused by uncertainty",
            True,
            "edgeser.adapt.mifuse:MIFuseConfig",
            "edgeser.adapt.mifuse:run_mifuse",
        ),
    )
}
DEFAULT_METHOD = "mifuse"


def get_method(name: str) -> MethodSpec:
    """The method called ``name`` (its ``--method`` value), or a one-line error listing the others."""
    try:
        return METHODS[name]
    except KeyError:
        raise EdgeserError(f"unknown method {name!r} (one of {', '.join(METHODS)})") from None
