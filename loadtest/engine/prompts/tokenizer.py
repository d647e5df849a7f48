"""Who counts a prompt's tokens, and makes prompt text of an exact token count.

Two tokenizers, one interface (`PromptTokenizer`):
- `WordTokenizer` (the default): one token = one whitespace-separated word, the rule llm_known
  and the stub apply to a prompt (their TTFT = a + b × words);
- `HfTokenizer`: a Hugging Face `tokenizer.json` (--tokenizer PATH), loaded with the
  `tokenizers` library, offline. A count includes the special tokens its post-processor adds
  (a BOS, say), as a server counts a completions prompt and as vLLM's benchmark sizes its
  random prompts (input_len − num_special_tokens_to_add, vllm/benchmarks/datasets.py).
  Truncation and padding stored in the file are switched off: a count is the whole text's.

Prompt text is made of *units*: words that each count as exactly one token wherever they stand
(for a Hugging Face tokenizer: vocabulary entries that decode to a lowercase ASCII word and
encode back, after a space, to that one token). Units are drawn seeded; `fit` then checks the
joined text with the tokenizer itself and adds or drops units at the end until the count is
exact, so a tokenizer that merges across words still gets the length asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from loadtest.errors import SettingsError

WORD_RULE = "word tokenizer: one token = one whitespace-separated word (llm_known's and the stub's)"
MAX_FIT_STEPS = 64  # add/drop rounds before a tokenizer is judged unable to hit a count
_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
_WORD_POOL_SEED = 0x574F5244  # "WORD": the default tokenizer's fixed vocabulary


class PromptTokenizer(Protocol):
    """Counts tokens and makes text of a given count."""

    @property
    def name(self) -> str:
        """What counted, for every figure that shows a count."""
        ...

    @property
    def specials(self) -> int:
        """Tokens the tokenizer adds to any text (0 for words)."""
        ...

    def count(self, text: str) -> int: ...

    def counts(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's count (int64), in one batch."""
        ...

    def units(self, count: int, rng: np.random.Generator) -> list[str]:
        """`count` seeded units, each one token."""
        ...

    def join(self, units: Sequence[str]) -> str: ...

    def fit(self, units: list[str], tokens: int, rng: np.random.Generator) -> str:
        """Text of exactly `tokens` tokens (specials included) whose start is `units` joined:
        units are added or dropped at the end only."""
        ...


@functools.lru_cache(maxsize=1)
def _word_pool() -> tuple[str, ...]:
    """2048 lowercase pseudo-words of 2-9 letters, the same on every machine."""
    rng = np.random.Generator(np.random.PCG64(_WORD_POOL_SEED))
    lengths = rng.integers(2, 10, size=2048)
    letters = _LETTERS[rng.integers(0, len(_LETTERS), size=int(lengths.sum()))].tobytes()
    ends = np.cumsum(lengths)
    return tuple(letters[e - n : e].decode() for e, n in zip(ends, lengths, strict=True))


class WordTokenizer:
    """One token = one whitespace-separated word."""

    name = WORD_RULE
    specials = 0

    def count(self, text: str) -> int:
        return len(text.split())

    def counts(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((len(t.split()) for t in texts), np.int64, len(texts))

    def units(self, count: int, rng: np.random.Generator) -> list[str]:
        pool = _word_pool()
        return [pool[i] for i in rng.integers(0, len(pool), size=count).tolist()]

    def join(self, units: Sequence[str]) -> str:
        return " ".join(units)

    def fit(self, units: list[str], tokens: int, rng: np.random.Generator) -> str:
        if len(units) > tokens:
            del units[tokens:]
        elif len(units) < tokens:
            units.extend(self.units(tokens - len(units), rng))
        return self.join(units)


def _load(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:  # a dependency in pyproject.toml; an install without it says so
        raise SettingsError(
            f"--tokenizer {path}: the 'tokenizers' package is not installed (pip install "
            "tokenizers)"
        ) from None
    if not path.is_file():
        raise SettingsError(f"--tokenizer {path}: no such file (a Hugging Face tokenizer.json)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the library raises plain Exceptions for a malformed file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SettingsError(
            f"--tokenizer {path}: not a Hugging Face tokenizer.json ({first})"
        ) from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class HfTokenizer:
    """A Hugging Face tokenizer.json, counting with its special tokens."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokenizer = _load(path)
        self.specials = int(self._tokenizer.num_special_tokens_to_add(False))
        self.name = f"tokenizer {path} (Hugging Face tokenizers; special tokens counted)"
        self._pool = self._one_token_words()
        if not self._pool:
            raise SettingsError(
                f"--tokenizer {path}: no vocabulary entry is a whole lowercase word that encodes "
                "to one token, so prompts of an exact length cannot be made with it"
            )

    def _one_token_words(self) -> tuple[str, ...]:
        """Units: ' word' strings that encode, with no special tokens, to exactly one token."""
        tokenizer = self._tokenizer
        ids = sorted(tokenizer.get_vocab().values())
        special = {int(i) for i in tokenizer.get_added_tokens_decoder()}
        words = set()
        for token_id in ids:
            if token_id in special:
                continue
            word = tokenizer.decode([token_id]).strip()
            if 2 <= len(word) <= 16 and word.isascii() and word.isalpha() and word.islower():
                words.add(word)
        candidates = sorted(words)
        encoded = tokenizer.encode_batch([" " + w for w in candidates], add_special_tokens=False)
        return tuple(" " + w for w, e in zip(candidates, encoded, strict=True) if len(e.ids) == 1)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)

    def counts(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(list(texts))
        return np.fromiter((len(e.ids) for e in encoded), np.int64, len(texts))

    def units(self, count: int, rng: np.random.Generator) -> list[str]:
        pool = self._pool
        return [pool[i] for i in rng.integers(0, len(pool), size=count).tolist()]

    def join(self, units: Sequence[str]) -> str:
        return "".join(units)

    def fit(self, units: list[str], tokens: int, rng: np.random.Generator) -> str:
        wanted = max(tokens - self.specials, 0)
        if len(units) > wanted:
            del units[wanted:]
        elif len(units) < wanted:
            units.extend(self.units(wanted - len(units), rng))
        for _ in range(MAX_FIT_STEPS):
            text = self.join(units)
            off = self.count(text) - tokens
            if off == 0:
                return text
            if off > 0:
                if len(units) <= off:
                    break
                del units[len(units) - off :]
            else:
                units.extend(self.units(-off, rng))
        raise SettingsError(
            f"--tokenizer {self.path}: could not make a prompt of exactly {tokens} tokens "
            f"(its special tokens alone are {self.specials})"
        )


def tokenizer_for(path: Path | None) -> PromptTokenizer:
    """The tokenizer --tokenizer names, else the word rule."""
    return WordTokenizer() if path is None else HfTokenizer(path)
