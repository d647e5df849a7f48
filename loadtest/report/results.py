"""A run's result as one value (settings, model, environment, summary, verdict, server side), and
its files.

The value is built once, after everything about the run is known (the server-side split and the
:8002 metrics included), and written once: each file goes to a temporary name in the output
directory and is renamed into place, so a reader never sees half a result.json (report/outputs.py:
checked before the run, never overwritten unasked, rescued if the disk refuses it).

The JSON carries its own configuration (every setting, seeds included), the environment (versions,
host, server), a per-second timeline (always; rules/stats.Timeline as columns) and, when asked, the
raw per-query records as compact columns, so any number in it can be recomputed later.
`schema_version` lets later readers refuse files they do not understand.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import platform
import socket
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.core.records import Records
from loadtest.core.secrets import Secret, redact_url
from loadtest.core.settings import ScenarioSettings, ServerSettings, TargetSettings
from loadtest.core.stages import StagedArrivals
from loadtest.core.target import Target
from loadtest.core.units import s_to_us
from loadtest.engine.measurement import Measurement
from loadtest.engine.prompts.library import PromptLibrary
from loadtest.engine.selfmeasure import PART_GAP
from loadtest.observe.observer import ServerSide
from loadtest.report.mlperf_summary import render_mlperf_summary
from loadtest.report.outputs import stamp, write_atomically
from loadtest.rules.cache_check import CacheCheck
from loadtest.rules.goodput import Goodput, goodput
from loadtest.rules.output_check import OutputCheck
from loadtest.rules.output_lengths import OutputLengths, output_lengths
from loadtest.rules.prompt_counts import PromptFigures, prompt_figures
from loadtest.rules.stage_results import StageResult, stage_results, stages_check
from loadtest.rules.stats import Summary, Timeline, decode_histograms, timeline
from loadtest.rules.tokens import (
    TokenBounds,
    TokenFigures,
    counting_of,
    gap_stats,
    token_checks,
    token_early_stopping,
    token_figures,
)
from loadtest.rules.validity import (
    CACHED,
    NO_RESPONSE_CACHE,
    OUTPUTS_MATCH,
    WRONG_OUTPUTS,
    Check,
    Verdict,
    with_check,
)
from loadtest.scenarios.mlperf.interpret import token_bounds
from loadtest.scenarios.mlperf.registry import interpret
from loadtest.scenarios.run import FinishedRun
from loadtest.server.deployment import Deployment

# What serves `backend: "onnxruntime"` in the embedded Triton: the wheel has no native ONNX Runtime
# backend, so a result measured there must say it measured a Python shim (server/backends/).
EMBEDDED_BACKEND = (
    "onnxruntime through loadtest's Python-based backend (onnxruntime's Python API inside "
    "Triton's Python backend stub), not Triton's native C++ ONNX Runtime backend"
)

TOKEN_ADVICE = (
    "Lower --qps until p99 time to first token and time per output token hold their bounds; "
    "an answer of one token has no TPOT (ask for more tokens: max_tokens)."
)
SCHEMA = "loadtest.result"
SCHEMA_VERSION = 1
__all__ = ["write_atomically"]  # re-exported: report/outputs.py holds it


def plain(value: Any) -> Any:
    """Dataclasses, enums, paths, numpy scalars and arrays -> JSON-able values; a Secret ->
    `***`."""
    if isinstance(value, Secret):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray) and value.ndim:
        return value.tolist()  # e.g. the given timestamps of an arrival law
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def build_environment(target: Target, deployment: Deployment) -> dict[str, Any]:
    """Where the numbers come from: client host and versions, and which server answered."""
    embedded = deployment.embedded
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "versions": {
            name: _version(name)
            for name in ("loadtest", "tritonclient", "numpy", "onnxruntime", "nvidia-pytriton")
        },
        "server": {
            "description": target.description,
            "url": redact_url(deployment.target.url),
            "protocol": deployment.target.protocol.value,
            "triton_version": target.server_version,
            "embedded": embedded is not None,
            "embedded_pid": embedded.pid if embedded else None,
            "embedded_startup_s": round(embedded.startup_s, 3) if embedded else None,
            "embedded_backend": EMBEDDED_BACKEND if embedded else None,
            # why its own side (statistics, CPU, metrics) is not read, when a target says so
            "unobserved": target.capabilities.unobserved or None,
        },
    }


@dataclasses.dataclass(frozen=True)
class RunReport:
    """One scenario run, interpreted: what every renderer (terminal, JSON, MLPerf text) reads."""

    settings: ScenarioSettings
    requested_target: TargetSettings
    target: TargetSettings
    measurement: Measurement
    summary: Summary
    verdict: Verdict
    environment: dict[str, Any]
    created_unix_s: float
    server_side: ServerSide | None = None  # Triton's split, server CPU, :8002 metrics
    timeline: Timeline | None = None  # per second, from the records (written with or without them)
    output_check: OutputCheck | None = None  # --check-outputs
    cache_check: CacheCheck | None = None  # --same-sample
    tokens: TokenFigures | None = None  # an answer in parts (streamed, LLM): rules/tokens.py
    token_bounds: TokenBounds | None = None
    stages: tuple[StageResult, ...] = ()  # --stages: each stage judged alone (rules/stage_results)
    goodput: Goodput | None = None  # --slo: requests meeting every SLO (rules/goodput.py)
    prompts: PromptFigures | None = None  # a text model's shaped prompts: rules/prompt_counts.py
    # requested vs achieved output length (rules/output_lengths.py), in `tokens` of result.json
    output_lengths: OutputLengths | None = None

    @classmethod
    def from_measurement(
        cls,
        settings: ScenarioSettings,
        requested: TargetSettings,
        resolved: TargetSettings,
        measurement: Measurement,
        environment: dict[str, Any],
        server_side: ServerSide | None = None,
        output_check: OutputCheck | None = None,
        cache_check: CacheCheck | None = None,
        prompts: PromptLibrary | None = None,
        max_tokens: np.ndarray | None = None,
        ignore_eos: np.ndarray | None = None,
    ) -> RunReport:
        summary, verdict = interpret(settings, measurement.outcome)
        if output_check is not None:
            passed = output_check.passed
            advice = "" if passed else WRONG_OUTPUTS
            verdict = with_check(
                verdict, Check(OUTPUTS_MATCH, passed, output_check.detail(), advice)
            )
        if cache_check is not None:
            passed = not cache_check.possible_cache
            advice = "" if passed else CACHED
            verdict = with_check(
                verdict, Check(NO_RESPONSE_CACHE, passed, cache_check.detail(), advice)
            )
        records = measurement.outcome.records
        counting = counting_of(resolved.protocol)
        tokens = token_figures(records, counting)
        bounds = None
        if tokens is not None:
            bounds = token_bounds_of(settings)
            for check in token_checks(records, bounds, counting):
                advice = "" if check.passed else TOKEN_ADVICE
                verdict = with_check(verdict, Check(check.name, check.passed, check.detail, advice))
        stages = _stages(settings, measurement)
        if stages:
            verdict = with_check(verdict, stages_check(stages))
        return cls(
            settings=settings,
            requested_target=requested,
            target=resolved,
            measurement=measurement,
            summary=summary,
            verdict=verdict,
            environment=environment,
            created_unix_s=time.time(),
            server_side=server_side,
            timeline=timeline(measurement.outcome.records),
            output_check=output_check,
            cache_check=cache_check,
            tokens=tokens,
            token_bounds=bounds,
            stages=stages,
            goodput=_goodput(settings, records),
            output_lengths=(
                None
                if tokens is None or max_tokens is None
                else output_lengths(records, max_tokens, resolved.ignore_eos, ignore_eos)
            ),
            prompts=(
                None
                if prompts is None
                else prompt_figures(
                    records,
                    prompts.input_tokens,
                    prompts.output_tokens,
                    prompts.tokenizer,
                    prompts.source,
                )
            ),
        )

    @classmethod
    def from_run(cls, run: FinishedRun) -> RunReport:
        """The report of a run played by scenarios.run.run_scenario (the deployment still up)."""
        return cls.from_measurement(
            run.settings,
            run.requested,
            run.resolved,
            run.measurement,
            build_environment(run.target, run.deployment),
            run.server_side,
            output_check=run.output_check,
            cache_check=run.cache_check,
            prompts=run.prompts,
            max_tokens=run.max_tokens,
            ignore_eos=run.ignore_eos,
        )

    @property
    def client_cpu_us_per_query(self) -> float:
        issued = int(self.measurement.outcome.records.issued.sum())
        return s_to_us(self.measurement.client_cpu_s) / issued if issued else 0.0

    def to_json(self) -> dict[str, Any]:
        outcome = self.measurement.outcome
        result: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "scenario": self.settings.scenario.value,
            "created_unix_s": self.created_unix_s,
            "settings": plain(self.settings),
            "target": {
                **plain(self.target),
                "url": redact_url(self.target.url),
                "requested_url": redact_url(self.requested_target.url),
            },
            "model": plain(self.measurement.model),
            "environment": self.environment,
            "run": {
                "started_unix_ns": outcome.started_unix_ns,
                "duration_ns": outcome.duration_ns,
                "interrupted": outcome.interrupted,
                "partial": self.verdict.partial,
                "stop_reason": outcome.stop_reason,
                "client_cpu_s": round(self.measurement.client_cpu_s, 6),
                "client_cpu_us_per_query": round(self.client_cpu_us_per_query, 3),
            },
            "summary": self.summary.to_dict(),
            "verdict": plain(self.verdict),
        }
        if self.measurement.client is not None:
            result["client"] = self.measurement.client.to_dict()
        if self.server_side is not None:
            result["server_side"] = self.server_side.to_dict()
        if self.timeline is not None:
            result["timeline"] = self.timeline.to_dict()
        if self.stages:
            result["stages"] = [stage.to_dict() for stage in self.stages]
        if self.output_check is not None:
            result["output_check"] = self.output_check.to_dict()
        if self.cache_check is not None:
            result["cache_check"] = self.cache_check.to_dict()
        if self.tokens is not None:
            result["tokens"] = self._tokens_json()
        if self.goodput is not None:
            result["goodput"] = self.goodput.to_json()
        if self.prompts is not None:
            result["prompts"] = self.prompts.to_json()
        if self.settings.keep_records:
            records = outcome.records
            result["records"] = {
                "error_kinds": records.error_kinds,
                "samples_per_query": records.samples_per_query,
                "columns": records.to_columns(),
            }
        return result

    def part_gaps(self) -> str:
        """The merged HDR histogram of the gaps between parts, encoded; "" without one."""
        client = self.measurement.client
        return client.histograms.get(PART_GAP, "") if client is not None else ""

    def inter_chunk_gaps(self) -> dict[str, int] | None:
        """The gaps between consecutive responses of one answer (ITL), from the merged HDR
        histogram (3 significant digits, not exact); None without one."""
        return itl_stats(self.part_gaps())

    def _tokens_json(self) -> dict[str, Any]:
        assert self.tokens is not None
        return tokens_json(self.tokens, self.part_gaps(), self.token_bounds, self.output_lengths)


ITL_ORIGIN = (
    "gaps between consecutive responses of one answer, HDR histogram (3 significant digits), "
    "merged over workers"
)


def itl_stats(part_gaps: str) -> dict[str, int] | None:
    """The ITL figures of an encoded gap histogram; None for none."""
    return gap_stats(decode_histograms([part_gaps])) if part_gaps else None


def tokens_json(
    tokens: TokenFigures,
    part_gaps: str,
    bounds: TokenBounds | None,
    lengths: OutputLengths | None = None,
) -> dict[str, Any]:
    """result.json's `tokens` object: the token figures, the ITL from the merged gap histogram
    (`part_gaps`, encoded; null without one), every figure's origin, the bounds, and the
    answers' lengths against the max_tokens asked (null when unknown)."""
    figures = tokens.to_json()
    figures["itl"] = itl_stats(part_gaps)
    figures["origins"]["itl"] = ITL_ORIGIN
    figures["bounds"] = bounds.to_json() if bounds else None
    figures["output_lengths"] = lengths.to_json() if lengths else None
    return figures


def token_bounds_of(settings: ScenarioSettings) -> TokenBounds:
    """The run's token bounds (a Server run's --ttft-bound/--tpot-bound or --mlperf-model)."""
    if isinstance(settings, ServerSettings):
        return token_bounds(settings)
    return TokenBounds()


def _goodput(settings: ScenarioSettings, records: Records) -> Goodput | None:
    """A Server run's goodput under its --slo objectives; None when none was given."""
    if isinstance(settings, ServerSettings) and settings.slos:
        return goodput(records, settings.slos)
    return None


def _stages(settings: ScenarioSettings, measurement: Measurement) -> tuple[StageResult, ...]:
    """A staged Server run's stages, each judged on its own queries; () for any other run."""
    if not isinstance(settings, ServerSettings):
        return ()
    arrivals = settings.arrivals
    if not isinstance(arrivals, StagedArrivals):
        return ()
    return stage_results(
        measurement.outcome.records, arrivals, settings.target_latency_ns, settings.percentile
    )


RUN_FILES = ("result.json", "mlperf_log_summary.txt")


def default_output_name(report: RunReport) -> str:
    """<stamp>-<scenario>-<model>: the directory under results/ when --output is not given
    (report/outputs.py makes it unique)."""
    scenario = report.settings.scenario.value.lower()
    return f"{stamp(report.created_unix_s)}-{scenario}-{report.target.model}"


def run_files(report: RunReport, data: dict[str, Any] | None = None) -> dict[str, str]:
    """RUN_FILES' contents: result.json (`data`, when already built) and mlperf_log_summary.txt."""
    return {
        "result.json": json.dumps(data or report.to_json(), indent=1) + "\n",
        "mlperf_log_summary.txt": render_summary_text(report),
    }


def render_summary_text(report: RunReport) -> str:
    """mlperf_log_summary.txt, for any scenario (under token bounds, LoadGen's token rule:
    early stopping and the performance constraint on the TTFT and TPOT arrays)."""
    bounds = report.token_bounds
    stopping, constraints_met = None, None
    if report.tokens is not None and bounds is not None and (bounds.ttft_ns or bounds.tpot_ns):
        records = report.measurement.outcome.records
        counting = counting_of(report.target.protocol)
        stopping = token_early_stopping(records, bounds, counting)
        held = [
            check.passed
            for check in token_checks(records, bounds, counting)
            if check.name.endswith(("TTFT", "TPOT")) and not check.name.startswith("early")
        ]
        constraints_met = all(held)
    return render_mlperf_summary(
        sut_name=str(report.environment["server"]["description"]),
        scenario=report.settings.scenario.value,
        summary=report.summary,
        verdict=report.verdict,
        test_parameters=report.settings.test_parameters(),
        tokens=report.tokens,
        token_stopping=stopping,
        token_constraints_met=constraints_met,
    )
