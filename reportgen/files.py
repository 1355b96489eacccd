"""Writing files so that no reader ever sees half of one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` aside and rename it into place: no reader ever sees half a file, and a hard
    link to the old file keeps the old bytes.

    A build writes a few files per photo, so this makes only the system calls it needs: no
    ``mkdir`` unless the folder is missing, and no buffered file object (which would ask whether
    the file is a terminal and where it starts).
    """
    tmp = f"{path.parent}/.{path.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, _NEW_FILE, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, _NEW_FILE, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the write's own error is the one to report
            os.unlink(tmp)
        raise


# O_NOFOLLOW: a symlink planted where the temporary file goes is not written through.
_NEW_FILE = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_TRUNC
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)
