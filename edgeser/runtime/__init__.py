"""The on-device runtime: ONNX Runtime + numpy only (never torch)."""

from .distribution import Distribution
from .events import EmotionCallbacks, TopTracker
from .incremental import IncrementalModel, IncrementalStream
from .load import load_model
from .model_file import OnnxModel
from .pcm import PCMFormat
from .recognizer import DEFAULT_MODEL, FileResult, Recognizer
from .speech import Gate, SpeechGate
from .stream import EmotionStream, StreamEvent

__all__ = [
    "Recognizer",
    "EmotionStream",
    "StreamEvent",
    "Distribution",
    "OnnxModel",
    "IncrementalModel",
    "IncrementalStream",
    "load_model",
    "FileResult",
    "DEFAULT_MODEL",
    "Gate",
    "SpeechGate",
    "PCMFormat",
    "EmotionCallbacks",
    "TopTracker",
    "astream",
]


def __getattr__(name: str):
    # astream imports asyncio (35 ms, 7 MB): loaded when first used, not by every ``import edgeser`` (issue 10)
    if name == "astream":
        from .aio import astream

        return astream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
