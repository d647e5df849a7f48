"""The exception tree. Exceptions are for setup and configuration; a failed *query* is a record.

LoadtestError            anything the CLI turns into one clear line and a non-zero exit
├── SettingsError        nonsense or contradictory flags
├── ModelBuildError      a benchmark model could not be built or a repository is malformed
├── ServerError          the embedded Triton could not start, or died (carries the log tail)
├── TargetError          the target is unreachable, lacks the model, or rejects the inputs
└── ResultFileError      a result file is unreadable, not a loadtest result, or of another version
"""

from __future__ import annotations


class LoadtestError(Exception):
    """Base class: str(error) is the one line shown to the user."""


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
