"""The scenario registry: one entry per Scenario, and the renderers take their facts from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loadtest.core.settings import Scenario
from loadtest.scenarios.mlperf.registry import SCENARIOS, Headline, entry

PACKAGE = Path(__file__).resolve().parent.parent / "loadtest"


def test_every_scenario_has_exactly_one_entry():
    assert set(SCENARIOS) == set(Scenario)
    for scenario, item in SCENARIOS.items():
        assert item.scenario is scenario


@pytest.mark.parametrize("name", [s.value for s in Scenario])
def test_entries_are_found_by_loadgen_name(name: str):
    assert entry(name).scenario.value == name


def test_latency_columns_name_real_summary_fields():
    from loadtest.rules.stats import Summary

    fields = set(Summary.__dataclass_fields__)
    for item in SCENARIOS.values():
        assert item.latency_columns, item.scenario
        assert {c.field for c in item.latency_columns} <= fields


def test_only_server_has_loadgens_performance_constraint_and_rate_headline():
    server = SCENARIOS[Scenario.SERVER]
    assert server.has_performance_constraint and server.headline is Headline.COMPLETED_RATE
    others = [s for k, s in SCENARIOS.items() if k is not Scenario.SERVER]
    assert not any(s.has_performance_constraint for s in others)


@pytest.mark.parametrize(
    "module", ["report/terminal.py", "report/mlperf_summary.py", "scenarios/mlperf/interpret.py"]
)
def test_renderers_do_not_branch_on_scenario_names(module: str):
    """Branches on "Server"/"Offline"/... strings were what the registry replaced."""
    text = (PACKAGE / module).read_text()
    found = re.findall(
        r"""(?:==|!=|\bin)\s*\(?\s*["'](Server|Offline|SingleStream|MultiStream)""", text
    )
    assert not found, f"{module} branches on scenario names: {found}"
    assert "isinstance(settings," not in text


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path: Path):
    """A write that fails part-way (RLIMIT_FSIZE stands in for a full disk) leaves the previous
    result whole and no temporary file behind."""
    import subprocess
    import sys

    path = tmp_path / "result.json"
    path.write_text('{"old": true}\n')
    script = f"""
import resource, signal
from pathlib import Path
from loadtest.report.results import write_atomically
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write(2) instead of a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_atomically(Path({str(path)!r}), "x" * 100_000)
except OSError as exc:
    print("failed:", exc.errno)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "failed: 27" in result.stdout, result.stdout + result.stderr  # EFBIG
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
