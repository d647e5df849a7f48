"""Attaching to Ray for one run, and leaving it as it was found (`--ray ADDRESS`).

`local` starts a private one-host Ray inside this process (`ray.init`): no dashboard, no usage
stats, exactly as many CPUs as there are shards, and its own temporary directory. Stopping it is
ours to do in full: `ray.shutdown()` gives each process it started one second after SIGTERM, and
on a busy host the raylet often needs more, is SIGKILLed, and its two agents (DashboardAgent,
RuntimeEnvAgent) then spend a minute trying to report that to a GCS that is already gone. So the
processes of our node are listed (the node's own processes and everything below them) before the
shutdown, and whichever of them is still alive after it gets SIGTERM, then SIGKILL. The temporary
directory is removed. Nothing else on the host is looked at or touched.

Ray 2.60 has no `ray.init` switch for the log monitor, the autoscaler monitor or the two agents
(the raylet always starts them); `include_dashboard=False` leaves only a head process with its HTTP
server off. They are stopped with the rest.

`auto` and `ray://HOST:PORT` join a cluster someone else runs: the connection is closed at the end
(`ray.shutdown()` disconnects a driver or a Ray Client; it stops nothing of the cluster), and the
caller kills its actors. A caller that is already connected (`ray.is_initialized()`, e.g. a test or
a notebook) keeps its connection: it is used and left open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import psutil

from loadtest.errors import TargetError

LOCAL = "local"
PROBE_TIMEOUT_S = 5.0  # a cluster address that accepts no TCP connection within this is unreachable
STOP_GRACE_S = 2.0  # after ray.shutdown(): how long a leftover gets after SIGTERM, before SIGKILL
# Ray's unix sockets lie up to 65 characters below its temporary directory (a session directory,
# then sockets/plasma_store), and a socket path may not exceed 107 bytes: with a longer $TMPDIR
# `ray.init` fails, so the private Ray's directory goes under /tmp instead.
MAX_BASE = 107 - 65 - len("/loadtest-ray-12345678")


def one_line(exc: BaseException) -> str:
    """The last line of what Ray says (its errors are often multi-line tracebacks)."""
    cause = getattr(exc, "cause", None)
    text = str(cause) if cause is not None else str(exc)
    return text.strip().splitlines()[-1] if text.strip() else type(exc).__name__


@contextlib.contextmanager
def ray_session(address: str, cpus: int) -> Iterator[None]:
    """Connected to the Ray at `address` for the body; afterwards, left as it was found."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address == LOCAL:
        with _private_ray(cpus):
            yield
        return
    probe(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError depending on the form
        raise TargetError(f"cannot reach the Ray cluster at {address!r}: {one_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()  # disconnects; the cluster's own processes are not ours


def probe(address: str) -> None:
    """Fail in seconds when nothing answers at the cluster's address: Ray itself retries a GCS
    address for minutes and a Ray Client address for ~30 s before it gives up."""
    from ray._private import services

    try:
        if address.startswith("ray://"):
            host_port = address.removeprefix("ray://").split("/")[0]
        else:  # "auto" -> RAY_ADDRESS, or the cluster `ray start` recorded on this host
            host_port = services.canonicalize_bootstrap_address_or_die(address)
        host, _, port = host_port.rpartition(":")
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except (OSError, ValueError, ConnectionError) as exc:
        raise TargetError(f"cannot reach the Ray cluster at {address!r}: {one_line(exc)}") from None


@contextlib.contextmanager
def _private_ray(cpus: int) -> Iterator[None]:
    import ray

    base = tempfile.gettempdir()
    base = base if len(base) <= MAX_BASE else "/tmp"
    temp_dir = tempfile.mkdtemp(prefix="loadtest-ray-", dir=base)
    # Ray waits 30 s for its GCS server to bind (RAY_gcs_server_port_wait_time_s, ray/_private/
    # node.py); on a loaded 2-core host that start took longer once (a CI run's "Timed out
    # waiting for file .../gcs_server_port_..."): a private Ray waits up to 120 s unless told.
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
    try:
        try:
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                _temp_dir=temp_dir,
            )
        except Exception as exc:
            started = node_processes(ray)
            ray.shutdown()
            stop_processes(started)
            raise TargetError(f"cannot start a local Ray: {one_line(exc)}") from None
        try:
            yield
        finally:
            started = node_processes(ray)  # listed first: the raylet's death orphans its agents
            ray.shutdown()
            stop_processes(started)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def node_processes(ray: Any) -> list[psutil.Process]:
    """Every live process of the Ray node this process started: the node's own (GCS, raylet,
    monitors, head process, reaper) and all below them (agents, workers)."""
    node = ray._private.worker._global_node
    if node is None:
        return []
    found: dict[int, psutil.Process] = {}
    for infos in list(node.all_processes.values()):
        for info in infos:
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(info.process.pid)
                for process in [top, *top.children(recursive=True)]:
                    found[process.pid] = process
    return list(found.values())


def stop_processes(processes: list[psutil.Process], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to those still alive, SIGKILL to those alive `grace_s` later. psutil.Process
    checks the start time too, so a recycled pid is never signalled."""
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_s)
