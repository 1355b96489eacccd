"""The exceptions reportgen raises for problems a user can fix.

The CLI turns each of these into a one-line message and an exit code; anything else is a bug.
"""

from __future__ import annotations


class ReportgenError(Exception):
    """Base class of every error meant for the user; carries the process exit code."""

    exit_code: int = 1


class ConfigError(ReportgenError):
    """One or more configuration values are wrong; raised before any model work."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration:\n{lines}")


class UsageError(ReportgenError):
    """The command cannot run as asked (missing input folder, unsafe output folder, ...)."""

    exit_code = 2


class InputError(ReportgenError):
    """The input folder holds nothing that can be built."""

    exit_code = 1


class WeightsError(ReportgenError):
    """The model weights cannot be found, fetched or loaded."""

    exit_code = 1


class BuildError(ReportgenError):
    """The build itself failed (a worker process died, the disk is full, ...)."""

    exit_code = 1
