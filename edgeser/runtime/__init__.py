"""The on-device runtime: ONNX Runtime + numpy only (never torch)."""

from .distribution import Distribution
from .model_file import OnnxModel
from .recognizer import DEFAULT_MODEL, FileResult, Recognizer
from .stream import EmotionStream, StreamEvent

__all__ = ["Recognizer", "EmotionStream", "StreamEvent", "Distribution", "OnnxModel", "FileResult", "DEFAULT_MODEL"]
