"""A real OpenAI-compatible server that nobody on this project wrote, for the tests: Hugging
Face's `transformers serve` (transformers 5.18.0, CPU torch 2.13.0) streaming a tiny random-weight
Llama (tests/tiny_decoder.py) on a free loopback port, as the tests' own process, stopped by its
PID. Use the session fixture `openai_server` (tests/conftest.py) or `transformers_serve(folder)`.

It runs from its own virtual environment (.ci/install-openai-server; pins in
.ci/openai-server-requirements.txt), never loadtest's. A missing or stale environment skips its
tests, except with LOADTEST_REQUIRE_OPENAI_SERVER=1 (set by .ci/run), where it fails them.

What this server does, read from its source (transformers/cli/serving/, 5.18.0; most points
checked by tests/test_openai_server.py), for whoever writes a target for it:
- POST /v1/completions and /v1/chat/completions, `"stream": true` -> SSE `data:` events, one per
  generated token (this model: every token decodes to text). Chat sends a first event with
  `delta.role` and no content.
- `usage` comes on the last event, with `finish_reason`, whatever `stream_options` says (it is
  accepted and ignored); that event's `choices` is not empty (OpenAI's is `[]`).
- No `data: [DONE]`: the end of the chunked body ends the stream.
- `ignore_eos` and `min_tokens` are refused: 422 "Unexpected fields in the request". The model
  has no end-of-sequence token, so every answer is exactly `max_tokens` long anyway
  (finish_reason "length"); without max_tokens it is 1024.
- An error after the 200 is an event `{"error": "..."}`, then the body ends.
- The request's `model` must be MODEL_ID or absent (another name: 400); answers name it
  "loadtest/tiny-llama@main". GET /v1/models lists MODEL_ID; GET /health answers 200 when the
  model is loaded.
- One inference thread: concurrent requests are generated one after another (no batching without
  --continuous-batching), so under load TTFT includes the server's own queue.
- Prompt tokens: the tokenizer `tokenizer` (Hugging Face tokenizer.json, byte-level BPE, 512
  tokens); a chat prompt is rendered "ROLE: CONTENT\\n" per message, then "assistant:".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from proxies import free_port

REQUIRE_VARIABLE = "LOADTEST_REQUIRE_OPENAI_SERVER"
VENV_VARIABLE = "LOADTEST_OPENAI_SERVER_VENV"
REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO_ROOT / ".ci" / "openai-server-requirements.txt"
INSTALLER = REPO_ROOT / ".ci" / "install-openai-server"
BUILDER = Path(__file__).resolve().parent / "tiny_decoder.py"
MODEL_ID = "loadtest/tiny-llama"
START_LIMIT_S = 90.0  # ~5 s on an idle 2-core machine: importing torch and transformers
BUILD_LIMIT_S = 180.0  # ~4 s idle


@dataclass(frozen=True)
class OpenAIServer:
    """A running OpenAI-compatible server: where, which model, and what it supports."""

    name: str
    base_url: str  # ends in /v1: POST {base_url}/completions, {base_url}/chat/completions
    model: str  # the request's "model"
    answered_model: str  # the "model" its answers carry
    tokenizer: Path  # its tokenizer.json, for counting tokens as the server does
    pid: int
    log_path: Path
    sends_done: bool = False  # no "data: [DONE]"
    usage_always: bool = True  # usage on the last event even without stream_options
    accepts_ignore_eos: bool = False  # 422
    accepts_min_tokens: bool = False  # 422
    has_eos: bool = False  # answers are exactly max_tokens long

    def log(self) -> str:
        """The server's output (uvicorn's access lines, transformers' warnings), its last 4000
        characters, for a failing test's message."""
        return self.log_path.read_text(errors="replace")[-4000:]


def venv_folder() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get(VENV_VARIABLE, default / "loadtest" / "openai-server"))


def _missing(message: str) -> None:
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{message} ({REQUIRE_VARIABLE}=1)")
    pytest.skip(message)


def server_venv() -> Path:
    """The server's virtual environment, installed from the current pins, else skip (or fail,
    if required)."""
    venv = venv_folder()
    stamp = venv / f".installed-{hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]}"
    if not stamp.exists():
        state = "stale" if venv.exists() else "not installed"
        _missing(f"transformers serve is {state} in {venv}: run {INSTALLER.relative_to(REPO_ROOT)}")
    return venv


def server_environment(**extra: str) -> dict[str, str]:
    """The environment for the server's own Python: ours, but writing bytecode. The venv is
    installed without .pyc files (pip --no-compile saves 18 of 49 s); its first start writes
    them for what it imports, so later starts take ~3 s instead of ~11 (torch, transformers)
    even where PYTHONDONTWRITEBYTECODE is set, as it is in the sessions that wrote this."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **extra}


def tiny_decoder_cache(venv: Path) -> Path:
    """The hub cache holding MODEL_ID, built once per version of tiny_decoder.py (~4 s)."""
    cache = venv / "loadtest-models" / hashlib.sha256(BUILDER.read_bytes()).hexdigest()[:16]
    ref = cache / ("models--" + MODEL_ID.replace("/", "--")) / "refs" / "main"
    if not ref.exists():
        subprocess.run(
            [str(venv / "bin" / "python"), str(BUILDER), str(cache)],
            check=True,
            capture_output=True,
            timeout=BUILD_LIMIT_S,
            env=server_environment(),
        )
    return cache


def _snapshot(cache: Path) -> Path:
    repo = cache / ("models--" + MODEL_ID.replace("/", "--"))
    return repo / "snapshots" / (repo / "refs" / "main").read_text().strip()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    while True:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"transformers serve exited ({process.returncode}) at start:\n{log}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"transformers serve not ready at {url} after {START_LIMIT_S} s")
        time.sleep(0.1)


@contextlib.contextmanager
def transformers_serve(directory: Path) -> Iterator[OpenAIServer]:
    """`transformers serve` pinned to MODEL_ID on a free loopback port, its log in `directory`.
    One torch thread (OMP_NUM_THREADS=1): on a 2-core machine the load client needs the other."""
    venv = server_venv()
    cache = tiny_decoder_cache(venv)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_environment(
        HF_HUB_CACHE=str(cache),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    command = [str(venv / "bin" / "transformers"), "serve", MODEL_ID]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log_path = directory / "transformers-serve.log"
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(process, f"http://127.0.0.1:{port}/health", log_path)
        yield OpenAIServer(
            name="transformers serve 5.18.0",
            base_url=f"http://127.0.0.1:{port}/v1",
            model=MODEL_ID,
            answered_model=f"{MODEL_ID}@main",
            tokenizer=_snapshot(cache) / "tokenizer.json",
            pid=process.pid,
            log_path=log_path,
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def count_tokens(server: OpenAIServer, texts: list[str]) -> list[int]:
    """Each text's token count by the server's own tokenizer.json (the `tokenizers` library of
    the server's environment: loadtest's has none)."""
    script = (
        "import json, sys; from tokenizers import Tokenizer; "
        "t = Tokenizer.from_file(sys.argv[1]); "
        "print(json.dumps([len(t.encode(x).ids) for x in json.load(sys.stdin)]))"
    )
    done = subprocess.run(
        [str(server_venv() / "bin" / "python"), "-c", script, str(server.tokenizer)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=server_environment(),
    )
    counts = json.loads(done.stdout)
    assert isinstance(counts, list)
    return [int(count) for count in counts]
