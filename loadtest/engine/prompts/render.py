"""Prompt text of exact token counts, seeded: one text per length, or texts built from shared
hash blocks (a Mooncake trace's `hash_ids`) so requests sharing block ids share a prefix.

Blocks: each hash id stands for HASH_BLOCK_TOKENS (512) tokens. Its text is drawn from its own
seeded stream, keyed by the run's sample seed and the id alone, so the same id renders to the
same text in every prompt, every worker and every run with that seed. A prompt of n tokens is
its blocks in order, each contributing up to 512 tokens (the last one possibly cut short), then
unique tokens if n is longer than its blocks; the tokenizer's `fit` makes the count exact by
adding or dropping units at the end only, so a shared start stays shared.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loadtest.core.prompts import HASH_BLOCK_TOKENS
from loadtest.engine.prompts.tokenizer import PromptTokenizer

TEXT_STREAM = 0x54455854  # "TEXT": the unique text of each prompt
BLOCK_STREAM = 0x424C4B  # "BLK": one stream per hash id


def render_texts(tokenizer: PromptTokenizer, lengths: np.ndarray, seed: int) -> list[str]:
    """One text per length, each exactly that many tokens by `tokenizer`, seeded."""
    rng = np.random.Generator(np.random.PCG64([seed, TEXT_STREAM]))
    content = np.maximum(lengths - tokenizer.specials, 0)
    return [
        tokenizer.fit(tokenizer.units(int(n), rng), int(total), rng)
        for n, total in zip(content.tolist(), lengths.tolist(), strict=True)
    ]


class BlockTexts:
    """The units of each hash block, drawn once per id from the id's own stream."""

    def __init__(self, tokenizer: PromptTokenizer, seed: int) -> None:
        self.tokenizer = tokenizer
        self.seed = seed
        self._units: dict[int, list[str]] = {}

    def units(self, hash_id: int) -> list[str]:
        found = self._units.get(hash_id)
        if found is None:
            rng = np.random.Generator(np.random.PCG64([self.seed, BLOCK_STREAM, hash_id]))
            found = self.tokenizer.units(HASH_BLOCK_TOKENS, rng)
            self._units[hash_id] = found
        return found


def render_blocked(
    tokenizer: PromptTokenizer,
    lengths: np.ndarray,
    hash_ids: Sequence[Sequence[int]],
    seed: int,
) -> list[str]:
    """One text per length, made of its row's hash blocks (see the module docstring)."""
    blocks = BlockTexts(tokenizer, seed)
    rng = np.random.Generator(np.random.PCG64([seed, TEXT_STREAM]))
    texts = []
    for total, ids in zip(lengths.tolist(), hash_ids, strict=True):
        left = max(int(total) - tokenizer.specials, 0)
        units: list[str] = []
        for hash_id in ids:
            if left <= 0:
                break
            block = blocks.units(int(hash_id))[:left]
            units.extend(block)
            left -= len(block)
        if left > 0:
            units.extend(tokenizer.units(left, rng))
        texts.append(tokenizer.fit(units, int(total), rng))
    return texts
