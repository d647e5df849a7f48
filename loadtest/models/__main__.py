"""`python -m loadtest.models build|list ...`: the models commands without the rest of the CLI.

The docker-compose `models` service runs this in an image holding only what building needs
(numpy, onnx, tritonclient for the config schema, typer, rich) — not onnxruntime or the
embedded Triton. Errors end as one line on stderr and exit code 1, as in `loadtest`.
"""

from __future__ import annotations

import sys

from loadtest.commands.models import app
from loadtest.errors import LoadtestError


def main() -> None:
    try:
        app(prog_name="python -m loadtest.models")  # typer handles usage errors and exit codes
    except LoadtestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
