"""Teachers: ``sample(clips, k) -> (N, K, C)`` class distributions (NaN rows where no sample)."""

from .base import Teacher
from .cache import AnswerCache, CacheKey
from .lalm import DEFAULT_PROMPT, LALMTeacher, LALMUsage, default_prompt
from .parsing import DEFAULT_SYNONYMS, LabelParser, parse_answer
from .predictions import PredictionsTeacher

__all__ = ["Teacher", "LALMTeacher", "LALMUsage", "PredictionsTeacher", "AnswerCache", "CacheKey",
           "LabelParser", "parse_answer", "DEFAULT_SYNONYMS", "DEFAULT_PROMPT", "default_prompt"]
