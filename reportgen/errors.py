"""The exceptions reportgen raises for problems a user can fix.

The CLI turns each of these into a one-line message and an exit code; anything else is a bug.
"""

from __future__ import annotations

import errno
from pathlib import Path


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
    """The build itself failed (a worker process died, the disk is full, another build holds the
    output folder, ...)."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) during a build; ``str()`` says what the build leaves behind.

    Still a KeyboardInterrupt, so no ``except Exception`` swallows it.
    """

    exit_code = 130


# What a user can do about the file-system errors a build meets.
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space, or choose another --out or --cache",
    errno.EDQUOT: "the disk quota is used up: free some space, or choose another --out or --cache",
    errno.EACCES: "choose a folder you may write to (--out, --cache), or change its permissions",
    errno.EPERM: "choose a folder you may write to (--out, --cache), or change its permissions",
    errno.EROFS: "the file system is read-only: choose another --out or --cache",
    errno.ENOENT: "something removed it while the build ran; build again",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or lower --workers",
}


# The same, where the path is in reportgen's own state (by default in the user's cache folder),
# which --out does not move and --cache moves only in part.
_STATE_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space, or keep reportgen's state on another disk "
    "({home}=FOLDER; --cache FOLDER moves the largest part, the cache)",
    errno.EDQUOT: "the disk quota is used up: free some space, or keep reportgen's state on "
    "another disk ({home}=FOLDER; --cache FOLDER moves the largest part, the cache)",
    errno.EACCES: "keep reportgen's state in a folder you may write to ({home}=FOLDER), or "
    "change its permissions",
    errno.EPERM: "keep reportgen's state in a folder you may write to ({home}=FOLDER), or "
    "change its permissions",
    errno.EROFS: "the file system is read-only: keep reportgen's state on another disk "
    "({home}=FOLDER)",
}


def os_error_message(exc: OSError) -> str:
    """One line for a file-system error: which path, what happened, what to do."""
    where = f" {exc.filename!s}" if exc.filename else ""
    what = (exc.strerror or str(exc)).rstrip(".")
    advice = _ADVICE.get(exc.errno or 0, "check the path and build again")
    if exc.errno in _STATE_ADVICE and exc.filename and _in_state(str(exc.filename)):
        from .site.states import HOME_VARIABLE

        advice = _STATE_ADVICE[exc.errno].format(home=HOME_VARIABLE)
    return f"{what}:{where}; {advice}"


def _in_state(path: str) -> bool:
    """Whether ``path`` is in the folder where reportgen keeps its state."""
    from .site.states import state_home

    return Path(path).resolve().is_relative_to(state_home().resolve())
