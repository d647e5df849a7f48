"""What a run's text prompts are made of: the prompt flags, gathered once, and the per-row
lengths a recorded LLM trace hands them.

`PromptSettings` travels wherever the sample library is built (the run, every worker process or
Ray actor, find-peak, sweep, compare), so each process renders the same prompts from the same
seed; engine/prompts/ does the rendering. Pure: no I/O; the tokenizer is named by its path and
loaded where the prompts are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.core.lengths import LengthLaw

# A Mooncake trace's `hash_ids` each stand for one block of this many prompt tokens
# (kvcache-ai/Mooncake FAST25-release/README.md; AIPerf's BLOCK_SIZE; GuideLLM's mooncake
# `hash_id_block_size`; docs/STREAMING.md "Prompts and lengths").
HASH_BLOCK_TOKENS = 512
# One prompt is rendered per trace row; beyond these a trace must be windowed (--trace-start,
# --trace-end): every worker holds every prompt, and its request body, in memory.
MAX_TRACE_PROMPTS = 100_000
MAX_TRACE_PROMPT_TOKENS = 20_000_000
INPUT_FORMATS = ("jsonl", "sharegpt")


@dataclass(frozen=True, eq=False)
class TraceLengths:
    """Per replayed trace row, in schedule order before any deal: its input length, output
    length (None: the trace has none) and, for --shared-prefix, its hash block ids. Row k is
    sample k of the library (the trace names its samples by position: core/schedule.py)."""

    input_tokens: np.ndarray
    output_tokens: np.ndarray | None
    hash_ids: tuple[tuple[int, ...], ...] | None
    source: str

    def __len__(self) -> int:
        return len(self.input_tokens)


@dataclass(frozen=True)
class PromptSettings:
    """The prompt flags: synthetic length laws, the tokenizer that counts and renders (None:
    one token = one whitespace word), the --input-data format (None: told from its content),
    and --shared-prefix; `trace` when a recorded trace's lengths shape the prompts."""

    input_tokens: LengthLaw | None = None
    output_tokens: LengthLaw | None = None
    tokenizer: Path | None = None
    input_format: str | None = None
    shared_prefix: bool = False
    trace: TraceLengths | None = None

    @property
    def given(self) -> bool:
        """Whether any prompt flag (or a trace's lengths) asks for shaped prompts."""
        return (
            self.input_tokens is not None
            or self.output_tokens is not None
            or self.tokenizer is not None
            or self.input_format is not None
            or self.shared_prefix
            or self.trace is not None
        )

    def flags_given(self) -> list[str]:
        """The prompt flags given, as written, for a refusal that names them."""
        names = (
            ("--input-tokens", self.input_tokens is not None),
            ("--output-tokens", self.output_tokens is not None),
            ("--tokenizer", self.tokenizer is not None),
            ("--input-format", self.input_format is not None),
            ("--shared-prefix", self.shared_prefix),
        )
        return [name for name, given in names if given]
