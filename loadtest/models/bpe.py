"""The decoder's tokenizer: a byte-level BPE trained at build time on a seeded, generated corpus.

Why generated: nothing may come from a model hub, and a corpus committed to git would be megabytes
of someone's text. Why byte-level (GPT-2's scheme): any prompt a client sends (loadtest's random
letters, a user's UTF-8) encodes without an unknown token, and every id decodes to bytes.

The corpus is pseudo-English: a lexicon of words made of consonant-vowel syllables, drawn with
Zipf frequencies (a few words are very common, as in real text), in capitalised sentences with
commas and full stops, plus a share of random lowercase letters and spaces like the prompts
loadtest generates (engine/samples.py). BPE learns merges from it as it would from real text, so
prompt lengths in tokens and answers' detokenized text behave like a real tokenizer's.

Training uses the `tokenizers` library (Hugging Face's, the format AIPerf and genai-perf read
with `--tokenizer DIR`); the result is its `tokenizer.json`. Deterministic: the same seed gives
the same bytes (tests/test_decoder.py checks it across processes with different hash seeds).
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS_TOKEN = "<|endoftext|>"  # GPT-2's end-of-text token: id 0, the only special token
CONSONANTS = "bcdfghjklmnprstvwz"
VOWELS = "aeiou"
LETTERS = "abcdefghijklmnopqrstuvwxyz     "  # engine/samples.py's prompt alphabet
LEXICON_WORDS = 4000
SENTENCES = 12_000
NOISE_LINES = 1_500


def _lexicon(rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    lexicon: list[str] = []
    while len(lexicon) < LEXICON_WORDS:
        syllables = int(rng.integers(1, 5))
        word = "".join(
            CONSONANTS[rng.integers(len(CONSONANTS))] + VOWELS[rng.integers(len(VOWELS))]
            for _ in range(syllables)
        )
        if rng.random() < 0.3:
            word += CONSONANTS[rng.integers(len(CONSONANTS))]
        if word not in words:  # a set for membership, the list keeps the drawing order
            words.add(word)
            lexicon.append(word)
    return lexicon


def corpus(seed: int) -> list[str]:
    """The training text, one line per sentence (about 1 MB)."""
    rng = np.random.default_rng(seed)
    lexicon = _lexicon(rng)
    ranks = np.arange(1, len(lexicon) + 1, dtype=np.float64)
    weights = 1.0 / ranks  # Zipf's law, exponent 1
    weights /= weights.sum()
    counts = rng.integers(4, 21, size=SENTENCES)
    drawn = rng.choice(len(lexicon), size=int(counts.sum()), p=weights)
    commas = rng.random(SENTENCES)
    lines: list[str] = []
    start = 0
    for count, comma in zip(counts.tolist(), commas.tolist(), strict=True):
        words = [lexicon[i] for i in drawn[start : start + count].tolist()]
        start += count
        if count > 8 and comma < 0.5:
            words[2 + start % (count - 4)] += ","
        words[0] = words[0].capitalize()
        lines.append(" ".join(words) + ".")
    alphabet = np.frombuffer(LETTERS.encode(), dtype=np.uint8)
    for _ in range(NOISE_LINES):
        length = int(rng.integers(16, 200))
        lines.append(alphabet[rng.integers(0, len(alphabet), length)].tobytes().decode())
    return lines


def train(seed: int, vocab_size: int) -> Tokenizer:
    """A byte-level BPE of exactly `vocab_size` ids (EOS_TOKEN is id 0) trained on corpus(seed)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(seed), trainer)
    if tokenizer.get_vocab_size() != vocab_size:
        raise ValueError(
            f"the corpus gave {tokenizer.get_vocab_size()} tokens, not the {vocab_size} the "
            "model's vocabulary needs"
        )
    return tokenizer


def tokenizer_json(seed: int, vocab_size: int) -> bytes:
    """tokenizer.json's bytes (Hugging Face's format), as written beside the model."""
    return train(seed, vocab_size).to_str(pretty=True).encode() + b"\n"
