"""Student -> self-describing ONNX, checked for parity against torch."""

from .onnx_export import ParityError, export_onnx

__all__ = ["export_onnx", "ParityError"]
