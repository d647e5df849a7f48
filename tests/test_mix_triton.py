"""`loadtest mix` against the real embedded Triton (the session's): tiny and bert_l4_h256 at once,
each judged alone and together, each with Triton's own per-model statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_mix import _main, _write_mix

pytestmark = pytest.mark.triton


def test_a_real_mix_of_tiny_and_bert(triton, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    url = triton.grpc_url  # type: ignore[attr-defined]
    mix = _write_mix(
        tmp_path / "mix.toml",
        [
            {"model": "tiny", "url": url, "qps": 20, "bound_ms": 200},
            {"model": "bert_l4_h256", "url": url, "protocol": "grpc", "qps": 2, "bound_ms": 2000},
        ],
        duration=2,
        min_queries=4,
        percentile=90,
    )
    out = tmp_path / "run"
    code, stdout, stderr = _main(
        ["mix", str(mix), "--output", str(out), "--late-threshold", "50"], capsys
    )
    assert code in (0, 3, 5), stdout + stderr  # a verdict was reached (the host is shared)
    data = json.loads((out / "result.json").read_text())
    assert [e["name"] for e in data["entries"]] == ["tiny", "bert_l4_h256"]
    for entry in data["entries"]:
        for run in ("alone", "together"):
            result = entry[run]
            assert result["target"]["model"] == entry["name"]
            split = result["server_side"]["split"]
            # Triton's statistics are per model: each entry sees its own requests only
            assert split["requests"] == result["summary"]["completed_ok"] > 0, (entry, run)
    assert {r["name"] for r in data["interference"]} == {"tiny", "bert_l4_h256"}
    assert "Mix of 2: " in stdout


def test_an_unknown_model_in_one_entry_is_one_line(
    triton, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = triton.grpc_url  # type: ignore[attr-defined]
    out = tmp_path / "never"
    code, stdout, stderr = _main(
        ["mix", "--model", f"tiny@{url}:5", "--model", f"nosuch@{url}:5:50", "--output", str(out)],
        capsys,
    )
    assert code == 1, stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: mix entry 'nosuch': model 'nosuch'")
    assert not out.exists()
