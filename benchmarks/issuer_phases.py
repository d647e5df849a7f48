"""Where one open-loop generator process spends its time, per phase, at each rate.

One Server run per rate against a running server (a Triton or `loadtest stub`), in this process,
printing beside send lag, CPU per query and send-gap CV: the issuer's per-phase counters
(engine/runner.py IssuerCounters: timer sleeps, spin turns and spin time per query, share of
queries sent by a completion) and the garbage collector's collections during the run (count and
time per generation). docs/grpc-load-path.md shows what these found.

    python benchmarks/issuer_phases.py --url 127.0.0.1:8001 --protocol grpc --rates 1000 2000
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import numpy as np

from loadtest.core.schedule import NS_PER_S, server_schedule
from loadtest.engine import timing
from loadtest.engine.runner import Runner
from loadtest.engine.samples import random_samples
from loadtest.engine.selfmeasure import send_gap_cv
from loadtest.targets import triton_target


class Collections:
    """gc.callbacks: collections per generation and the time they took."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = int(info["generation"])
            self.count[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started

    def line(self) -> str:
        pairs = zip(self.count, self.seconds, strict=True)
        return " ".join(f"gen{g} {n}×/{1e3 * s:.0f} ms" for g, (n, s) in enumerate(pairs))


async def one_rate(url: str, protocol: str, model: str, qps: float, seconds: float) -> str:
    target = triton_target(url, protocol, model)
    spec = await target.open()
    await target.prepare(random_samples(spec, 64, seed=1))
    schedule = server_schedule(qps, int(seconds * NS_PER_S), 1, 64, 0, 1)
    runner = Runner(schedule, target)
    collections = Collections()
    gc.callbacks.append(collections)
    cpu = time.process_time()
    try:
        outcome = await runner.run(handle_sigint=False)
    finally:
        cpu = time.process_time() - cpu
        gc.callbacks.remove(collections)
        await target.close()
    records = outcome.records
    lag = records.send_lag_ns()
    n = max(1, len(lag))
    c = runner.counters
    return (
        f"{qps:7.0f}  lag p99 {np.percentile(lag, 99) / 1e6:8.3f} ms  "
        f"on time {100 * (lag <= 1_000_000).mean():6.2f} %  CPU {cpu * 1e6 / n:4.0f} µs/q  "
        f"CV {send_gap_cv(records.issued_ns):.3f}  ok {int(records.ok.sum())}/{n}\n"
        f"         timer sleeps/q {c.timer_sleeps / n:.2f}  spin turns/q {c.spin_turns / n:.1f}  "
        f"spin µs/q {c.spin_ns / n / 1e3:.0f}  sent by completions "
        f"{100 * c.sent_by_completions / n:.0f} %  GC {collections.line()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--rates", nargs="+", type=float, default=[1000, 2000, 3000])
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    print(f"{args.protocol} {args.url} model {args.model}, {args.seconds:g} s per rate, 1 process")
    for qps in args.rates:
        line = timing.run(one_rate(args.url, args.protocol, args.model, qps, args.seconds))
        print(line, flush=True)


if __name__ == "__main__":
    main()
