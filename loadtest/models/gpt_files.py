"""The files the suite decoder needs beside its model.onnx: its tokenizer and its serving code.

- `tokenizer.json`: the byte-level BPE trained at build time (models/bpe.py), from the same seed
  as the weights;
- `model.py`: the Triton Python-backend model (python_backend/decoder_model.py), decoupled;
- `decoding.py`: the generation loop model.py loads (models/decoding.py, copied as it is, so
  Triton and loadtest's native target run the same code).

Copied rather than imported from loadtest because a model repository must stand alone: the
official Triton image serves it without loadtest installed (it needs numpy, onnxruntime and
tokenizers in its Python).
"""

from __future__ import annotations

from pathlib import Path

TOKENIZER = "tokenizer.json"
MODEL_PY = "model.py"
DECODING_PY = "decoding.py"
NAMES = (TOKENIZER, MODEL_PY, DECODING_PY)
HERE = Path(__file__).resolve().parent
SOURCES = {
    MODEL_PY: HERE / "python_backend" / "decoder_model.py",
    DECODING_PY: HERE / "decoding.py",
}


def side_files(seed: int, vocab: int) -> dict[str, bytes]:
    """{file name: bytes} for the decoder's version directory."""
    from loadtest.models import bpe  # tokenizers is imported when a decoder is built, not before

    files = {TOKENIZER: bpe.tokenizer_json(seed, vocab)}
    files.update({name: path.read_bytes() for name, path in SOURCES.items()})
    return files
