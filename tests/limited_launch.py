"""Run a command under a limit set in a fresh process, then exec it.

`python tests/limited_launch.py LIMIT -- COMMAND...`, LIMIT one of:
- `plain-user`: root without the capabilities that ignore file permissions, so a read-only
  directory is read-only to it too (the tests run as root);
- `fsize:N`: RLIMIT_FSIZE of N bytes, a full disk's stand-in (SIGXFSZ ignored, which exec
  keeps: a write past the limit fails with EFBIG instead of killing the process).

What subprocess's `preexec_fn` did, without running Python between fork and exec inside the
test process: that process has grpc's threads, and a child forked from it once aborted there in
CI (grpc's "Epoll1Poller ... epoll_wait error: Bad file descriptor", exit -6) before it could
exec. Here the limit is set in a process of its own, which then becomes the command.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def main() -> None:
    limit, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        sys.exit("usage: limited_launch.py LIMIT -- COMMAND...")
    if limit == "plain-user":
        if os.geteuid() == 0:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
                libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    elif limit.startswith("fsize:"):
        size = int(limit.removeprefix("fsize:"))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    else:
        sys.exit(f"limited_launch.py: unknown limit {limit!r}")
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
