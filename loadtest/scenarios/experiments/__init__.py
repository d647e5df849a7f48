"""The experiments that set runs side by side: a mix of models alone and together (mix_*.py) and
Triton against native onnxruntime (compare_run.py)."""
