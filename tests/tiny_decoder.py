"""Writes the tiny random-weight decoder that `transformers serve` streams in the tests
(tests/openai_servers.py), deterministically, as a Hugging Face hub cache entry.

Run with the third-party server's own Python (it needs torch, transformers and tokenizers, which
loadtest never imports): `OPENAI_SERVER_VENV/bin/python tests/tiny_decoder.py DIRECTORY`.
No hub is reachable here, so nothing is downloaded: the weights are seeded, the tokenizer is
trained on seeded text. DIRECTORY becomes an `HF_HUB_CACHE` holding the repo MODEL_ID (the hub
layout `models--loadtest--tiny-llama/{refs/main,snapshots/<hash>/}`), so the server loads it by
name with HF_HUB_OFFLINE=1 and lists it on GET /v1/models (a plain folder path works for
completions, but /v1/models then fails with a 500: it only scans the hub cache).

The model: LlamaForCausalLM, 2 layers, hidden 64, 4 heads (2 KV heads), float32, greedy decoding.
The tokenizer: byte-level BPE, 512 tokens, trained on seeded lowercase words; its alphabet is
printable ASCII plus space and newline, with no special token at all, so
- every generated token decodes to visible text: one SSE chunk per token (transformers' stream
  skips a token only when it decodes to nothing), and
- there is no end-of-sequence token: every answer is exactly max_tokens long (finish_reason
  "length"), which is what `ignore_eos` asks of other servers. Characters outside that
  alphabet (é, emoji) are dropped from prompts by the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

MODEL_ID = "loadtest/tiny-llama"
SEED = 0
VOCAB_SIZE = 512
ALPHABET = [chr(code) for code in range(33, 127)] + ["Ġ", "Ċ"]  # byte-level: Ġ space, Ċ newline
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def _corpus(seed: int) -> list[str]:
    """Seeded lowercase words, like loadtest's own text prompts (engine/samples.py)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(30))
        for _ in range(300)
    ]


def write_snapshot(folder: Path) -> None:
    """The model, its generation config and its tokenizer, as transformers saves them."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, initial_alphabet=ALPHABET, special_tokens=[], show_progress=False
    )
    tokenizer.train_from_iterator(_corpus(SEED), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)

    torch.manual_seed(SEED)
    no_special = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        **no_special,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(do_sample=False, **no_special)
    model.save_pretrained(folder)


def build(cache: Path) -> Path:
    """Writes the hub cache entry under `cache` (replacing any) and returns its snapshot folder.
    The snapshot's name is a hash of its files, as the hub's commit hash would be."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        staging = Path(tmp) / "snapshot"
        staging.mkdir()
        write_snapshot(staging)
        digest = hashlib.sha1()
        for path in sorted(staging.iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        revision = digest.hexdigest()
        repo = cache / ("models--" + MODEL_ID.replace("/", "--"))
        shutil.rmtree(repo, ignore_errors=True)
        (repo / "refs").mkdir(parents=True)
        (repo / "snapshots").mkdir()
        snapshot = repo / "snapshots" / revision
        shutil.move(str(staging), snapshot)
        (repo / "refs" / "main").write_text(revision)
    return snapshot


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tiny_decoder.py HF_HUB_CACHE_DIRECTORY")
    written = build(Path(sys.argv[1]))
    print(json.dumps({"model": MODEL_ID, "snapshot": str(written)}))
