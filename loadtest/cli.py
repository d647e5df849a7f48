"""The `loadtest` command line: routes to one small module per command; holds no logic of its own.

Every LoadtestError becomes one clear line on stderr and its exit code (1, or 4 when the result
had to be rescued; never a traceback); typer itself answers malformed flags with exit code 2.
SIGINT and SIGTERM both stop a run the same way (engine/stopping.py); the exit code says which
(130, 143). The codes are listed in errors.ExitCode, the README and every command's --help.
"""

from __future__ import annotations

import signal
import sys

import typer
from rich.markup import escape

from loadtest.commands import compare as compare_command
from loadtest.commands import diff as diff_command
from loadtest.commands import export as export_command
from loadtest.commands import find_peak as find_peak_command
from loadtest.commands import mix as mix_command
from loadtest.commands import models as models_command
from loadtest.commands import offline as offline_command
from loadtest.commands import plan as plan_command
from loadtest.commands import report as report_command
from loadtest.commands import serve as serve_command
from loadtest.commands import server as server_command
from loadtest.commands import sessions as sessions_command
from loadtest.commands import stream as stream_command
from loadtest.commands import stub as stub_command
from loadtest.commands import sweep as sweep_command
from loadtest.engine import stopping
from loadtest.errors import EXIT_CODES_HELP, ExitCode, LoadtestError, ServerError
from loadtest.report.console import make_console

app = typer.Typer(
    name="loadtest",
    help="MLPerf-style load testing for Triton Inference Server, free of coordinated omission.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(name="server", epilog=EXIT_CODES_HELP)(server_command.server)
app.command(name="offline", epilog=EXIT_CODES_HELP)(offline_command.offline)
app.command(name="single-stream", epilog=EXIT_CODES_HELP)(stream_command.single_stream)
app.command(name="multi-stream", epilog=EXIT_CODES_HELP)(stream_command.multi_stream)
app.command(name="sessions", epilog=EXIT_CODES_HELP)(sessions_command.sessions)
app.command(name="find-peak", epilog=EXIT_CODES_HELP)(find_peak_command.find_peak)
app.command(name="sweep", epilog=EXIT_CODES_HELP)(sweep_command.sweep)
app.command(name="mix", epilog=EXIT_CODES_HELP)(mix_command.mix)
app.command(name="plan")(plan_command.plan)
app.command(name="serve")(serve_command.serve)
app.command(name="stub")(stub_command.stub)
app.command(name="compare", epilog=EXIT_CODES_HELP)(compare_command.compare)
app.command(name="report")(report_command.report)
app.command(name="export")(export_command.export)
app.command(name="diff", epilog=EXIT_CODES_HELP)(diff_command.diff)
app.add_typer(models_command.app, name="models")


def main() -> None:
    errors = make_console(stderr=True)
    # SIGTERM unwinds like Ctrl-C (KeyboardInterrupt), so `finally` blocks stop any embedded
    # server; during a run the runner catches both and the partial result is written.
    stopping.install_process_handlers()
    try:
        app()  # standalone: typer answers usage errors itself (exit 2) and exits
    except LoadtestError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        if isinstance(exc, ServerError) and exc.log_tail:
            errors.print("[dim]--- server log (tail) ---[/]", highlight=False)
            errors.print(exc.log_tail, markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        errors.print(stopping.requested() or "interrupted")
        sys.exit(stopping.exit_code())
    except SystemExit as exc:
        # typer turns a KeyboardInterrupt outside a run into exit 130; SIGTERM raises one too
        if exc.code == ExitCode.INTERRUPTED and stopping.received() == signal.SIGTERM:
            errors.print(f"{stopping.requested()}: stopped before a result was measured")
            sys.exit(stopping.exit_code())
        raise


if __name__ == "__main__":
    main()
