"""The exception tree and the exit codes. Exceptions are for setup and configuration; a failed
*query* is a record.

LoadtestError            anything the CLI turns into one clear line and a non-zero exit
├── SettingsError        nonsense or contradictory flags (an unusable --output included)
├── ModelBuildError      a benchmark model could not be built or a repository is malformed
├── ServerError          the embedded Triton could not start, or died (carries the log tail)
├── TargetError          the target is unreachable, lacks the model, or rejects the inputs
├── ResultFileError      a result file is unreadable, not a loadtest result, or of another version
└── ResultRescued        the run's files could not be written where asked; they went elsewhere

Exit codes (also in the README and every scenario command's --help):
0 done; 1 an error (one line on stderr), before any load where it can be known then; 2 malformed
flags (typer); 3 no answer (find-peak found no valid rate; diff found a regression); 4 the result
could not be written where asked and was saved in the rescue directory printed instead;
130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM: the partial result is written first.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Every command's exit codes, one scheme (README "Exit codes" and `loadtest --help`).

    A CI job can gate on them: 0 only when the run was VALID (or the command did what it was asked
    without a verdict to give), 3 when the measurement says no, 5 when it says nothing about the
    server because the load generator itself fell behind.
    """

    OK = 0  # VALID, or done (report, export, plan, models, ...)
    ERROR = 1  # setup or configuration: one clear line on stderr, nothing measured
    USAGE = 2  # malformed flags or values (typer's usage errors)
    INVALID = 3  # measured and INVALID; find-peak found no peak; diff found a regression
    NOT_WRITTEN = 4  # measured, but the result could not be written where asked (see the fallback)
    CLIENT_BOUND = 5  # INVALID only because the client fell behind its schedule
    INTERRUPTED = 130  # Ctrl-C: the partial result is written
    TERMINATED = 143  # SIGTERM: the partial result is written


EXIT_CODES_HELP = (
    "Exit codes: 0 VALID (or done); 1 error (one line on stderr); 2 bad flags; 3 INVALID "
    "(find-peak: no peak; diff: regression); 4 result not written where asked (a fallback path "
    "is printed); 5 INVALID only because the client fell behind its schedule; 130 Ctrl-C and "
    "143 SIGTERM (partial result written)."
)


class LoadtestError(Exception):
    """Base class: str(error) is the one line shown to the user; `exit_code` the process's."""

    exit_code = ExitCode.ERROR


class SettingsError(LoadtestError):
    pass


class ModelBuildError(LoadtestError):
    pass


class ServerError(LoadtestError):
    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class TargetError(LoadtestError):
    pass


class ResultFileError(LoadtestError):
    pass


class ResultRescued(LoadtestError):
    """The result is safe, but not where it was asked to go (full disk, directory gone...)."""

    exit_code = ExitCode.NOT_WRITTEN
