"""A share of the work done in a second process, forked, where the system can fork one.

After the model's stage a build is pure Python, so one process uses one core however many there
are: the pages of a large folder, and the exports beside them, are split between the build and a
forked copy of it. The copy inherits everything the build holds (the photos' records, the
templates), writes its own files, and hands back what its work returned; its memory is shared
with the build's until either writes to it.

During the model's stage on a GPU, a :class:`Pool` of such copies encodes each batch's pictures
and writes them to the cache, handed the batches in turn.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import pickle
import signal
import socket
import struct
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import BuildError

_Packed = TypeVar("_Packed")


def available() -> bool:
    """Whether a second process can be forked here (Linux: elsewhere fork is unsafe or missing)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up before any fork (not in a copy, where a lookup could wait
    for a lock a thread of the build held); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # a libc without it: copies end as they did before
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """In a process forked from ``parent``: have the kernel kill it the moment ``parent`` ends,
    however it ends (Linux's parent-death signal; elsewhere nothing).

    A build killed, or stopped by SIGTERM, would otherwise leave its copies and its decoding
    workers running: each holds the site's build lock, inherited, and a copy would go on writing
    into the staging area that the next build takes over. torch's workers look for their parent
    only every 5 s, and one can hang for good on a pipe nobody reads. Call it first thing in the
    new process, which ``parent`` forked itself, in its main thread (the signal comes when the
    thread that forked it ends).
    """
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # ended before the line above: no signal will come
        os._exit(1)


class Forked:
    """``work`` running in a forked copy of this process: :meth:`result` waits for what it
    returned (or raises what it raised); :meth:`cancel` stops it. One of the two must be called:
    as a context manager, leaving the block cancels what :meth:`result` has not waited for."""

    def __init__(self, work: Callable[[], Any]) -> None:
        read, write = os.pipe()
        parent = os.getpid()
        pid = _fork()
        if pid == 0:  # the copy: never returns
            die_with(parent)
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


class Pool:
    """``count`` forked copies of this process, each running ``work`` on the tasks handed to it,
    one at a time, in the order given.

    A task (and what ``work`` returns) travels pickled through a socket, so a task should be data
    (arrays, bytes), not objects that hold resources; ``work`` itself, and whatever it uses, the
    copies inherit. A thread of this process hands the tasks over, its arrays' memory sent as it
    is, so :meth:`submit` returns at once: leave a task's arrays unchanged until its answer is
    taken (:meth:`Answer.result`). Tasks go to the copies in turn: hand a copy its next task once
    its last answer has been taken, or the hand-over waits for the copy to finish.

    The copies ignore Ctrl-C (the build handles it, then closes the pool) and end with this
    process when it ends without closing it (:func:`die_with`; failing that, within a second).
    Use as a context manager: leaving the block lets each copy finish the task it is on, then
    ends it.
    """

    def __init__(self, work: Callable[[Any], Any], count: int) -> None:
        self._copies: list[_Copy] = []
        self._turn = 0
        self._handover = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reportgen-handover")
        try:
            for _ in range(count):
                self._copies.append(_Copy(work, others=self._copies))
        except BaseException:
            self.close()
            raise

    def submit(self, task: Any) -> Answer:
        """Hand ``task`` to the next copy in turn: what ``work`` makes of it, to be waited for."""
        copy = self._copies[self._turn]
        self._turn = (self._turn + 1) % len(self._copies)
        return copy.send(task, self._handover)

    def close(self) -> None:
        """Let each copy finish its task and end, and wait for it; stop the copies at once if
        interrupted meanwhile."""
        try:
            self._handover.shutdown()  # every task handed over
            for copy in self._copies:
                copy.finish()
            for copy in self._copies:
                copy.reap()
        except BaseException:
            for copy in self._copies:
                copy.kill()
            self._handover.shutdown()  # a hand-over to a copy killed has failed
            raise

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Answer:
    """What a :class:`Pool`'s copy makes of one task."""

    def __init__(self, copy: _Copy, number: int, sent: Future[None]) -> None:
        self._copy, self._number, self._sent = copy, number, sent
        self._outcome: tuple[str, Any] | None = None

    def result(self) -> Any:
        """What ``work`` returned for the task, once the copy has finished it (again, as often
        as asked).

        Raises:
            whatever ``work`` raised; BuildError if the copy died.
        """
        if self._outcome is None:
            self._outcome = self._copy.answer(self._number, self._sent)
        outcome, value = self._outcome
        if outcome == "raised":
            raise value
        return value


class _Copy:
    """One of a :class:`Pool`'s processes, seen from the process that forked it."""

    def __init__(self, work: Callable[[Any], Any], others: list[_Copy]) -> None:
        mine, theirs = socket.socketpair()
        parent = os.getpid()
        pid = _fork()
        if pid == 0:  # the copy: never returns
            die_with(parent)
            for other in others:  # a sibling's end would keep that sibling waiting for tasks
                other.sock.close()
            mine.close()
            _serve(work, theirs, parent)
        theirs.close()
        self.pid, self.sock = pid, mine
        self._sent = self._taken = 0
        self._early: dict[int, tuple[str, Any]] = {}
        self._status: int | None = None

    def send(self, task: Any, handover: ThreadPoolExecutor) -> Answer:
        """Pickle ``task`` here and have ``handover``'s thread send it."""
        sent = handover.submit(_send_parts, self.sock, _pack(task))
        self._sent += 1
        return Answer(self, self._sent - 1, sent)

    def answer(self, number: int, sent: Future[None]) -> tuple[str, Any]:
        """The outcome of the copy's task ``number`` (``sent``: its hand-over): its answers are
        read in order, and those of later tasks kept till asked for."""
        try:
            sent.result()
        except (BrokenPipeError, ConnectionResetError):
            raise self._ended() from None
        while number not in self._early:
            if not self._read_answer():
                raise self._ended()
        return self._early.pop(number)

    def _read_answer(self) -> bool:
        """Read the copy's next answer; False if it has ended (or its socket is closed)."""
        if self.sock.fileno() == -1:
            return False
        try:
            message = _receive(self.sock)
        except EOFError:
            message = None
        if message is None:
            return False
        (self._early[self._taken],) = message
        self._taken += 1
        return True

    def _ended(self) -> BuildError:
        """The error of a copy that ended before answering."""
        return BuildError(f"a helper process of the build ended unexpectedly ({self._end()})")

    def _end(self) -> str:
        """How the copy ended, once it has."""
        if self._status is None:
            _, self._status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(self._status)
        return f"exit status {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"

    def finish(self) -> None:
        """No more tasks: the copy ends once it has done those it has (even where another
        process holds this end of the socket, inherited)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def reap(self) -> None:
        """Keep the answers the copy has yet to give (they can still be taken), then wait for
        it to end."""
        while self._read_answer():
            pass
        self._end()
        self.sock.close()

    def kill(self) -> None:
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._end()
        self.sock.close()


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
        # Whatever ends the copy's work, Ctrl-C too, is handed to the build, which raises it.
        answer = _packed_outcome(work, pickle.dumps, catch=BaseException)
        view = memoryview(answer)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:  # noqa: BLE001 (the build reports a silent end)
        code = 1
    finally:
        os._exit(code)


def _packed_outcome(
    work: Callable[[], Any], pack: Callable[[Any], _Packed], *, catch: type[BaseException]
) -> _Packed:
    """What ``work`` returned, or the ``catch`` it raised, packed for the build:
    ``("returned", value)`` or ``("raised", exception)``; an exception that pickle cannot carry
    becomes a BuildError that names it."""
    try:
        return pack(("returned", work()))
    except catch as exc:  # handed to the build, which raises it
        try:
            return pack(("raised", exc))
        except Exception:  # noqa: BLE001 (an exception that cannot be pickled)
            return pack(("raised", BuildError(f"{type(exc).__name__}: {exc}")))


def _fork() -> int:
    with warnings.catch_warnings():
        # Python 3.12 warns of forking with threads alive: torch's idle workers, where the
        # model ran in this process. A copy forked then runs none of torch (the pages', the
        # pictures' encoders); one that runs the model is forked only before torch is imported
        # (build's ahead).
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


_LENGTH = struct.Struct("<Q")
_HEAD = struct.Struct("<QQ")  # a message's pickle's length, and how many buffers follow it
_PARENT_CHECK_SECONDS = 1.0


def _serve(work: Callable[[Any], Any], sock: socket.socket, parent: int) -> None:
    """In a pool's copy: answer each task that comes, until the build says there are no more or
    is gone; then end without running anything of the build's own exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        while (message := _receive(sock, alive=lambda: os.getppid() == parent)) is not None:
            (task,) = message
            del message
            answer = _packed_outcome(functools.partial(work, task), _pack, catch=Exception)
            del task
            _send_parts(sock, answer)
    except BaseException:  # noqa: BLE001 (the build reports the copy's end)
        code = 1
    finally:
        os._exit(code)


def _pack(obj: Any) -> list[bytes | memoryview]:
    """``obj`` pickled, as the parts of one message: its arrays' memory is sent as it is (pickle's
    out-of-band buffers), not copied into the pickle first (a batch's pictures are about 30 MB)."""
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]
    sizes = b"".join(_LENGTH.pack(view.nbytes) for view in views)
    return [_HEAD.pack(len(meta), len(views)) + sizes, meta, *views]


def _send_parts(sock: socket.socket, parts: list[bytes | memoryview]) -> None:
    sock.settimeout(None)
    for part in parts:
        sock.sendall(part)


def _receive(sock: socket.socket, alive: Callable[[], bool] | None = None) -> tuple[Any] | None:
    """The next object sent, as a 1-tuple; None at the end of the stream (or once ``alive``
    says the sender is gone, checked each second while none comes)."""
    head = _receive_exactly(sock, _HEAD.size, alive)
    if head is None:
        return None
    meta_size, count = _HEAD.unpack(head)
    sizes = _receive_exactly(sock, _LENGTH.size * count, alive) if count else b""
    meta = _receive_exactly(sock, meta_size, alive)
    if sizes is None or meta is None:
        raise EOFError("the stream ended inside a message")
    buffers = []
    for (size,) in _LENGTH.iter_unpack(sizes):
        buffer = _receive_exactly(sock, size, alive) if size else bytearray()
        if buffer is None:
            raise EOFError("the stream ended inside a message")
        buffers.append(buffer)
    return (pickle.loads(meta, buffers=buffers),)  # noqa: S301 (between a build and its copies)


def _receive_exactly(
    sock: socket.socket, size: int, alive: Callable[[], bool] | None
) -> bytearray | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    sock.settimeout(_PARENT_CHECK_SECONDS if alive else None)
    while got < size:
        try:
            count = sock.recv_into(view[got:])
        except TimeoutError:
            if alive is not None and not alive():
                return None
            continue
        if count == 0:
            if got:
                raise EOFError("the stream ended inside a message")
            return None
        got += count
    return buffer
