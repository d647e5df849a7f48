"""Shards on Ray actors: the generator spread over the hosts of a Ray cluster (`--ray ADDRESS`).

Each shard runs in its own actor (one CPU each, spread over the nodes), exactly as a local worker
process would: open the target, build the same sample library, then wait at a barrier. The driver
then picks a start instant on the wall clock, START_DELAY_NS ahead, and every actor converts it to
its own monotonic clock; across hosts the start is only as simultaneous as their clocks are
synchronised (NTP keeps that within a millisecond or so). Results come back as the same
ShardResult and merge the same way (workers.merge_shards).

The actor keeps the target open between the barrier and the run on its own thread's event loop
(the precise loop or uvloop, as for local workers), so the loop Ray runs actors on plays no part
in timing. `address`: "local" starts a private Ray on this machine; "auto" joins the cluster this
machine belongs to; "ray://HEAD:10001" goes through Ray Client.

Stopping: the actors are threaded (max_concurrency), so `stop` and `heartbeat` reach one while it
plays. A stop of the driver (SIGINT, SIGTERM) is passed on as `stop(reason)`: drain, partial shard.
While playing, the driver sends a heartbeat every HEARTBEAT_S; an actor that hears none for
LEASE_S (the driver died, SIGKILL included, or lost the cluster) stops issuing at once, so no
query is sent much more than LEASE_S after the driver is gone, whatever Ray's own clean-up takes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from loadtest.core.settings import resolve_loop
from loadtest.engine import stopping, timing
from loadtest.engine.runner import OnStart
from loadtest.errors import LoadtestError, SettingsError, TargetError
from loadtest.shards.local import READY_TIMEOUT_S, play_shard
from loadtest.shards.merge import ShardResult
from loadtest.shards.plan import ShardPlan

RAY_START_DELAY_NS = 2_000_000_000  # barrier -> t = 0: delivering "run" to remote actors
HEARTBEAT_S = 0.2  # the driver's heartbeat to each playing actor
LEASE_S = 0.8  # an actor that hears no heartbeat for this long stops at once
ACTOR_CONCURRENCY = 4  # run + heartbeat + stop can be in progress together


class ShardActor:
    """One shard's generator inside a Ray actor: `prepare(plan)` then `run(start_unix_ns)`;
    `heartbeat()` while it runs, `stop(reason)` to end it early (see the module docstring)."""

    def __init__(self) -> None:
        self._start: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._result: concurrent.futures.Future[ShardResult] = concurrent.futures.Future()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_beat = time.monotonic()

    def prepare(self, plan: ShardPlan) -> bool:
        async def until_start() -> int:
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            return await asyncio.wrap_future(self._start)

        def body() -> None:
            loop = resolve_loop(plan.client.loop, plan.settings.qps / plan.shards)
            try:
                self._result.set_result(timing.run(play_shard(plan, until_start), loop.value))
            except BaseException as exc:  # handed to the driver through the future
                self._result.set_exception(exc)
                self._ready.set()

        threading.Thread(target=body, name=f"loadtest-shard-{plan.shard}", daemon=True).start()
        if not self._ready.wait(READY_TIMEOUT_S):
            raise LoadtestError(f"shard {plan.shard} was not ready within {READY_TIMEOUT_S:g} s")
        if self._result.done():
            self._result.result()  # re-raises what went wrong while preparing
        return True

    def run(self, start_unix_ns: int, lease_s: float = LEASE_S) -> ShardResult:
        """Play from the common start; without a heartbeat for `lease_s` (0 = no lease), stop."""
        self._last_beat = time.monotonic()
        if lease_s:
            threading.Thread(
                target=self._keep_lease, args=(lease_s,), name="loadtest-lease", daemon=True
            ).start()
        self._start.set_result(start_unix_ns)
        return self._result.result()

    def heartbeat(self) -> None:
        self._last_beat = time.monotonic()

    def stop(self, reason: str, urgent: bool = False) -> None:
        """End the run early: stop issuing, drain briefly (not when `urgent`), partial shard."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the run is over
                loop.call_soon_threadsafe(stopping.request_stop, None, reason, urgent)

    def _keep_lease(self, lease_s: float) -> None:
        while not self._result.done():
            silent = time.monotonic() - self._last_beat
            if silent > lease_s:
                self.stop(f"no heartbeat from the driver for {silent:.1f} s", urgent=True)
                return
            time.sleep(lease_s / 8)


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    text = str(cause) if cause is not None else str(exc)
    return text.strip().splitlines()[-1] if text.strip() else type(exc).__name__


def _run_on_ray(
    plans: list[ShardPlan], address: str, before_start: Callable[[], None] = lambda: None
) -> list[ShardResult]:
    import ray

    try:
        ray.init(
            address=None if address == "local" else address,
            ignore_reinit_error=True,
            logging_level=logging.ERROR,
            log_to_driver=False,
            include_dashboard=False,
        )
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError depending on the form
        raise TargetError(
            f"cannot reach the Ray cluster at {address!r}: {_one_line(exc)}"
        ) from None
    actor_class: Any = ray.remote(num_cpus=1, max_concurrency=ACTOR_CONCURRENCY)(ShardActor)
    actors = [actor_class.options(scheduling_strategy="SPREAD").remote() for _ in plans]
    done = threading.Event()

    def keep_alive() -> None:
        """Heartbeats while the actors play; the stop request, once, when there is one."""
        told = False
        while not done.wait(HEARTBEAT_S):
            reason = stopping.requested()
            for actor in actors:
                if reason and not told:
                    actor.stop.remote(reason)
                actor.heartbeat.remote()
            told = told or bool(reason)

    try:
        try:
            ray.get(
                [a.prepare.remote(p) for a, p in zip(actors, plans, strict=True)],
                timeout=READY_TIMEOUT_S + 30,
            )
            before_start()  # every actor is ready: whoever observes the server starts now
            start_unix_ns = time.time_ns() + RAY_START_DELAY_NS
            runs = [a.run.remote(start_unix_ns) for a in actors]
            threading.Thread(target=keep_alive, name="loadtest-heartbeat", daemon=True).start()
            results: list[ShardResult] = ray.get(runs)
        except ray.exceptions.GetTimeoutError:
            raise TargetError(
                f"the Ray cluster at {address!r} did not place {len(plans)} one-CPU actors "
                f"within {READY_TIMEOUT_S:g} s (too few free CPUs?)"
            ) from None
        except ray.exceptions.RayError as exc:
            raise TargetError(f"a Ray shard failed: {_one_line(exc)}") from None
    finally:
        done.set()
        for actor in actors:
            ray.kill(actor)
    return results


async def run_ray_shards(
    plans: list[ShardPlan],
    address: str,
    on_start: OnStart | None = None,
) -> list[ShardResult]:
    """Play the plans on Ray actors at `address`; one clear line if Ray is absent or away.

    `on_start` runs on this loop once every actor is ready, before the start instant is chosen."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SettingsError(
            "--ray needs Ray: pip install 'loadtest[ray]' (or pip install ray)"
        ) from None
    loop = asyncio.get_running_loop()

    def before_start() -> None:  # on the executor thread; the hook itself runs on the loop
        if on_start is not None:
            asyncio.run_coroutine_threadsafe(on_start(), loop).result(READY_TIMEOUT_S)

    with stopping.catching(loop):  # the heartbeat thread passes a stop request on to the actors
        return await loop.run_in_executor(None, _run_on_ray, plans, address, before_start)
