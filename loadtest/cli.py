"""The `loadtest` command line: routes to one small module per command; holds no logic of its own.

Every LoadtestError becomes one clear line on stderr and exit code 1 (never a traceback); typer
itself answers malformed flags with exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from loadtest.commands import serve as serve_command
from loadtest.errors import LoadtestError, ServerError

app = typer.Typer(
    name="loadtest",
    help="MLPerf-style load testing for Triton Inference Server, free of coordinated omission.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(name="serve")(serve_command.serve)


def _add_optional_commands() -> None:
    """Commands whose modules are written alongside this one (kept separate for small files)."""
    from loadtest.commands import models as models_command
    from loadtest.commands import server as server_command

    app.add_typer(models_command.app, name="models")
    app.command(name="server")(server_command.server)


_add_optional_commands()


def main() -> None:
    errors = Console(stderr=True)
    try:
        app(standalone_mode=False)
    except LoadtestError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        if isinstance(exc, ServerError) and exc.log_tail:
            errors.print("[dim]--- server log (tail) ---[/]", highlight=False)
            errors.print(exc.log_tail, markup=False, highlight=False)
        sys.exit(1)
    except typer.Abort:
        errors.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and friends: still one line
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
