"""Teachers built from options: the one place where the command line (``adapt``, ``annotate``), the
benchmark and the Python API turn "an endpoint and a model" or "a predictions file" into a fixed teacher."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import EdgeserError
from .base import Teacher


class TeacherOptionsError(EdgeserError):
    """Options that do not describe one teacher (a usage error: the CLI exits with 2)."""


@dataclass
class LALMOptions:
    """How to reach the LALM teacher: an OpenAI-compatible endpoint (``url`` + ``model``) or a JSON-lines
    ``predictions`` file obtained elsewhere; sampling ``temperature``, the SQLite answer ``cache_path``
    (None: the caller's default), parallel requests (``concurrency``), seconds to wait for one response
    (``timeout_s``), progress lines, a cost guard (``max_calls``) and rate limits."""

    url: str | None = None
    model: str | None = None
    predictions: str | Path | None = None
    temperature: float = 1.0
    cache_path: str | Path | None = None
    concurrency: int = 4
    timeout_s: float = 60.0
    progress: bool = True
    #: stop cleanly after this many HTTP calls (answers so far stay cached); None: no limit
    max_calls: int | None = None
    #: request and token rate limits per minute (None: none)
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


def lalm_teacher_from_options(
    labels: Sequence[str], options: LALMOptions, default_cache: str | Path | None = None
) -> Teacher | None:
    """The fixed teacher ``options`` describe, answering in ``labels`` order, or None when they describe
    none. Raises :class:`TeacherOptionsError` for contradictory options."""
    o = options
    if o.predictions and (o.url or o.model):
        raise TeacherOptionsError("give either --lalm-predictions or --lalm-url/--lalm-model, not both")
    if o.predictions:
        from .predictions import PredictionsTeacher

        return PredictionsTeacher(o.predictions, list(labels))
    if o.url and o.model:
        from .lalm import LALMTeacher

        return LALMTeacher(
            o.url,
            o.model,
            list(labels),
            temperature=o.temperature,
            cache_path=o.cache_path or default_cache,
            max_concurrency=o.concurrency,
            timeout_s=o.timeout_s,
            progress=o.progress,
            max_calls=o.max_calls,
            requests_per_minute=o.requests_per_minute,
            tokens_per_minute=o.tokens_per_minute,
        )
    if o.url or o.model:
        raise TeacherOptionsError("--lalm-url and --lalm-model go together")
    return None
