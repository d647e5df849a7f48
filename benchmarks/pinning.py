"""Server and client on disjoint cores, as a real deployment separates them.

When the benchmarks start the server on this machine (the stub or the embedded Triton), client
and server otherwise share every core, and a late send measures the scheduler as much as the
client: the issuer waits in a run queue while a server thread holds its core
(benchmarks/issuer_runqueue.py measured it). Pinning gives each side its own cores.

Linux affinity is per thread, and a new thread or process inherits the mask of the thread that
made it. So a server is started while every thread of this process is on the server's cores
(whatever it starts later, Triton's Python backend stubs included, inherits them), then the
whole server tree is swept once more, and this process moves to the client's cores, where the
loop thread, worker processes and perf_analyzer inherit them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass

import psutil

from loadtest.stub.process import Stub, running_stub


@dataclass(frozen=True)
class Cores:
    """The client's cores and the server's: disjoint."""

    client: frozenset[int]
    server: frozenset[int]

    def describe(self) -> str:
        return f"client on cores {format_cores(self.client)}, server on {format_cores(self.server)}"


def parse_cores(text: str) -> frozenset[int]:
    """Cores written as "0", "0,2" or "0-3,6", as a set."""
    cores: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return frozenset(cores)


def format_cores(cores: frozenset[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))


def split_cores(client: str | None = None, server: str | None = None) -> Cores:
    """The cores this process may use, split in two halves (the client takes the lower), or as
    given; ValueError when they overlap, are empty, or are not allowed here."""
    allowed = frozenset(os.sched_getaffinity(0))
    ordered = sorted(allowed)
    if len(ordered) < 2 and (client is None or server is None):
        raise ValueError(f"pinning needs two cores; this process may use {format_cores(allowed)}")
    half = len(ordered) // 2
    cores = Cores(
        client=parse_cores(client) if client else frozenset(ordered[:half]),
        server=parse_cores(server) if server else frozenset(ordered[half:]),
    )
    if not cores.client or not cores.server or cores.client & cores.server:
        raise ValueError(
            f"client and server cores must be disjoint and not empty: client "
            f"{format_cores(cores.client) or 'none'}, server {format_cores(cores.server) or 'none'}"
        )
    if not (cores.client | cores.server) <= allowed:
        raise ValueError(f"cores {format_cores(cores.client | cores.server)} are not all "
                         f"allowed here ({format_cores(allowed)})")  # fmt: skip
    return cores


def pin_process(pid: int, cores: frozenset[int]) -> int:
    """Every thread of `pid` on `cores`; how many threads were pinned."""
    pinned = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cores)
            pinned += 1
        except (ProcessLookupError, FileNotFoundError):
            pass  # the thread ended meanwhile
    return pinned


def pin_tree(pid: int, cores: frozenset[int]) -> tuple[int, int]:
    """`pid`, its descendants and all their threads on `cores`: (processes, threads)."""
    try:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    threads = sum(pin_process(process.pid, cores) for process in processes)
    return len(processes), threads


@contextmanager
def this_process_on(cores: frozenset[int]) -> Iterator[None]:
    """Every thread of this process on `cores` for the block (what it starts inherits them),
    then back where they were."""
    before = frozenset(os.sched_getaffinity(0))
    pin_process(os.getpid(), cores)
    try:
        yield
    finally:
        pin_process(os.getpid(), before)


def allowed_cores(pid: int, descendants: bool = True) -> frozenset[int]:
    """The union of the cores the threads of `pid` (and its descendants) may run on: what a run
    prints to show that the pinning held."""
    union: set[int] = set()
    try:
        processes = [psutil.Process(pid)]
        if descendants:
            processes += psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return frozenset()
    for process in processes:
        try:
            tids = os.listdir(f"/proc/{process.pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            with suppress(ProcessLookupError, FileNotFoundError):
                union.update(os.sched_getaffinity(int(tid)))
    return frozenset(union)


def choose_cores(client: str | None, server: str | None, no_pin: bool) -> tuple[Cores | None, str]:
    """The pinning a benchmark asked for (None: --no-pin, or one core only) and the line that
    says so; ValueError for cores asked for that cannot be given."""
    if no_pin:
        if client or server:
            raise ValueError("--client-cores/--server-cores pin: drop --no-pin")
        return None, "pinning: none (client and server share every core)"
    try:
        cores = split_cores(client, server)
    except ValueError as error:
        if client or server:
            raise
        return None, f"pinning: none ({error})"
    return cores, f"pinning: {cores.describe()}"


@contextmanager
def stub_on(cores: Cores | None, *options: str) -> Iterator[Stub]:
    """`loadtest stub` with these options, started on the server's cores (its whole tree swept
    once more), while this process stays where it was."""
    with ExitStack() as stack:
        with this_process_on(cores.server) if cores else nullcontext():
            stub = stack.enter_context(running_stub(*options))
        if cores:
            pin_tree(stub.pid, cores.server)
        yield stub


def add_pinning_arguments(parser: argparse.ArgumentParser) -> None:
    """--client-cores, --server-cores and --no-pin, as every benchmark with a local server takes
    them."""
    parser.add_argument("--client-cores", help="the client's cores, e.g. 0 (default: lower half)")
    parser.add_argument("--server-cores", help="the server's cores, e.g. 1 (default: upper half)")
    parser.add_argument("--no-pin", action="store_true", help="client and server share all cores")
