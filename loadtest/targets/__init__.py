"""Targets: what a query is sent to. Only this package imports tritonclient, aiohttp, onnxruntime."""

from loadtest.targets.base import ModelSpec, Target, TensorSpec

__all__ = ["ModelSpec", "Target", "TensorSpec"]
