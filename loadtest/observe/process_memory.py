"""Resident memory of a process tree (a local Triton and its Python-backend stubs).

Why the tree: Triton's Python backend runs every model instance in its own stub process, so a
configuration with four instances holds four copies of the model outside the server's own RSS.
The figure is RSS summed over the tree (shared pages counted once per process: an upper bound),
read at one moment; a child that is gone is skipped.
"""

from __future__ import annotations

import psutil


def tree_rss_bytes(pid: int) -> int | None:
    """RSS of `pid` and its descendants now, in bytes; None if `pid` is gone or unreadable."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total
