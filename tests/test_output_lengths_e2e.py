"""Requested against achieved output length end to end: the stub's llm_known with
`stub_eos_after` stops an answer early (its "end-of-sequence token") unless the request asks
ignore_eos, as a real model does. `loadtest server` counts the shorter answers, and says which
asked ignore_eos (the server's fault) and which did not (the model's EOS), over Triton's
generate_stream (ignore_eos a sample input, drawn per sample) and the OpenAI API (--ignore-eos).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from stream_law import law_repository

from loadtest.core.records import Records, Status
from loadtest.rules.output_lengths import output_lengths
from loadtest.stub.process import running_stub

EOS_AFTER = 4  # every drawn max_tokens is 8..16: an answer that stops at EOS is shorter


def _eos_repository(root: Path) -> Path:
    """llm_known with a fast law, EOS after 4 tokens, and ignore_eos drawn 0 or 1 per sample."""
    repository = law_repository(root, (0.0, 0.0, 1.0))
    config = repository / "llm_known" / "config.pbtxt"
    text = config.read_text()
    head, tail = text.split('key: "loadtest.range.ignore_eos"', 1)
    tail = tail.replace('string_value: "1,2"', 'string_value: "0,2"', 1)
    eos = "\n".join(
        ["parameters {", '  key: "stub_eos_after"', "  value {",
         f'    string_value: "{EOS_AFTER}"', "  }", "}", ""]
    )  # fmt: skip
    config.write_text(head + 'key: "loadtest.range.ignore_eos"' + tail + eos)
    return repository


def _server(url: str, out: Path, *extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.cli", "server", "--url", url, "--model", "llm_known",
         "--embedded", "never", "--no-live", "--qps", "40", "--duration", "0.5",
         "--min-queries", "20", "--target-latency", "2000", "--records", "--output", str(out),
         *extra],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode in (0, 3), result.stderr
    data = json.loads((out / "result.json").read_text())
    data["stdout"] = result.stdout
    return data


def test_early_stopped_answers_are_counted_and_told_apart_by_ignore_eos(tmp_path: Path):
    with running_stub("--repository", str(_eos_repository(tmp_path))) as stub:
        triton = _server(stub.http_url, tmp_path / "triton", "--protocol", "http-stream")
        openai = _server(f"http://{stub.http_url}", tmp_path / "openai", "--protocol", "openai")
        honoured = _server(
            f"http://{stub.http_url}", tmp_path / "ignored", "--protocol", "openai", "--ignore-eos"
        )

    # generate_stream: the samples' own ignore_eos, drawn per sample; those without it stop at 4
    lengths = triton["tokens"]["output_lengths"]
    counts = np.array(triton["records"]["columns"]["final_count"])
    assert lengths["compared"] == len(counts) >= 20
    assert lengths["shorter"] == int((counts == EOS_AFTER).sum()) > 0  # some asked no ignore_eos
    assert lengths["shorter"] < lengths["compared"]  # and some did, running to max_tokens
    assert lengths["shorter_with_ignore_eos"] == 0 and lengths["longer"] == 0
    assert not lengths["ignore_eos"] and "end-of-sequence" in lengths["shorter_means"]
    assert f"{lengths['shorter']:,} shorter" in triton["stdout"]

    # OpenAI without --ignore-eos: every answer stops at 4 (finish_reason "stop")
    lengths = openai["tokens"]["output_lengths"]
    assert lengths["shorter"] == lengths["compared"] >= 20
    assert set(openai["records"]["columns"]["final_count"]) == {EOS_AFTER}
    # ... and with it, every answer is max_tokens long
    lengths = honoured["tokens"]["output_lengths"]
    assert lengths["mismatched"] == 0 and lengths["ignore_eos"]


def test_a_short_answer_that_asked_ignore_eos_is_the_servers_fault():
    """Per sample: sample 0 asked ignore_eos and came back short (the server not honouring it),
    sample 1 did not (the model's EOS), both named in the one line."""
    records = Records(np.zeros(4, np.int64), np.array([0, 1, 0, 1], np.int32))
    records.status[:] = Status.OK
    records.first_part_ns[:] = 1  # every answer streamed
    records.final_count[:] = [3, 3, 8, 3]
    lengths = output_lengths(records, np.array([8, 8]), False, np.array([True, False]))
    assert lengths is not None
    assert (lengths.shorter, lengths.shorter_with_ignore_eos) == (3, 1)
    assert not lengths.ignore_eos
    text = lengths.text()
    assert "1 of the shorter asked ignore_eos" in text and "not honouring it" in text
    assert "end-of-sequence" in text
