"""Without --protocol, a decoupled model is streamed over grpc-stream, and the run says so (the
terminal and result.json's target.protocol_choice); an explicit --protocol grpc is still refused
in one line. Against the stub's llm_known (grpcio server, the fast law)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stream_law import law_repository

from loadtest.stub.process import running_stub


def test_a_decoupled_model_is_streamed_when_no_protocol_is_given_and_the_run_says_so(
    tmp_path: Path,
):
    def run(url: str, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loadtest.cli", "server", "--url", url, "--model", "llm_known",
             "--embedded", "never", "--no-live", "--qps", "20", "--duration", "0.2",
             "--min-queries", "4", "--target-latency", "2000", "--output", str(tmp_path / out),
             *extra],
            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip

    with running_stub(
        "--repository", str(law_repository(tmp_path)), "--grpc-server", "grpcio"
    ) as stub:
        auto = run(stub.grpc_url, "auto")
        given = run(stub.grpc_url, "given", "--protocol", "grpc")
    said = "decoupled model 'llm_known': streamed over grpc-stream (no --protocol given"
    assert said in auto.stderr + auto.stdout, auto.stdout + auto.stderr
    data = json.loads((tmp_path / "auto" / "result.json").read_text())
    assert data["target"]["protocol"] == "grpc-stream"
    assert data["target"]["protocol_choice"].startswith(said)
    assert data["tokens"]["queries"] == data["summary"]["completed_ok"] >= 4
    # the samples carry max_tokens and the stub answers each in full
    assert data["tokens"]["output_lengths"]["compared"] == data["tokens"]["queries"]
    assert data["tokens"]["output_lengths"]["mismatched"] == 0
    assert given.returncode == 1 and "is decoupled" in given.stderr
    assert "Traceback" not in given.stderr and not (tmp_path / "given" / "result.json").exists()
