"""The on-device runtime: ONNX Runtime + numpy only (never torch)."""

from .aio import astream
from .distribution import Distribution
from .events import EmotionCallbacks, TopTracker
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
    "FileResult",
    "DEFAULT_MODEL",
    "Gate",
    "SpeechGate",
    "PCMFormat",
    "EmotionCallbacks",
    "TopTracker",
    "astream",
]
