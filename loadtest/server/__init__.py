"""The server side: the embedded Triton launcher and its onnxruntime Python-based backend."""
