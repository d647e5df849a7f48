"""The cache check (MLPerf TEST04's idea): is one sample sent again and again answered faster
than samples the server has never seen?

A server that caches responses (Triton's response cache, a proxy, a memoizing model) answers a
repeated input without computing it, so its latency with unique samples is the honest one. The
probe (engine/cache_probe.py) interleaves the two kinds of query; this judges the latencies.

"Possible cache" means both:
- the same sample is at least MIN_GAIN faster: the upper end of the 95 % bootstrap interval of
  median(same) / median(unique) is below 1 − MIN_GAIN (TEST04 allows 10 % between the two runs);
- and the gap is not chance: a one-sided Mann-Whitney U test (same < unique) gives p < ALPHA.
A repeated input also warms the CPU caches and branch predictors a little, so a small gap is
expected without any response cache; the 10 % margin keeps that quiet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.core.units import ns_to_us

MIN_GAIN = 0.10
ALPHA = 1e-3
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class CacheCheck:
    """Latencies of the interleaved probe and the verdict on them (times in ns, from the send)."""

    pairs: int
    unique_median_ns: float
    same_median_ns: float
    ratio: float  # median(same) / median(unique)
    ratio_low: float  # its 95 % bootstrap interval
    ratio_high: float
    p_value: float  # one-sided Mann-Whitney U, H1: same-sample latencies are smaller
    server_cache_hits: int | None = None  # Triton's own cache_hit count over the probe, if read
    unique_seed: int = 0  # the seed the unique samples were drawn with (fresh each run)

    @property
    def possible_cache(self) -> bool:
        return self.ratio_high < 1 - MIN_GAIN and self.p_value < ALPHA

    def detail(self) -> str:
        hits = (
            ""
            if self.server_cache_hits is None
            else f"; Triton counted {self.server_cache_hits} cache hits"
        )
        verdict = "possible response cache" if self.possible_cache else "no cache seen"
        return (
            f"cache check, {verdict}: same-sample median {ns_to_us(self.same_median_ns):.0f} µs vs "
            f"unique {ns_to_us(self.unique_median_ns):.0f} µs (ratio {self.ratio:.2f}, 95 % CI "
            f"{self.ratio_low:.2f}–{self.ratio_high:.2f}, Mann-Whitney p = {self.p_value:.1e}, "
            f"{self.pairs} interleaved pairs, one in flight, latency from send){hits}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "pairs": self.pairs,
            "unique_median_ns": self.unique_median_ns,
            "same_median_ns": self.same_median_ns,
            "ratio": self.ratio,
            "ratio_ci95": [self.ratio_low, self.ratio_high],
            "mann_whitney_p": self.p_value,
            "min_gain": MIN_GAIN,
            "alpha": ALPHA,
            "server_cache_hits": self.server_cache_hits,
            "unique_samples_seed": self.unique_seed,
            "possible_cache": self.possible_cache,
        }


def judge_cache(
    unique_ns: np.ndarray, same_ns: np.ndarray, seed: int = 0, server_cache_hits: int | None = None
) -> CacheCheck:
    """The ratio of medians with its bootstrap interval and the rank test, from both samples."""
    unique = np.asarray(unique_ns, dtype=np.float64)
    same = np.asarray(same_ns, dtype=np.float64)
    if len(unique) < 2 or len(same) < 2:
        raise ValueError("the cache check needs at least 2 latencies of each kind")
    rng = np.random.Generator(np.random.PCG64(seed))
    boot_unique = np.median(rng.choice(unique, (BOOTSTRAP_RESAMPLES, len(unique))), axis=1)
    boot_same = np.median(rng.choice(same, (BOOTSTRAP_RESAMPLES, len(same))), axis=1)
    ratios = boot_same / boot_unique
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    # Imported here: scipy.stats costs ~0.3 s at start-up, paid by every command that never
    # judges a cache (most of them), and by every CLI process the tests start.
    from scipy.stats import mannwhitneyu

    p_value = float(mannwhitneyu(same, unique, alternative="less").pvalue)
    return CacheCheck(
        pairs=min(len(unique), len(same)),
        unique_median_ns=float(np.median(unique)),
        same_median_ns=float(np.median(same)),
        ratio=float(np.median(same) / np.median(unique)),
        ratio_low=float(low),
        ratio_high=float(high),
        p_value=p_value,
        server_cache_hits=server_cache_hits,
    )
