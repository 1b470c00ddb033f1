"""edgeser: on-device speech emotion recognition.

``from edgeser import Recognizer`` gives the runtime (ONNX Runtime + numpy). Training, adaptation and
export live in ``edgeser.adapt`` / ``edgeser.export`` and need the ``[adapt]`` extra (torch)."""

from ._version import __version__
from .errors import EdgeserError
from .runtime import Distribution, EmotionStream, Recognizer, StreamEvent

__all__ = ["Recognizer", "EmotionStream", "StreamEvent", "Distribution", "EdgeserError", "__version__"]
