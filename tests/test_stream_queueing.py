"""benchmarks/stream_queueing.py for a few seconds on the embedded Triton: llm_known with
`max_concurrent_requests` = 1 is a one-server queue (requests wait, the server is never busy
more than all the time) and `log_timing` gives the server's own times for every query, which
the benchmark sets against the meter's figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_benchmarks import run_script

pytestmark = pytest.mark.triton


def test_a_short_queueing_run_logs_every_query_and_queues_them(tmp_path: Path) -> None:
    output = tmp_path / "stream-queueing.txt"
    result = run_script(
        "benchmarks/stream_queueing.py", "--seconds", "4", "--rho", "0.7",
        "--protocols", "grpc-stream", "--no-pin", "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = output.read_text()
    played = re.search(r"grpc-stream: (\d+) queries scheduled, (\d+) ok, (\d+) logged", text)
    assert played, text
    scheduled, ok, logged = (int(n) for n in played.groups())
    assert scheduled > 15 and ok == scheduled and logged == scheduled
    queue = re.search(r"ρ measured ([\d.]+) .*; mean wait ([\d.]+) ms", text)
    assert queue, text
    # One request at a time: busy at most all the time, and at ρ ≈ 0.7 some wait for it.
    assert 0.2 < float(queue[1]) <= 1.0 and float(queue[2]) > 0.0, text
    rows = re.findall(r"  (TTFT \(from the schedule\)|TPOT) p(50|90|99): measured +([\d.]+) ms, "
                      r"server +([\d.]+) ms, error ([+-][\d.]+) %", text)  # fmt: skip
    assert len(rows) == 6, text
    for name, _, measured, server, _ in rows:
        # The meter reads each token after the server sends it, never before.
        assert float(measured) >= float(server) - 0.5, (name, measured, server)
    tpot_p50 = next(
        float(measured) for name, p, measured, _, _ in rows if name == "TPOT" and p == "50"
    )
    assert abs(tpot_p50 - 10.0) < 1.0  # c = 10 ms
