"""The prompt flags at the command line: a run against the stub's llm_known over the OpenAI API
with synthetic lengths and a prompts file (what result.json and the terminal say of them), a
malformed file (one line, exit 1) and bad flag values (one usage line, exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stream_law import law_repository
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.engine.prompts.tokenizer import WORD_RULE
from loadtest.stub.process import running_stub


def _loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_prompt_flags_and_a_prompts_file_end_to_end_against_the_stub(tmp_path: Path):
    """--input-tokens/--output-tokens with --ignore-eos: every answer is the drawn max_tokens
    (the server's usage), result.json says where the prompts came from and who counted them,
    and the stub's word count of each prompt equals the client's (mismatch 0). A prompts file
    with a bad line stops before any load, in one line naming the file and the line."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"text": "a b c", "max_tokens": 4}\n{"text": "d e", "max_tokens": "x"}\n')
    with running_stub("--repository", str(law_repository(tmp_path))) as stub:
        common = ["server", "--protocol", "openai", "--url", f"http://{stub.http_url}",
                  "--model", "llm_known", "--embedded", "never", "--no-live", "--qps", "40",
                  "--duration", "0.3", "--min-queries", "12",
                  "--target-latency", "2000"]  # fmt: skip
        run = _loadtest(*common, "--input-tokens", "uniform:4:40", "--output-tokens",
                        "uniform:2:6", "--ignore-eos", "--records", "--output",
                        str(tmp_path / "out"))  # fmt: skip
        bad = _loadtest(*common, "--input-data", str(prompts), "--output", str(tmp_path / "bad"))
    assert run.returncode in (0, 3), run.stderr
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    figures = data["prompts"]
    assert figures["source"].startswith("64 synthetic prompts: input uniform on [4, 40] tokens")
    assert figures["tokenizer"] == WORD_RULE
    assert 4 <= figures["input_tokens"]["min"] <= figures["input_tokens"]["max"] <= 40
    assert figures["compared"] == data["summary"]["completed_ok"] >= 12
    assert figures["mismatched"] == 0 and figures["mismatch_rate"] == 0.0
    assert "mismatch_rate" in figures["definitions"]
    columns = data["records"]["columns"]
    assert all(2 <= n <= 6 for n in columns["final_count"])  # max_tokens as drawn
    lengths = data["tokens"]["output_lengths"]  # requested vs achieved: the stub honours them
    assert lengths["compared"] == data["summary"]["completed_ok"] and lengths["mismatched"] == 0
    assert lengths["ignore_eos"] and lengths["requested_tokens"] == sum(columns["final_count"])
    assert "output length vs max_tokens: 0 of" in run.stdout
    assert "prompts: 64 synthetic prompts" in run.stdout and "≠ the client's on 0 of" in run.stdout
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    line = bad.stderr.strip().splitlines()[-1]  # after the run's title: the one error line
    assert line == f"error: --input-data {prompts}, line 2: max_tokens 'x' is not a number"
    assert not (tmp_path / "bad" / "result.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-tokens", "uniform:9:3"], "LO 9 is above HI 3"),
        (["--output-tokens", "normal:nan:2"], "not a finite number"),
        (["--input-tokens", "gauss:3"], "unknown length law"),
        (["--input-format", "csv"], "one of jsonl, sharegpt"),
        (["--shared-prefix"], "only with a Mooncake --trace"),
    ],
)
def test_bad_prompt_flags_are_one_usage_line(args: list[str], message: str):
    result = CliRunner().invoke(app, ["server", "--url", "fake://", "--no-live", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in " ".join(result.output.replace("│", " ").split())


def test_prompt_flags_on_a_model_without_text_are_one_error_line():
    result = CliRunner().invoke(
        app, ["server", "--url", "fake://", "--no-live", "--input-tokens", "fixed:8"]
    )
    assert result.exit_code == 1 and "takes no text prompt" in str(result.exception)
