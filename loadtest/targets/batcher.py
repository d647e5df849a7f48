"""An in-process dynamic batcher that mirrors Triton's `dynamic_batching`, for the native target.

Why: a Triton model with `dynamic_batching` merges concurrent requests into one execution, so a
native run that calls the model once per request would be a different system, and comparing the
two would credit (or blame) Triton for batching rather than for serving. This batcher behaves like
Triton's default dynamic batcher:

- requests wait in one FIFO queue; a batch is formed only when a model instance is free (so under
  load, batches grow naturally from the backlog, as in Triton);
- once an instance is free and a request is queued, the batcher gathers queued requests until the
  batch holds `max_batch_size` samples or the *oldest* request has waited `max_queue_delay_ns`,
  whichever comes first, then runs it (a delay of 0 sends whatever is queued at once);
- a request is never split across batches; the batch is concatenated on axis 0, run once, and the
  outputs are split back by each request's batch size.

It runs in its own thread, not on the event loop: asyncio timers are only millisecond-precise on
these machines, while Triton's queue delays are often 100 µs. Results go back to the caller's loop
with `call_soon_threadsafe`, the same hop `run_in_executor` makes. What it formed (batch sizes,
each request's queue wait) is kept for tests and reports.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from loadtest.core.units import ns_to_s

Feeds = Mapping[str, np.ndarray]
RunBatch = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class _Pending:
    feeds: Feeds
    size: int
    enqueued_ns: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[np.ndarray]]


@dataclass(frozen=True)
class BatcherStats:
    """What the batcher formed so far: one entry per batch / per request."""

    batch_sizes: tuple[int, ...]  # samples per executed batch
    queue_wait_ns: tuple[int, ...]  # enqueue -> batch dispatch, per request

    @property
    def mean_batch_size(self) -> float:
        return sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else 0.0


class DynamicBatcher:
    """Queue -> batches of ≤ max_batch_size samples -> `run` on one of `instances` workers."""

    def __init__(
        self,
        run: RunBatch,
        max_batch_size: int,
        max_queue_delay_ns: int,
        executor: ThreadPoolExecutor,
        instances: int,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be ≥ 1")
        if max_queue_delay_ns < 0:
            raise ValueError("max_queue_delay_ns must be ≥ 0")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ns = max_queue_delay_ns
        self._executor = executor
        self._free = threading.Semaphore(instances)
        self._clock = clock
        self._queue: collections.deque[_Pending] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._batch_sizes: list[int] = []
        self._waits: list[int] = []
        self._thread = threading.Thread(target=self._loop, name="loadtest-batcher", daemon=True)
        self._thread.start()

    def stats(self) -> BatcherStats:
        with self._cond:
            return BatcherStats(tuple(self._batch_sizes), tuple(self._waits))

    async def submit(self, feeds: Feeds) -> list[np.ndarray]:
        """Queue one request (tensors with their batch dimension); its outputs, in order."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        size = int(next(iter(feeds.values())).shape[0])
        if size > self.max_batch_size:
            raise ValueError(f"request batch {size} exceeds max_batch_size {self.max_batch_size}")
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._queue.append(_Pending(feeds, size, self._clock(), loop, future))
            self._cond.notify()
        return await future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # -- the batcher thread ---------------------------------------------------------------------
    def _gather(self) -> list[_Pending] | None:
        """Wait for a request, then for more until full or the oldest's delay is spent."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = self._queue[0].enqueued_ns + self.max_queue_delay_ns
            while not self._closed:
                queued = sum(p.size for p in self._queue)
                remaining = deadline - self._clock()
                if queued >= self.max_batch_size or remaining <= 0:
                    break
                self._cond.wait(ns_to_s(remaining))
            batch: list[_Pending] = []
            total = 0
            while self._queue and total + self._queue[0].size <= self.max_batch_size:
                pending = self._queue.popleft()
                batch.append(pending)
                total += pending.size
            now = self._clock()
            self._batch_sizes.append(total)
            self._waits.extend(now - p.enqueued_ns for p in batch)
            return batch

    def _loop(self) -> None:
        while True:
            self._free.acquire()
            batch = self._gather()
            if batch is None:
                self._free.release()
                self._fail_queued()
                return
            self._executor.submit(self._execute, batch)

    def _execute(self, batch: list[_Pending]) -> None:
        try:
            names = list(batch[0].feeds)
            feeds = {
                name: np.concatenate([p.feeds[name] for p in batch])
                if len(batch) > 1
                # one request: no copy
                else np.asarray(batch[0].feeds[name])
                for name in names
            }
            outputs = self._run(feeds)
        except Exception as exc:  # every request of the batch gets the error
            for p in batch:
                p.loop.call_soon_threadsafe(_set_exception, p.future, exc)
            return
        finally:
            self._free.release()
        offset = 0
        for p in batch:
            parts = [out[offset : offset + p.size] for out in outputs]
            offset += p.size
            p.loop.call_soon_threadsafe(_set_result, p.future, parts)

    def _fail_queued(self) -> None:
        with self._cond:
            left, self._queue = list(self._queue), collections.deque()
        for p in left:
            p.loop.call_soon_threadsafe(_set_exception, p.future, RuntimeError("batcher closed"))


def _set_result(future: asyncio.Future[list[np.ndarray]], value: list[np.ndarray]) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[list[np.ndarray]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
