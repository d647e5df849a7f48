"""Starts a real Triton Inference Server from the `nvidia-pytriton` wheel, and always stops it.

The wheel ships a genuine `tritonserver` (2.51.0) with only the Python backend. We lay out a
private backend directory per server: `python/` (a real copy of libtriton_python.so, which Triton
refuses as a symlink, plus the stub for this Python version) and `onnxruntime/model.py`, our
Python-based backend, so that `backend: "onnxruntime"` configs load unchanged (see
backends/onnxruntime/model.py). The stub embeds CPython found through PATH and LD_LIBRARY_PATH, so
this interpreter's `bin/` and LIBDIR go first (the facts, with their source, are in docs/triton.md).

Never leaving a server behind: the child gets PR_SET_PDEATHSIG (the kernel sends it SIGTERM if we
die, even by SIGKILL), runs in its own session (a terminal Ctrl-C reaches us, and we stop it in
order), and `stop()` escalates SIGTERM -> SIGKILL by PID, then kills whatever is left of its
process group (a Python backend stub orphaned when the server is stopped mid-load ignores SIGTERM
and would otherwise run on, holding its /dev/shm region, which is removed too). Every address is
loopback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from loadtest.errors import ServerError

LOOPBACK = "127.0.0.1"
# Triton's local response cache, always configured: a model uses it only when its config enables
# it (none of the suite's do), so runs are unchanged unless asked; it lets `--same-sample` be
# checked against a real cache. The memory is reserved at start (64 MiB).
RESPONSE_CACHE_BYTES = 64 * 1024 * 1024
BACKENDS_SOURCE = Path(__file__).parent / "backends"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel put the server, its libraries and the Python backend."""

    server: Path
    libs: Path
    python_backend: Path
    stub: Path
    caches: Path  # Triton's cache implementations (caches/local/libtritoncache_local.so)

    @classmethod
    def locate(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError(
                "the embedded Triton needs the nvidia-pytriton wheel: pip install nvidia-pytriton"
            )
        root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            server=root / "bin" / "tritonserver",
            libs=root.parent.parent / "nvidia_pytriton.libs",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            caches=root / "caches",
        )
        for path in (
            install.server,
            install.libs,
            install.python_backend,
            install.stub,
            install.caches,
        ):
            if not path.exists():
                raise ServerError(f"the nvidia-pytriton install lacks {path} (Python {version})")
        return install


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free now (held open together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


# tritonserver is started through a Python of its own that asks the kernel for SIGTERM when
# its parent dies (PR_SET_PDEATHSIG, kept across exec), checks the parent did not die first,
# then becomes tritonserver: it dies with loadtest, whatever kills loadtest. Not a preexec_fn:
# Python code run between fork and exec in a process with grpc's threads (loadtest's, once a
# probe made a channel) can abort there; a child of a test process did so in CI (grpc's
# "Epoll1Poller ... epoll_wait error: Bad file descriptor").
_WITH_PARENT_DEATH = f"""
import ctypes, os, signal, sys
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def with_parent_death(command: list[str]) -> list[str]:
    """`command`, started so that it dies with this process (see _WITH_PARENT_DEATH)."""
    return [sys.executable, "-I", "-S", "-c", _WITH_PARENT_DEATH, str(os.getpid()), *command]


def grpc_tls_args(
    cert: Path, key: Path, root_cert: Path | None = None, mutual: bool = False
) -> list[str]:
    """tritonserver flags serving gRPC over TLS with `cert`/`key` (HTTP stays plaintext: Triton
    has no TLS for it); `mutual` makes clients present a certificate `root_cert` signed."""
    args = [
        "--grpc-use-ssl-mutual=true" if mutual else "--grpc-use-ssl=true",
        f"--grpc-server-cert={cert}",
        f"--grpc-server-key={key}",
    ]
    return args + ([f"--grpc-root-cert={root_cert}"] if root_cert is not None else [])


def _group_members(pgid: int) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process in process group `pgid` (Linux /proc; [] elsewhere)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue
        members.append((int(entry.name), argv))
    return members


def _reap_group(pgid: int) -> None:
    """After the server itself is gone: SIGKILL what is left of its process group (the group is
    the session we started it in, so nothing else is in it) and remove the shared-memory regions
    its Python backend stubs held (named on their command line)."""
    regions = [
        Path("/dev/shm") / arg
        for _, argv in _group_members(pgid)
        for arg in argv[1:3]
        if arg.startswith("triton_") and "/" not in arg
    ]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for region in regions:
        with contextlib.suppress(OSError):
            region.unlink()


def _failed_model_lines(log: str) -> list[str]:
    return [
        line.strip()
        for line in log.splitlines()
        if "failed to load" in line or ("UNAVAILABLE" in line and "|" in line)
    ]


class EmbeddedTriton:
    """One tritonserver process on loopback. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        repository: Path,
        models: Sequence[str] | None = None,
        ports: Ports | None = None,
        startup_timeout_s: float = 180.0,
        log_verbose: int = 0,
        precheck: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = repository.resolve()
        self.models = list(models) if models is not None else None
        self.requested_ports = ports
        self.startup_timeout_s = startup_timeout_s
        self.log_verbose = log_verbose
        self.precheck = precheck  # check configs and model files before launching (clear errors)
        # More tritonserver flags, e.g. gRPC TLS (see grpc_tls_args) or restricted APIs.
        self.extra_args = list(extra_args)
        self.ports: Ports | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.startup_s = 0.0

    # -- addresses -------------------------------------------------------------------------
    def _ports(self) -> Ports:
        if self.ports is None:
            raise ServerError("the embedded Triton is not running")
        return self.ports

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self._ports().grpc}"

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self._ports().http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self._ports().metrics}/metrics"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "tritonserver.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # -- lifecycle -------------------------------------------------------------------------
    def _backend_dir(self, install: TritonInstall, workdir: Path) -> Path:
        backends = workdir / "backends"
        python_dir = backends / "python"
        python_dir.mkdir(parents=True)
        shutil.copy2(install.python_backend / "libtriton_python.so", python_dir)
        (python_dir / "triton_python_backend_utils.py").symlink_to(
            install.python_backend / "triton_python_backend_utils.py"
        )
        (python_dir / "triton_python_backend_stub").symlink_to(install.stub)
        shutil.copytree(BACKENDS_SOURCE / "onnxruntime", backends / "onnxruntime")
        return backends

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        library_path = [libdir, str(install.libs), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in library_path if p)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def _command(self, install: TritonInstall, backends: Path, ports: Ports) -> list[str]:
        command = [
            str(install.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={LOOPBACK}",
            f"--grpc-address={LOOPBACK}",
            f"--metrics-address={LOOPBACK}",
            f"--http-port={ports.http}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}",
            "--disable-auto-complete-config",  # our configs are complete; saves ~1 s per model
            # The response cache is available, off for every model until its config says
            # `response_cache { enable: true }` (docs/triton.md: verified facts).
            f"--cache-directory={install.caches}",
            f"--cache-config=local,size={RESPONSE_CACHE_BYTES}",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.models is not None:
            command.append("--model-control-mode=explicit")
            command += [f"--load-model={name}" for name in self.models]
        return command + self.extra_args

    def _choose_ports(self) -> Ports:
        if self.requested_ports is None:
            http, grpc, metrics = free_ports(3)
            return Ports(http=http, grpc=grpc, metrics=metrics)
        for port in (
            self.requested_ports.http,
            self.requested_ports.grpc,
            self.requested_ports.metrics,
        ):
            if not port_is_free(port):
                raise ServerError(
                    f"cannot start the embedded Triton: port {port} is already in use"
                )
        return self.requested_ports

    def _check_repository(self) -> None:
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist")
        for name in self.models or []:
            if not (self.repository / name / "config.pbtxt").is_file():
                raise ServerError(f"model {name!r} is not in repository {self.repository}")
        if self.precheck:
            from loadtest.models import check_repository

            problems = check_repository(self.repository, self.models)
            if problems:
                more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
                raise ServerError(f"cannot serve {self.repository}: {problems[0]}{more}")

    def log_tail(self, lines: int = 25) -> str:
        if self.workdir is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> EmbeddedTriton:
        """Launch and wait until ready; on failure the process is gone and ServerError says why."""
        self._check_repository()
        install = TritonInstall.locate()
        self.ports = self._choose_ports()
        self.workdir = Path(tempfile.mkdtemp(prefix="loadtest-triton-"))
        backends = self._backend_dir(install, self.workdir)
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                with_parent_death(self._command(install, backends, self.ports)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(install),
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_path.read_text(errors="replace")
                failed = _failed_model_lines(log)
                reason = failed[0] if failed else f"exit code {self.process.returncode}"
                raise ServerError(
                    f"the embedded Triton exited while starting: {reason}", self.log_tail()
                )
            if self._ready():
                return
            time.sleep(0.1)
        raise ServerError(
            f"the embedded Triton was not ready after {self.startup_timeout_s:g} s", self.log_tail()
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; idempotent; removes the private workdir."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        if process is not None:
            _reap_group(process.pid)
        if self.workdir is not None and process is not None:
            # Keep the log readable after stop (tests, error messages); drop the backend copy.
            shutil.rmtree(self.workdir / "backends", ignore_errors=True)

    def cleanup(self) -> None:
        """Remove the private workdir, log included."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
