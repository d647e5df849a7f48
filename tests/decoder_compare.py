"""One `compare` of the suite decoder played in-process, for the tests: the setup the command
would build, the session, the result and the sample library's max_tokens (to hold every answer
to its requested length). Used by test_compare_decoder.py (two in-process sides, fast) and
test_decoder_triton.py (the real embedded Triton against native)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.core.settings import (
    NS_PER_MS,
    NS_PER_S,
    PeakSettings,
    Protocol,
    ServerSettings,
    TargetSettings,
)
from loadtest.engine import timing
from loadtest.engine.samples import sample_library
from loadtest.scenarios.experiments import compare_run
from loadtest.scenarios.experiments.compare_run import (
    NATIVE,
    CompareResult,
    CompareSession,
    CompareSetup,
)
from loadtest.scenarios.searches import compare_peak_run
from loadtest.scenarios.searches.compare_peak_run import ComparePeaks
from loadtest.scenarios.target_flags import TargetFlags
from loadtest.server.deployment import Deployment, EmbeddedMode
from loadtest.targets.native_decoder import NativeDecoderTarget

NAME = "gpt_tiny_l2_d128"


@dataclass(frozen=True)
class Played:
    setup: CompareSetup
    session: CompareSession
    result: CompareResult
    max_tokens: np.ndarray  # per sample of the library


def decoder_setup(
    repository: Path,
    url: str,
    qps: float,
    seconds: float,
    ttft_bound_ns: int = 0,
    tpot_bound_ns: int = 0,
) -> CompareSetup:
    """With token bounds each run is judged by LoadGen's LLM rule, not the end-to-end bound."""
    flags = TargetFlags(
        model=NAME,
        url=url,
        protocol=Protocol.GRPC_STREAM,
        model_version="",
        timeout_s=30.0,
        embedded=EmbeddedMode.NEVER,
        repository=repository,
        input_data=None,
        shapes={},
    )
    settings = ServerSettings(
        qps=qps,
        target_latency_ns=2000 * NS_PER_MS,
        min_duration_ns=int(seconds * NS_PER_S),
        min_query_count=1,
        sample_count=8,
        late_threshold_ns=50 * NS_PER_MS,
        ttft_bound_ns=ttft_bound_ns,
        tpot_bound_ns=tpot_bound_ns,
    )
    return CompareSetup(
        flags=flags,
        targets=("triton-grpc-stream", NATIVE),
        runs=(settings,),
        agreement_samples=2,
    )


def _measured(setup: CompareSetup, session: CompareSession) -> Played:
    result = timing.run(compare_run.measure(session, setup, lambda text: None))
    library = sample_library(
        result.spec, setup.base.sample_count, setup.base.sample_seed, prompts=setup.flags.prompts
    )
    max_tokens = np.array([int(np.asarray(s["max_tokens"]).reshape(-1)[0]) for s in library])
    return Played(setup, session, result, max_tokens)


def play(setup: CompareSetup) -> Played:
    """The comparison as the command plays it: Triton found at the setup's URL."""
    with compare_run.opened(setup, lambda text: None) as session:
        return _measured(setup, session)


def _in_process_session(setup: CompareSetup) -> CompareSession:
    """Both sides the in-process decoder loop (the Triton name played by a second copy): the
    whole comparison path, its arithmetic and its files, without a server."""
    repository, model = setup.flags.repository, setup.flags.model
    sides = {name: NativeDecoderTarget.from_repository(repository, model) for name in setup.targets}
    return CompareSession(
        targets=dict(sides),
        native=sides[NATIVE],
        deployment=Deployment(TargetSettings(url="in-process", model=model), None),
        urls={},
        metrics_url=None,
        server_pid=None,
    )


def play_peaks_in_process(setup: CompareSetup, peak: PeakSettings) -> ComparePeaks:
    """The fixed-rate runs and then the interleaved peak search, both sides in-process."""
    session = _in_process_session(setup)
    _, peaks = timing.run(compare_peak_run.measure(session, setup, peak, lambda text: None))
    assert peaks is not None
    return peaks


def play_in_process(setup: CompareSetup) -> Played:
    """Both sides the in-process decoder loop (the Triton name played by a second copy): the
    whole comparison path, its arithmetic and its files, without a server."""
    return _measured(setup, _in_process_session(setup))
