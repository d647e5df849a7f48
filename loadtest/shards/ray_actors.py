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
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtest.core.settings import resolve_loop
from loadtest.engine import stopping, timing
from loadtest.engine.runner import OnStart
from loadtest.errors import LoadtestError, SettingsError, TargetError
from loadtest.shards.local import READY_TIMEOUT_S, play_shard
from loadtest.shards.merge import ShardResult, lost_shard_result
from loadtest.shards.plan import ShardPlan
from loadtest.shards.ray_cluster import one_line, ray_session

logger = logging.getLogger(__name__)

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

    def prepare(self, plan: ShardPlan) -> ActorPlace:
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
        return self._place

    @property
    def _place(self) -> ActorPlace:
        import ray

        # Outside a Ray worker (the class used as is) there is no node, and asking for one
        # would start a whole Ray node through Ray's auto-init hook (a CI run's 30 s timeout).
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return ActorPlace(host=socket.gethostname(), pid=os.getpid(), node=node)

    def run(self, start_unix_ns: int, lease_s: float = LEASE_S) -> ShardResult:
        """Play from the common start; without a heartbeat for `lease_s` (0 = no lease), stop."""
        self._last_beat = time.monotonic()
        if lease_s:
            threading.Thread(
                target=self._keep_lease, args=(lease_s,), name="loadtest-lease", daemon=True
            ).start()
        self._start.set_result(start_unix_ns)
        return dataclasses.replace(self._result.result(), node=self._place.node)

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


@dataclass(frozen=True)
class ActorPlace:
    """Where an actor runs: enough to name a shard whose actor is later lost."""

    host: str
    pid: int
    node: str  # Ray node id


def _lost(
    plan: ShardPlan, place: ActorPlace, start_unix_ns: int, exc: BaseException
) -> ShardResult:
    reason = (
        f"shard {plan.shard} lost: its Ray actor (pid {place.pid} on {place.host}, node "
        f"{place.node[:12]}) died mid-run ({one_line(exc)}); its {len(plan.schedule())} scheduled "
        "queries count as never answered"
    )
    logger.warning("loadtest: %s", reason)
    return lost_shard_result(
        plan.shard,
        plan.schedule(),
        place.host,
        place.pid,
        place.node,
        start_unix_ns,
        plan.settings.late_threshold_ns,
        reason,
    )


def _collect(
    ray: Any, runs: dict[Any, tuple[ShardPlan, ActorPlace]], start_unix_ns: int
) -> list[ShardResult]:
    """Each shard's result as it comes; a shard whose actor dies is recorded as lost and the
    others play on (a shard that fails with an error of its own fails the run)."""
    results: dict[int, ShardResult] = {}
    pending = list(runs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            plan, place = runs[ref]
            try:
                results[plan.shard] = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                results[plan.shard] = _lost(plan, place, start_unix_ns, exc)
    return [results[shard] for shard in sorted(results)]


def _run_on_ray(
    plans: list[ShardPlan], address: str, before_start: Callable[[], None] = lambda: None
) -> list[ShardResult]:
    import ray

    with ray_session(address, len(plans)):
        remote: Any = ray.remote  # its typed overloads know functions' options, not actors'
        actor_class = remote(num_cpus=1, max_concurrency=ACTOR_CONCURRENCY)(ShardActor)
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
                places: list[ActorPlace] = ray.get(
                    [a.prepare.remote(p) for a, p in zip(actors, plans, strict=True)],
                    timeout=READY_TIMEOUT_S + 30,
                )
                before_start()  # every actor is ready: whoever observes the server starts now
                start_unix_ns = time.time_ns() + RAY_START_DELAY_NS
                runs = {
                    a.run.remote(start_unix_ns): (plan, place)
                    for a, plan, place in zip(actors, plans, places, strict=True)
                }
                threading.Thread(target=keep_alive, name="loadtest-heartbeat", daemon=True).start()
                return _collect(ray, runs, start_unix_ns)
            except ray.exceptions.GetTimeoutError:
                raise TargetError(
                    f"the Ray cluster at {address!r} did not place {len(plans)} one-CPU actors "
                    f"within {READY_TIMEOUT_S:g} s (too few free CPUs?)"
                ) from None
            except ray.exceptions.RayError as exc:
                raise TargetError(f"a Ray shard failed: {one_line(exc)}") from None
        finally:
            done.set()
            for actor in actors:
                ray.kill(actor)


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
