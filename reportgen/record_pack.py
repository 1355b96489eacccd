"""The records of one site's photos in one file, so that a rebuild reads one file, not one per
photo.

Every build that changes the folder needs every photo's record (the summary, the kernels, the
index and the exports show them all). Reading 20,000 of the cache's JSON entries took 0.43 s here
before any record was made of them; the same records from one file, 0.1 s.

The pack is a copy of the cache's entries, each under its cache key (which names what it was made
from) with the entry's stamp when it was copied (:meth:`ResultCache.entry_stamp`: the size and
mtime of the entry and of its pictures). A copy stands for its entry only while the stamp is
unchanged, as git's index stands for a file: an entry damaged or replaced since is read from the
cache, so that a damaged one is recomputed, and copied again.

The pack is a list of chunks, each its length (8 bytes, little-endian) and a :mod:`marshal` tuple:
the pack's format, the layout of the records it was written with, and ``(key, stamp, record)``
triples, each record as :func:`serial.dump` makes it and read back through :func:`serial.load`,
which checks every value. Records are appended as photos are added (a later copy under a key
replaces an earlier one); the pack is written anew, in the folder's order, only when most of it is
records of photos gone or replaced. A chunk cut short by a kill is dropped; a pack of another
format or layout, or damaged, is ignored (its records are read from the cache instead, and it is
written anew); a copy that :func:`typed` refuses is read from the cache alone.

:mod:`marshal` is the standard library's fastest reader of plain values (0.1 s for these 20,000
records, against 0.34 s as JSON); it makes values only, never code that runs, and a pack is read
only from reportgen's own state folder.
"""

from __future__ import annotations

import functools
import logging
import marshal
import os
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from . import serial
from .files import replaced
from .records import PhotoRecord, stored_fields

log = logging.getLogger("reportgen")

FORMAT = 1
HEADER = 8
"""Bytes of a chunk's length."""
CHUNK = 1024
"""Records a chunk holds at most: a pack is written and read a chunk at a time (about 5 MB), so
that neither needs much memory beside the records."""


@functools.cache
def layout() -> str:
    """The stored fields of a record and their types: a pack written for other records is
    ignored."""
    hints = typing.get_type_hints(PhotoRecord)
    return repr([(f.name, str(hints[f.name])) for f in stored_fields(PhotoRecord)])


Copy = tuple[bytes, PhotoRecord]
"""A record as the pack keeps it: its entry's stamp when copied, and the record."""


def typed(stored: object) -> PhotoRecord:
    """A record from the form the pack keeps it in (:func:`read_raw`).

    Raises:
        ValueError: the copy is damaged.
    """
    try:
        return serial.load(PhotoRecord, stored)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def read_raw(path: Path, keys: Iterable[str]) -> tuple[dict[str, tuple[bytes, object]], int]:
    """The copies the pack at ``path`` holds under any of ``keys`` (the latest of each), each
    record as the pack keeps it, for :func:`typed` to make one at a time (most of the time a
    pack takes to read); and how many copies it holds in all (0 when there is none, or it is
    ignored)."""
    wanted = set(keys)
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return {}, 0
    found: dict[str, tuple[bytes, object]] = {}
    held = 0
    try:
        with fh:
            for triples in _chunks(fh):
                held += len(triples)
                for key, stamp, stored in triples:
                    if key in wanted:
                        found[key] = (_bytes(stamp), stored)
    except (ValueError, TypeError, EOFError) as exc:
        log.info("record pack %s is damaged (%s); reading the cache instead", path, exc)
        return {}, 0
    return found, held


def save(path: Path, copies: Mapping[str, Copy], added: Iterable[str], held: int) -> None:
    """Keep ``copies`` (every photo's, by key) in the pack at ``path``, which holds ``held``
    copies now (0: none, or it was ignored): append those under ``added``, or write the pack anew
    with all of them when most of it would otherwise be copies of photos gone or replaced."""
    if not copies:  # every photo was skipped: the build stops there, and keeps nothing
        path.unlink(missing_ok=True)
        return
    added = [key for key in dict.fromkeys(added) if key in copies]
    if held and held + len(added) <= 2 * len(copies):
        _append(path, added, copies)
        return
    with replaced(path) as tmp:
        _append(tmp, list(copies), copies)


def _bytes(value: object) -> bytes:
    if type(value) is not bytes:
        raise ValueError(f"expected a stamp, got {value!r:.40}")
    return value


def _chunks(fh: BinaryIO) -> Iterator[list[tuple[str, bytes, dict]]]:
    """Each whole chunk's triples, read from ``fh`` one chunk at a time; raises ValueError for a
    pack of another format or layout."""
    expected = layout()
    while len(header := fh.read(HEADER)) == HEADER:
        size = int.from_bytes(header, "little")
        body = fh.read(size)
        if len(body) < size:
            return  # cut short by a kill: dropped (and overwritten by the next append)
        form, shape, triples = marshal.loads(body)
        if form != FORMAT or shape != expected:
            raise ValueError("written by another version")
        yield triples


def _append(path: Path, keys: list[str], copies: Mapping[str, Copy]) -> None:
    """Add the copies under ``keys`` to the end of the pack, a chunk at a time (after dropping a
    chunk a kill cut short)."""
    if not keys:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.truncate(_whole(path))
        fh.seek(0, os.SEEK_END)
        for start in range(0, len(keys), CHUNK):
            triples = [
                (key, copies[key][0], serial.dump(copies[key][1]))
                for key in keys[start : start + CHUNK]
            ]
            body = marshal.dumps((FORMAT, layout(), triples))
            fh.write(len(body).to_bytes(HEADER, "little") + body)


def _whole(path: Path) -> int:
    """The length of the pack's whole chunks: where the next one goes."""
    end = 0
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        while end + HEADER <= size:
            fh.seek(end)
            length = int.from_bytes(fh.read(HEADER), "little")
            if end + HEADER + length > size:
                break
            end += HEADER + length
    return end
