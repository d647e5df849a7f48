"""Consoles that never cut a figure: full-width tables when the output is a file or a CI log.

Rich sizes tables to the terminal, and with no terminal it assumes 80 columns, so piped output
lost cells to "…" ("trito…", "INVAL…"): the log of a CI run kept neither the verdict nor the
numbers. When the stream is not a terminal (and COLUMNS does not say otherwise), the console is
made wide enough for every table this tool prints.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

# Wider than any table loadtest prints (compare's widest is about 190 columns).
WIDTH_WHEN_NOT_A_TERMINAL = 240


def make_console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr) that prints tables in full when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if os.environ.get("COLUMNS") or stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=WIDTH_WHEN_NOT_A_TERMINAL)
