"""--same-sample: the interleaved probe behind the cache check (rules/cache_check.py judges it).

Why interleaved, one in flight, after the scenario: the two kinds of query (one sample repeated,
samples never sent before) alternate, in a seeded random order within each pair, so drift of a
shared machine (another process, a warming server, frequency changes) lands on both alike, which
two back-to-back runs cannot promise; one query in flight measures the service itself, without a
queue that would amplify noise. It runs on the already open target after the scenario, so the
scenario's own figures are untouched. The unique samples are extra samples of the library that
nothing sent before (the run used only the first part of the library, and they are drawn afresh
each run: the same "unique" samples as the last run would already be in a cache); the repeated
one is sent twice first, so a cache holds it.
"""

from __future__ import annotations

import time

import numpy as np

from loadtest.core.target import Target
from loadtest.rules.cache_check import CacheCheck, judge_cache

PROBE_PAIRS = 200  # 400 queries: ~0.3 s on tiny here; the ratio's CI is a few % wide


async def _cache_hits(target: Target) -> int | None:
    """Triton's cumulative cache_hit count for the model; None without a Triton behind."""
    endpoint = target.capabilities.triton
    if endpoint is None:
        return None
    from loadtest.observe.triton_statistics import TritonStatistics

    statistics = TritonStatistics(
        endpoint.url,
        endpoint.protocol,
        endpoint.model,
        endpoint.version,
        tls=endpoint.tls,
        headers=endpoint.headers,
    )
    try:
        return (await statistics.read()).cache_hit_count
    except Exception:  # statistics are corroboration only; the check stands on latency
        return None
    finally:
        await statistics.close()


async def probe_cache(
    target: Target, same_index: int, unique_indices: list[int], seed: int
) -> CacheCheck:
    """Send len(unique_indices) pairs (unique, same), seeded order within each pair; judge."""
    rng = np.random.Generator(np.random.PCG64([seed, 0x63616368]))
    for _ in range(2):  # into the cache, if there is one
        await target.infer(same_index)
    hits_before = await _cache_hits(target)
    same_ns: list[int] = []
    unique_ns: list[int] = []
    for unique in unique_indices:
        pair = [(unique, unique_ns), (same_index, same_ns)]
        if rng.random() < 0.5:
            pair.reverse()
        for index, into in pair:
            start = time.perf_counter_ns()
            error = await target.infer(index)
            if error is None:
                into.append(time.perf_counter_ns() - start)
    hits_after = await _cache_hits(target)
    hits = None if hits_before is None or hits_after is None else hits_after - hits_before
    return judge_cache(np.asarray(unique_ns), np.asarray(same_ns), seed, hits)
