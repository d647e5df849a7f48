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

EXIT_ERROR = 1
EXIT_RESCUED = 4
EXIT_SIGINT = 130  # 128 + SIGINT, as shells report it
EXIT_SIGTERM = 143  # 128 + SIGTERM


class LoadtestError(Exception):
    """Base class: str(error) is the one line shown to the user; `exit_code` the process's."""

    exit_code = EXIT_ERROR


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

    exit_code = EXIT_RESCUED
