"""Greedy generation with the suite decoder's KV cache: the one loop both servers run.

Why one module for both: Triton's Python backend (the model's model.py) and loadtest's native
in-process target must run the *same* prefill/decode loop, or a Triton-vs-native comparison
measures two programs. The build copies this file beside model.py in the model's version
directory, so it imports nothing from loadtest: only numpy, onnxruntime and tokenizers, which a
Triton image can have too.

The loop (models/gpt.py has the graph):
- `Decoder.start` encodes the prompt (an empty prompt starts from the EOS token, as GPT-2's
  <|endoftext|> doubles as its beginning of text) and checks that prompt + max_tokens fits the
  model's context;
- `Generation.step` runs one model call: the first is the prefill (every prompt token, empty
  cache), each later one a decode step (the last token against the cached keys and values);
  each call yields one token, the argmax of the logits (greedy: the answer is a function of the
  prompt, so two servers can be held to the same tokens);
- end of sequence: before `min_tokens` tokens the EOS logit is masked (vLLM's min_tokens: "Minimum
  number of tokens to generate per output sequence before EOS or stop_token_ids can be
  generated"); after that an EOS ends the answer unless `ignore_eos` ("Whether to ignore the EOS
  token and continue generating tokens after the EOS token is generated", vLLM SamplingParams).
  The EOS token is the answer's last token: counted, its text empty (a special token), so the
  FINAL flag can ride on a data response without looking one token ahead;
- text comes out incrementally: each token's `text` is what the answer's decoded text gained,
  held back while it ends in an incomplete UTF-8 sequence (decoded as U+FFFD), so the pieces
  joined are exactly `tokenizer.decode(all ids)`.

`StepRunner`: every request's steps go through one worker thread, in the order they are asked
for, so a long prefill delays the other requests' next tokens and concurrent answers share the
CPU as they do in a server without batching (iteration-level round robin, batch size 1). ORT
runs with one intra-op thread and spinning off (ORT's spinning threads burn a core while idle).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

EOS_TOKEN = "<|endoftext|>"
CONTEXT_KEY = "loadtest.context"  # the ONNX metadata entry with the model's positions
REPLACEMENT = "\ufffd"  # what an incomplete UTF-8 sequence decodes to


class GenerationError(ValueError):
    """A request the model cannot answer (one line, for the client)."""


@dataclass(frozen=True)
class Token:
    id: int
    text: str  # what the answer's text gained with this token ("" while a character is partial)


def session_options(threads: int = 1) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class Decoder:
    """The model (an ONNX session) and its tokenizer, loaded once per server instance."""

    def __init__(self, model_path: str, tokenizer_path: str, threads: int = 1) -> None:
        self.session = ort.InferenceSession(
            model_path, session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        eos = self.tokenizer.token_to_id(EOS_TOKEN)
        if eos is None:
            raise GenerationError(f"{tokenizer_path} has no {EOS_TOKEN} token")
        self.eos_id: int = eos
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.context = int(metadata.get(CONTEXT_KEY, "0"))
        self.past = [i.name for i in self.session.get_inputs() if i.name.startswith("past_")]
        self.outputs = ["logits", *(name.replace("past_", "present_", 1) for name in self.past)]
        first_past = next(i for i in self.session.get_inputs() if i.name.startswith("past_"))
        _, heads, _, head_dim = first_past.shape
        self._empty = np.zeros((1, int(heads), 0, int(head_dim)), dtype=np.float32)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def start(
        self, prompt: list[int], max_tokens: int, ignore_eos: bool = False, min_tokens: int = 0
    ) -> Generation:
        """A request's generation, checked (GenerationError: one line saying why not)."""
        if max_tokens < 1 or not 0 <= min_tokens <= max_tokens:
            raise GenerationError(
                f"max_tokens must be ≥ 1 and ≥ min_tokens ≥ 0 (got {max_tokens}, {min_tokens})"
            )
        ids = prompt or [self.eos_id]
        if self.context and len(ids) + max_tokens > self.context:
            raise GenerationError(
                f"the prompt's {len(ids)} tokens + max_tokens {max_tokens} exceed the model's "
                f"context of {self.context} tokens"
            )
        return Generation(self, ids, max_tokens, ignore_eos, min_tokens)

    def tokens(
        self, text: str, max_tokens: int, ignore_eos: bool = False, min_tokens: int = 0
    ) -> Iterator[Token]:
        """The answer to `text`, token by token as each is produced (in this thread)."""
        generation = self.start(self.encode(text), max_tokens, ignore_eos, min_tokens)
        while not generation.finished:
            yield generation.step()

    def run(self, ids: list[int], cache: list[np.ndarray] | None) -> list[np.ndarray]:
        """One model call: `ids` after the cached positions -> [logits, present...]."""
        feeds: dict[str, Any] = {"input_ids": np.asarray([ids], dtype=np.int64)}
        if cache is None:
            feeds.update((name, self._empty) for name in self.past)
        else:
            feeds.update(zip(self.past, cache, strict=True))
        return list(self.session.run(self.outputs, feeds))


class Generation:
    """One request's answer, a token per `step()` until `finished`."""

    def __init__(
        self,
        decoder: Decoder,
        prompt: list[int],
        max_tokens: int,
        ignore_eos: bool,
        min_tokens: int,
    ) -> None:
        self.decoder = decoder
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.min_tokens = min_tokens
        self.ids: list[int] = []  # the answer's tokens so far
        self.finished = False
        self.stopped_by_eos = False
        self._cache: list[np.ndarray] | None = None
        self._emitted = 0  # characters of the decoded answer already handed out

    def step(self) -> Token:
        """Run the prefill (first call) or one decode step; the token it chose."""
        if self.finished:
            raise GenerationError("the answer is already complete")
        decoder = self.decoder
        fed = self.ids[-1:] if self._cache is not None else self.prompt
        logits, *self._cache = decoder.run(fed, self._cache)
        scores = logits[0]
        if len(self.ids) < self.min_tokens:
            scores = scores.copy()
            scores[decoder.eos_id] = -np.inf
        token = int(np.argmax(scores))
        self.ids.append(token)
        eos = token == decoder.eos_id and not self.ignore_eos
        self.stopped_by_eos = eos
        self.finished = eos or len(self.ids) >= self.max_tokens
        return Token(token, self._new_text())

    def _new_text(self) -> str:
        text = self.decoder.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith(REPLACEMENT) and not self.finished:
            return ""  # a character split across tokens: wait for its last byte
        new, self._emitted = text[self._emitted :], len(text)
        return new


class StepRunner:
    """Runs every request's steps on one worker thread, in the order they are asked for."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="decoder-steps")

    async def step(self, generation: Generation) -> Token:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, generation.step)

    async def stream(self, generation: Generation) -> AsyncIterator[Token]:
        """The answer's tokens as each step completes, every step taking its turn."""
        while not generation.finished:
            yield await self.step(generation)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
