"""An event loop whose timers wake within tens of microseconds instead of up to a millisecond late.

asyncio's epoll selector rounds every timeout *up* to whole milliseconds (epoll_wait takes ms),
and the kernel adds its timer slack (50 µs by default), so a timer due in 4.7 ms wakes after 5 ms
plus slack. The runner compensates by waking early and yielding until the due time (a "spin"),
which costs CPU the server may need on a small shared machine. Here the loop instead waits on the
epoll descriptor itself with select(), whose timeout has microsecond resolution, then collects
the events with a zero-timeout epoll call; and the process's timer slack is set to 1 µs. Timers
then wake close to their due time, and the runner's adaptive spin window shrinks with them (it is
sized from the oversleeps it observes). One descriptor is passed to select(), so its 1024-fd
limit does not apply to the sockets themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import select
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

_PR_SET_TIMERSLACK = 29
T = TypeVar("T")


class PreciseEpollSelector(selectors.EpollSelector):
    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            select.select([self.fileno()], [], [], timeout)
            timeout = 0
        return super().select(timeout)


def reduce_timer_slack() -> None:
    """Ask the kernel for 1 µs timer slack for this process (Linux; harmless elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def new_event_loop(kind: str = "precise") -> asyncio.AbstractEventLoop:
    """The precise loop (default), or uvloop for `kind` "uvloop" (cheaper I/O, ms timers)."""
    if kind == "uvloop":
        import uvloop

        reduce_timer_slack()
        return uvloop.new_event_loop()
    if not hasattr(selectors, "EpollSelector"):
        return asyncio.new_event_loop()
    reduce_timer_slack()
    return asyncio.SelectorEventLoop(PreciseEpollSelector())


def running_loop_kind() -> str:
    """What the running loop is, for reports: "uvloop", "precise", or plain "asyncio"."""
    loop = asyncio.get_running_loop()
    if type(loop).__module__.startswith("uvloop"):
        return "uvloop"
    selector = getattr(loop, "_selector", None)
    return "precise" if isinstance(selector, PreciseEpollSelector) else "asyncio"


def run(coro: Coroutine[Any, Any, T], kind: str = "precise") -> T:
    """asyncio.run on the chosen loop (asyncio.run takes no loop factory before Python 3.12)."""
    loop = new_event_loop(kind)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
