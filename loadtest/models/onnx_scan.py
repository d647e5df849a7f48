"""Former home of `scan_model`, now in loadtest.models.onnx_io (with the streamed writer).

Kept so existing imports keep working; new code imports `scan_model` from loadtest.models.
"""

from loadtest.models.onnx_io import ScanError, scan_model

__all__ = ["ScanError", "scan_model"]
