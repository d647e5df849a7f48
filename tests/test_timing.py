"""engine/timing.py: the generator's loop thread asks the kernel for a short time slice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from loadtest.engine import timing


def _in_a_thread(body):
    """Run `body` on a fresh thread (a slice is per thread) and return what it returned."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", body()))
    thread.start()
    thread.join()
    return result["value"]


def _kernel_takes_slices() -> bool:
    def probe() -> bool:
        return timing.request_short_slice() and timing.thread_slice_ns() == timing.SHORT_SLICE_NS

    return bool(_in_a_thread(probe))


def test_the_loop_thread_gets_the_short_slice_and_other_threads_keep_theirs():
    if not _kernel_takes_slices():
        pytest.skip("this kernel keeps no per-thread slice (EEVDF custom slices: Linux ≥ 6.12)")

    def make_a_loop() -> tuple[int | None, int | None]:
        before = timing.thread_slice_ns()
        loop = timing.new_event_loop()
        loop.close()
        return before, timing.thread_slice_ns()

    before, after = _in_a_thread(make_a_loop)
    assert before is not None and before > timing.SHORT_SLICE_NS  # the kernel's default
    assert after == timing.SHORT_SLICE_NS
    # Another thread is untouched, and 0 gives a thread the default back.
    assert _in_a_thread(timing.thread_slice_ns) == before

    def reset() -> int | None:
        timing.request_short_slice()
        timing.request_short_slice(0)
        return timing.thread_slice_ns()

    assert _in_a_thread(reset) == before


def test_what_the_loop_thread_starts_does_not_inherit_its_slice():
    """An embedded Triton or a worker process started from the generator's loop thread runs with
    the kernel's default slice, not the generator's short one (the server is measured as is)."""
    if not _kernel_takes_slices():
        pytest.skip("this kernel keeps no per-thread slice (EEVDF custom slices: Linux ≥ 6.12)")
    child = [
        sys.executable,
        "-c",
        "from loadtest.engine import timing; print(timing.thread_slice_ns())",
    ]

    def start_things() -> tuple[int | None, int | None, int]:
        default = timing.thread_slice_ns()
        timing.request_short_slice()
        assert timing.thread_slice_ns() == timing.SHORT_SLICE_NS
        in_a_thread = _in_a_thread(timing.thread_slice_ns)
        in_a_process = int(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
        return default, in_a_thread, in_a_process

    default, in_a_thread, in_a_process = _in_a_thread(start_things)
    assert default is not None and default > timing.SHORT_SLICE_NS
    assert in_a_thread == default
    assert in_a_process == default


def test_a_refused_request_is_harmless(monkeypatch):
    monkeypatch.setattr(timing.platform, "machine", lambda: "an-unknown-machine")
    assert timing.request_short_slice() is False
    assert timing.thread_slice_ns() is None
    loop = timing.new_event_loop()  # still made
    loop.close()


def test_a_thread_someone_put_under_another_policy_is_left_alone():
    if not _kernel_takes_slices():
        pytest.skip("this kernel keeps no per-thread slice (EEVDF custom slices: Linux ≥ 6.12)")

    def idle_thread() -> tuple[bool, int | None, int | None, int]:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # as `chrt -i 0` would
        before = timing.thread_slice_ns()
        changed = timing.request_short_slice()
        return changed, before, timing.thread_slice_ns(), os.sched_getscheduler(0)

    changed, before, after, policy = _in_a_thread(idle_thread)
    assert changed is False
    assert after == before != timing.SHORT_SLICE_NS
    assert policy == os.SCHED_IDLE
