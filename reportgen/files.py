"""Files: written so that no reader ever sees half of one; read only when they are regular files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


class NotRegularFile(OSError):
    """A path names a pipe, socket, device or folder, which reportgen never reads."""


def kind_of(mode: int) -> str | None:
    """What a file of ``mode`` is, if it is not a regular file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def size_text(count: int) -> str:
    """Bytes as people say them (decimal units, as GitHub Pages' limit is stated)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def extension(name: str) -> str:
    """A file name's extension, lower-cased, as ``Path(name).suffix.lower()`` gives it (a string
    function: it runs for every file of a folder searched)."""
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def not_text(name: str) -> str | None:
    """Where a file name (or path) is not UTF-8 text, the name with those bytes escaped ('Caf\\xe9'
    for Latin-1's 'Café'); None where it is text. Such bytes reach Python as lone surrogates,
    which no page, record or hash of the name can hold."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return None


def open_regular(path: Path) -> BinaryIO:
    """The regular file at ``path``, open for reading (unbuffered).

    Checked before opening (a socket cannot even be opened), then opened without blocking and
    checked again on the descriptor: a named pipe never hangs the open, and a file swapped for one
    in between is still refused.

    Raises:
        NotRegularFile: ``path`` is a pipe, socket, device or folder.
        OSError: it cannot be opened.
    """
    kind = kind_of(os.stat(path).st_mode)
    if kind is not None:
        raise NotRegularFile(f"is {kind}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    kind = kind_of(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise NotRegularFile(f"is {kind}")
    return os.fdopen(fd, "rb", buffering=0)


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file at ``path`` (see :func:`open_regular`)."""
    with open_regular(path) as fh:
        return fh.readall()


Stamp = tuple[int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    """What tells a file's versions apart without reading it: size, mtime in ns, inode."""
    return st.st_size, st.st_mtime_ns, st.st_ino


class ChangedFile(OSError):
    """A file is not the version it was when it was hashed."""


def read_unchanged(path: Path, stamp: Stamp) -> bytes:
    """The bytes of the regular file at ``path``, if it still has ``stamp`` before and after
    they are read (see :func:`open_regular`).

    Raises:
        ChangedFile: it was changed (or replaced) since ``stamp`` was taken, or while it was read.
    """
    with open_regular(path) as fh:
        if stamp_of(os.fstat(fh.fileno())) != stamp:
            raise ChangedFile("changed since it was found")
        data = fh.readall()
        if stamp_of(os.fstat(fh.fileno())) != stamp:
            raise ChangedFile("changed while it was read")
    return data


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
        _write_all(fd, data, path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the write's own error is the one to report
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """A path beside ``path`` for the block to write a new version at, a piece at a time, which
    then takes ``path``'s place in one rename (as :func:`write_atomic` for bytes in hand); it is
    removed, and ``path`` left as it was, if the block raises."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_changed(path: Path, data: bytes) -> bool:
    """:func:`write_atomic`, unless ``path`` holds these bytes already (a rebuild with nothing new
    writes nothing); whether it wrote."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return False
    write_atomic(path, data)
    return True


def write_new(path: Path, data: bytes) -> None:
    """Write a file in a folder that exists and that no one else reads yet (a staging area)."""
    _write_all(os.open(path, _NEW_FILE, 0o666), data, path)


def _write_all(fd: int, data: bytes, path: Path) -> None:
    """Write all of ``data`` to ``fd`` and close it; an error names ``path``."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)  # os.write's errors name no file
        raise
    finally:
        os.close(fd)


# O_NOFOLLOW: a symlink planted where the temporary file goes is not written through.
_NEW_FILE = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_TRUNC
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)
