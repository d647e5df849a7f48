"""Stopping a run from outside: SIGINT (Ctrl-C) and SIGTERM mean the same thing.

Either signal stops issuing at once; outstanding queries get a short drain; the partial result is
reported and written; any embedded server is stopped; then the process exits with 130 (SIGINT) or
143 (SIGTERM). Only the exit code tells the two apart.

Signals belong to the process, so the stop request does too: `request_stop` records the first
reason (and the signal, for the exit code) and tells every listener; a runner listens while it
plays (`listening`), and one that starts after the request stops before issuing anything, so a
signal between two probes of find-peak, or two runs of compare, ends the command as well. Inside
an event loop the signals are routed here by `catching(loop)`; outside one, `raise_interrupt`
records the signal and raises KeyboardInterrupt, so `finally` blocks (an embedded server's stop
among them) run as they do for Ctrl-C.

`urgent` stops skip the drain: the process that wanted the answers is gone (a worker whose parent
died, an actor whose driver stopped sending heartbeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from loadtest.errors import ExitCode

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REASONS: dict[int, str] = {
    signal.SIGINT: "interrupted (Ctrl-C)",
    signal.SIGTERM: "terminated (SIGTERM)",
}

Listener = Callable[[str, bool], None]  # (reason, urgent)

_signal: int | None = None  # the first stop signal this process received
_reason = ""  # the first stop reason, signal or not
_urgent = False
_listeners: list[Listener] = []
_catching: dict[int, int] = {}  # id(loop) -> nesting depth of `catching`


def reason_for(signum: int) -> str:
    return REASONS.get(signum, f"stopped by signal {signum}")


def request_stop(signum: int | None = None, reason: str = "", urgent: bool = False) -> None:
    """Stop every run of this process (now, and any that would start later)."""
    global _signal, _reason, _urgent
    if signum is not None and _signal is None:
        _signal = signum
    text = reason or (reason_for(signum) if signum is not None else "stopped")
    if not _reason:
        _reason = text
    _urgent = _urgent or urgent
    for listener in list(_listeners):
        listener(text, urgent)


def requested() -> str:
    """The first stop reason, or "" when nothing asked this process to stop."""
    return _reason


def received() -> int | None:
    """The first stop signal received, if any."""
    return _signal


def exit_code() -> int:
    """128 + the stop signal (130 for SIGINT, 143 for SIGTERM); 130 when none was recorded."""
    return 128 + _signal if _signal is not None else ExitCode.INTERRUPTED


def reset() -> None:
    """Forget earlier stop requests (a new command in the same process; tests)."""
    global _signal, _reason, _urgent
    _signal, _reason, _urgent = None, "", False


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call `listener(reason, urgent)` on each stop request while inside; at once if one came
    before."""
    if _reason:
        listener(_reason, _urgent)
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


@contextlib.contextmanager
def catching(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `request_stop` on `loop` while inside (nests).

    asyncio's remove_signal_handler would leave SIGTERM at SIG_DFL (killed, no result) and SIGINT
    at the default handler, so the handlers that were there before are put back instead. Where
    the loop cannot take signals (not the main thread), nothing changes.
    """
    key = id(loop)
    if _catching.get(key):
        _catching[key] += 1
        try:
            yield
        finally:
            _catching[key] -= 1
        return
    installed: list[tuple[int, Any]] = []
    for sig in STOP_SIGNALS:
        signum = int(sig)
        previous = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, request_stop, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append((signum, previous))
    _catching[key] = 1
    try:
        yield
    finally:
        del _catching[key]
        for signum, previous in installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A process-level handler for SIGINT and SIGTERM outside a run: record, then unwind as Ctrl-C
    does (KeyboardInterrupt), so `finally` blocks stop what was started."""
    request_stop(signum)
    raise KeyboardInterrupt


def install_process_handlers() -> None:
    """SIGINT and SIGTERM both become a recorded KeyboardInterrupt (main thread only)."""
    for signum in STOP_SIGNALS:
        with contextlib.suppress(ValueError):
            signal.signal(signum, raise_interrupt)


def _record(signum: int, frame: FrameType | None) -> None:
    request_stop(signum)


def defer_signals() -> None:
    """From now on SIGINT and SIGTERM are recorded but interrupt nothing: the measured result is
    being reported and written, and must not be lost to the signal that asked for it. The
    command exits with `exit_code()` afterwards."""
    for signum in STOP_SIGNALS:
        with contextlib.suppress(ValueError):
            signal.signal(signum, _record)
