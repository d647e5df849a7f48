"""--input-data for a text model: a prompts file, read into (prompt, output length) entries.

Two forms, told from the content (the first character that is not blank: `[` a ShareGPT list,
`{` JSON lines) unless --input-format names one:

- `jsonl`: one JSON object per line, the prompt in `text` (or `prompt`), optionally its output
  length in `max_tokens` (or `output_tokens`), a whole number ≥ 1; blank lines are skipped.
- `sharegpt`: a JSON list of {"conversations": [{"from": "human", "value": ...}, {"from": "gpt",
  "value": ...}, ...]}: the first human turn is the prompt and the first gpt turn after it is
  the answer whose token count (by the run's tokenizer) becomes max_tokens, as vLLM's benchmark
  does (vllm/benchmarks/datasets.py `ShareGPTDataset`; docs/STREAMING.md). Unlike vLLM, no
  entry is dropped for its length; entries without a human turn followed by a non-empty gpt turn
  are skipped and counted.

Every problem is one SettingsError line (exit 1) naming the file and the line (JSON lines) or
the entry (ShareGPT, one JSON document; a syntax error names its line).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.core.prompts import INPUT_FORMATS
from loadtest.errors import SettingsError

TEXT_KEYS = ("text", "prompt")
OUTPUT_KEYS = ("max_tokens", "output_tokens")
HUMAN = ("human", "user")
GPT = ("gpt", "assistant", "chatgpt", "bard", "bing")


@dataclass(frozen=True)
class PromptEntry:
    """One prompt as read: its text, and its output length where the file gives one (an int)
    or the answer text whose token count gives it (ShareGPT)."""

    text: str
    output_tokens: int | None = None
    answer: str | None = None


@dataclass(frozen=True)
class PromptFile:
    """A prompts file as read: its entries, its form, and how many entries were skipped."""

    entries: tuple[PromptEntry, ...]
    form: str
    skipped: int = 0


def file_error(path: Path, where: str, why: str) -> SettingsError:
    """'--input-data FILE, line 7: why' (where '' for the whole file)."""
    return SettingsError(
        f"--input-data {path}, {where}: {why}" if where else f"--input-data {path}: {why}"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise file_error(path, "", "no such file") from None
    except IsADirectoryError:
        raise file_error(
            path, "", "is a directory; a prompts file is .jsonl or ShareGPT .json"
        ) from None
    except UnicodeDecodeError as exc:
        raise file_error(
            path, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise file_error(path, "", f"cannot read it ({exc.strerror or exc})") from None


def detect_form(path: Path, content: str) -> str:
    """'sharegpt' for a JSON list, 'jsonl' for JSON objects, else one line."""
    start = content.lstrip()[:1]
    if start == "[":
        return "sharegpt"
    if start == "{":
        return "jsonl"
    if not start:
        raise file_error(path, "", "is empty")
    raise file_error(
        path, "", "is neither JSON lines of prompts nor a ShareGPT list (name it: --input-format)"
    )


def output_length(value: Any, path: Path, where: str, key: str) -> int:
    """A file's output length: a whole number ≥ 1 (JSON bool, nan, inf, negatives refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise file_error(path, where, f"{key} {value!r} is not a number")
    if not math.isfinite(value):
        raise file_error(path, where, f"{key} {value!r} is not a finite number")
    if value < 1 or value != math.floor(value):
        raise file_error(path, where, f"{key} {value!r} is not a whole number ≥ 1")
    return int(value)


def _jsonl_entry(record: Any, path: Path, where: str) -> PromptEntry:
    if not isinstance(record, dict):
        raise file_error(path, where, "is not a JSON object")
    key = next((k for k in TEXT_KEYS if k in record), None)
    if key is None:
        raise file_error(path, where, "has no 'text' (or 'prompt')")
    text = record[key]
    if not isinstance(text, str):
        raise file_error(path, where, f"{key} is not a string")
    if not text.strip():
        raise file_error(path, where, f"{key} is empty")
    out_key = next((k for k in OUTPUT_KEYS if k in record), None)
    if out_key is None or record[out_key] is None:
        return PromptEntry(text)
    return PromptEntry(text, output_length(record[out_key], path, where, out_key))


def read_jsonl(path: Path, content: str) -> PromptFile:
    entries = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise file_error(path, where, f"not JSON ({exc.msg}, column {exc.colno})") from None
        entries.append(_jsonl_entry(record, path, where))
    if not entries:
        raise file_error(path, "", "holds no prompts")
    return PromptFile(tuple(entries), "jsonl")


def _turn_value(turn: Any, path: Path, where: str) -> tuple[str, str]:
    if not isinstance(turn, dict) or not isinstance(turn.get("from"), str):
        raise file_error(path, where, "a turn is not an object with 'from' and 'value'")
    value = turn.get("value")
    if not isinstance(value, str):
        raise file_error(path, where, "a turn's 'value' is not a string")
    return turn["from"].strip().lower(), value


def _sharegpt_entry(item: Any, path: Path, where: str) -> PromptEntry | None:
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        raise file_error(path, where, "is not an object with a 'conversations' list")
    turns = [_turn_value(t, path, where) for t in item["conversations"]]
    human = next((i for i, (who, text) in enumerate(turns) if who in HUMAN and text.strip()), None)
    if human is None:
        return None
    answer = next((text for who, text in turns[human + 1 :] if who in GPT), None)
    if answer is None or not answer.strip():
        return None
    return PromptEntry(turns[human][1], answer=answer)


def read_sharegpt(path: Path, content: str) -> PromptFile:
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise file_error(path, f"line {exc.lineno}", f"not JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise file_error(path, "", "a ShareGPT file is a JSON list of conversations")
    entries = []
    for index, item in enumerate(data):
        entry = _sharegpt_entry(item, path, f"entry {index}")
        if entry is not None:
            entries.append(entry)
    if not entries:
        raise file_error(path, "", "holds no conversation with a human turn and a gpt answer")
    return PromptFile(tuple(entries), "sharegpt", skipped=len(data) - len(entries))


def read_prompt_file(path: Path, form: str | None = None) -> PromptFile:
    """The prompts in `path`, in the form named (one of INPUT_FORMATS) or told from content."""
    if form is not None and form not in INPUT_FORMATS:
        raise SettingsError(f"--input-format {form!r}: one of {', '.join(INPUT_FORMATS)}")
    content = _read(path)
    chosen = form or detect_form(path, content)
    return read_jsonl(path, content) if chosen == "jsonl" else read_sharegpt(path, content)


@dataclass(frozen=True)
class ConversationFile:
    """A ShareGPT file read as sessions: per conversation, each human turn in order with the
    gpt answer that follows it (whose token count sizes that turn's max_tokens); conversations
    without one such pair skipped, human turns left without an answer dropped, both counted."""

    conversations: tuple[tuple[PromptEntry, ...], ...]
    skipped: int = 0
    unanswered: int = 0


def _conversation_turns(item: Any, path: Path, where: str) -> tuple[list[PromptEntry], int]:
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        raise file_error(path, where, "is not an object with a 'conversations' list")
    turns = [_turn_value(t, path, where) for t in item["conversations"]]
    entries: list[PromptEntry] = []
    unanswered = 0
    asked: str | None = None
    for who, text in turns:
        if who in HUMAN and text.strip():
            unanswered += asked is not None
            asked = text
        elif who in GPT and asked is not None and text.strip():
            entries.append(PromptEntry(asked, answer=text))
            asked = None
    return entries, unanswered + (asked is not None)


def read_conversations(path: Path) -> ConversationFile:
    """A ShareGPT file's conversations, every human turn in order (see ConversationFile)."""
    content = _read(path)
    if detect_form(path, content) != "sharegpt":
        raise file_error(path, "", "sessions need a ShareGPT list of conversations")
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise file_error(path, f"line {exc.lineno}", f"not JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise file_error(path, "", "a ShareGPT file is a JSON list of conversations")
    conversations = []
    unanswered = 0
    for index, item in enumerate(data):
        entries, dropped = _conversation_turns(item, path, f"entry {index}")
        unanswered += dropped
        if entries:
            conversations.append(tuple(entries))
    if not conversations:
        raise file_error(path, "", "holds no conversation with a human turn and a gpt answer")
    return ConversationFile(tuple(conversations), len(data) - len(conversations), unanswered)
