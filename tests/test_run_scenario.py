"""scenarios/run.run_scenario: one run end to end from a library caller, as a command runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.core.settings import NS_PER_S, ClientSettings, Protocol, ServerSettings
from loadtest.engine import stopping
from loadtest.errors import SettingsError
from loadtest.report.results import RunReport
from loadtest.rules.validity import NO_RESPONSE_CACHE, OUTPUTS_MATCH
from loadtest.scenarios.run import run_scenario, server_play
from loadtest.scenarios.target_flags import TargetFlags
from loadtest.server.deployment import EmbeddedMode

MS = 1_000_000


def _flags(url: str = "fake://?servers=4&service_ms=1") -> TargetFlags:
    return TargetFlags(
        model="tiny",
        url=url,
        protocol=Protocol.GRPC,
        model_version="",
        timeout_s=5.0,
        embedded=EmbeddedMode.NEVER,
        repository=Path("model_repository"),
        input_data=None,
        shapes={},
    )


def _settings(**extra: object) -> ServerSettings:
    return ServerSettings(
        qps=200, target_latency_ns=50 * MS, min_duration_ns=NS_PER_S // 2, min_query_count=1,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_server_run_is_played_observed_checked_and_reported_without_a_command():
    settings = _settings(check_outputs=1.0, same_sample=True)
    flags = _flags()
    headings: list[str] = []

    def view(heading: str):
        from loadtest.scenarios.run import NoView

        headings.append(heading)
        return NoView()

    play = server_play(settings, ClientSettings(workers=1), flags)
    with run_scenario(settings, flags, play, "Server", view=view) as run:
        assert run.deployment.embedded is None  # fake:// needs no server
        report = RunReport.from_run(run)
    assert headings and headings[0].startswith("Server against ")
    assert not run.interrupted
    assert run.requested.url == run.resolved.url == flags.url
    records = run.measurement.outcome.records
    assert len(records) >= 50 and records.ok.all()
    # --check-outputs and --same-sample ran, and the verdict carries both checks
    assert run.output_check is not None and run.output_check.passed
    assert run.cache_check is not None and run.cache_check.unique_seed is not None
    checks = {c.name: c.passed for c in report.verdict.checks}
    assert checks[OUTPUTS_MATCH] is True and checks[NO_RESPONSE_CACHE] is True, checks
    assert report.environment["server"]["description"] == run.target.description


def test_a_failed_play_closes_the_target_and_puts_the_signal_handlers_back(monkeypatch):
    installed: list[bool] = []
    monkeypatch.setattr(stopping, "install_process_handlers", lambda: installed.append(True))
    opened: list[object] = []

    async def play(target, spec, count, tick, resolved, on_start):
        opened.append(target)
        raise SettingsError("this play refuses")

    with pytest.raises(SettingsError, match="this play refuses"):  # noqa: SIM117
        with run_scenario(_settings(), _flags(), play):
            pytest.fail("a failed play yields no run")
    assert installed == [True] and len(opened) == 1
