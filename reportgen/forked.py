"""A share of the work done in a second process, forked, where the system can fork one.

After the model's stage a build is pure Python, so one process uses one core however many there
are: the pages of a large folder, and the exports beside them, are split between the build and a
forked copy of it. The copy inherits everything the build holds (the photos' records, the
templates), writes its own files, and hands back what its work returned; its memory is shared
with the build's until either writes to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from .errors import BuildError


def available() -> bool:
    """Whether a second process can be forked here (Linux: elsewhere fork is unsafe or missing)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class Forked:
    """``work`` running in a forked copy of this process: :meth:`result` waits for what it
    returned (or raises what it raised); :meth:`cancel` stops it. One of the two must be called:
    as a context manager, leaving the block cancels what :meth:`result` has not waited for."""

    def __init__(self, work: Callable[[], Any]) -> None:
        read, write = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns of forking with threads alive: torch's idle workers, where the
            # model ran in this process; a copy forked then runs none of torch (the pages'), and
            # one that runs the model is forked only before torch is imported (build's ahead).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the copy: never returns
            os.close(read)
            _run(work, write)
        os.close(write)
        self._pid, self._read = pid, read
        self._reaped = False

    def result(self) -> Any:
        """What ``work`` returned, once it has finished.

        Raises:
            whatever ``work`` raised; BuildError if the second process died without a word.
        """
        chunks = []
        try:
            while chunk := os.read(self._read, 1 << 20):
                chunks.append(chunk)
        except BaseException:  # interrupted while waiting: the copy is stopped, not waited for
            self._kill()
            raise
        finally:
            os.close(self._read)
            _, status = os.waitpid(self._pid, 0)
            self._reaped = True
        if not chunks:
            raise BuildError(
                f"the build's second process ended without finishing its work (status {status})"
            )
        outcome, value = pickle.loads(b"".join(chunks))  # noqa: S301 (our own fork's answer)
        if outcome == "raised":
            raise value
        return value

    def cancel(self) -> None:
        """Stop the second process and wait for it to end (nothing, once :meth:`result` has
        waited for it)."""
        if self._reaped:
            return
        self._kill()
        os.close(self._read)
        os.waitpid(self._pid, 0)
        self._reaped = True

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # ended already
            os.kill(self._pid, signal.SIGKILL)


class Blocks:
    """The numbers 0 to ``count`` - 1, handed out a block at a time to whichever process asks
    first, across a fork: two processes that share the work this way finish together whatever
    each block costs. The next block's start is kept in an unlinked file, taken under a POSIX
    record lock (held by a process, not by the file they share)."""

    def __init__(self, count: int, size: int = 64) -> None:
        self.count, self.size = count, size
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (open for the object's life)
        os.pwrite(self._file.fileno(), (0).to_bytes(8, "little"), 0)

    def __iter__(self) -> Iterator[int]:
        fd = self._file.fileno()
        while True:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                start = int.from_bytes(os.pread(fd, 8, 0), "little")
                os.pwrite(fd, (start + self.size).to_bytes(8, "little"), 0)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            if start >= self.count:
                return
            yield from range(start, min(start + self.size, self.count))

    def taken(self) -> int:
        """How many numbers have been handed out so far, by the start of the next block (for a
        progress bar: read without the lock)."""
        return int.from_bytes(os.pread(self._file.fileno(), 8, 0), "little")

    def close(self) -> None:
        self._file.close()


def _run(work: Callable[[], Any], fd: int) -> None:
    """In the copy: run ``work``, write its outcome to ``fd``, and end without running anything
    of the build's own exit (its locks, files and buffers are the build's)."""
    code = 0
    try:
        try:
            answer = pickle.dumps(("returned", work()))
        except BaseException as exc:  # noqa: BLE001 (handed to the build, which raises it)
            try:
                answer = pickle.dumps(("raised", exc))
            except Exception:  # noqa: BLE001 (an exception that cannot be pickled)
                answer = pickle.dumps(("raised", BuildError(f"{type(exc).__name__}: {exc}")))
        view = memoryview(answer)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:  # noqa: BLE001 (the build reports a silent end)
        code = 1
    finally:
        os._exit(code)
