"""Teachers: ``sample(clips, k) -> (N, K, C)`` class distributions (NaN rows where no sample). Fixed
teachers (:class:`Teacher`) are asked once; moving ones (:class:`MovingTeacher`, e.g. the EMA classifier in
:mod:`.classifier`, which needs torch) follow the student. :func:`lalm_teacher_from_options` builds the
LALM teacher from options."""

from .base import FixedSamples, MovingTeacher, Teacher
from .cache import AnswerCache, CacheKey
from .factory import LALMOptions, TeacherOptionsError, lalm_teacher_from_options
from .lalm import DEFAULT_PROMPT, LALMTeacher, LALMUsage, default_prompt
from .parsing import DEFAULT_SYNONYMS, LabelParser, parse_answer
from .predictions import PredictionsTeacher

__all__ = [
    "Teacher",
    "MovingTeacher",
    "FixedSamples",
    "LALMTeacher",
    "LALMUsage",
    "PredictionsTeacher",
    "AnswerCache",
    "CacheKey",
    "LabelParser",
    "parse_answer",
    "DEFAULT_SYNONYMS",
    "DEFAULT_PROMPT",
    "default_prompt",
    "LALMOptions",
    "TeacherOptionsError",
    "lalm_teacher_from_options",
]
