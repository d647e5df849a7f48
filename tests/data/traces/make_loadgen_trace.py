"""Writes mlperf_log_trace.json with MLPerf LoadGen (pip install mlcommons-loadgen); see README.md.

Not a test: run by hand, in an empty directory, to renew the file."""

import mlperf_loadgen as lg  # type: ignore[import-not-found]


def issue(samples):  # the SUT answers every sample at once: only the schedule matters here
    lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])


settings = lg.TestSettings()
settings.scenario = lg.TestScenario.Server
settings.mode = lg.TestMode.PerformanceOnly
settings.server_target_qps = 200
settings.server_target_latency_ns = 100_000_000
settings.min_query_count = 40
settings.min_duration_ms = 100
log = lg.LogSettings()
log.log_output.outdir = "."
log.log_output.copy_summary_to_stdout = False
log.enable_trace = True
sut = lg.ConstructSUT(issue, lambda: None)
qsl = lg.ConstructQSL(16, 16, lambda s: None, lambda s: None)
lg.StartTestWithLogSettings(sut, qsl, settings, log)
lg.DestroyQSL(qsl)
lg.DestroySUT(sut)
