"""The fc7 codes of one site's photos in one file, so that a rebuild reads one file, not one per
photo, and the nearest photos and the map read them from it as they need them.

The cache keeps each photo's code in a file of its own (8 KB); the nearest photos and the map need
all of them at every build that changes the folder. Opening 20,000 small files took 0.2 to 0.6 s
here, and more as the folder grows; reading them from one file takes a few hundredths of a second.

The pack is a list of records, each a cache key (64 ASCII bytes) and its code (4,096 float16
numbers), appended to as photos are added and written again whole, in the folder's order, only
when most of it is codes of photos gone. It is a copy: a code it lacks is read from the cache and
appended. A key names its code's bytes, so a record is never stale; a record cut short by a kill is
dropped.

The build does not hold the folder's codes in memory (8 KB a photo: 820 MB at 100,000 photos):
:func:`load` opens the pack, and :class:`Codes` reads the rows asked for straight into the array it
returns. Not through a memory map: a fault maps a whole folio of the page cache, so 768 scattered
rows (what the nearest photos' refinement reads at once) left 200 to 600 MB of the pack mapped,
measured on this project's Linux machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cache import CODE_SIZE, ResultCache
from .files import replaced

KEY_BYTES = 64
RECORD = np.dtype([("key", f"S{KEY_BYTES}"), ("code", "<f2", (CODE_SIZE,))])
CHUNK = 1024
"""Records written or read from the cache at a time (8 MB)."""
IOV_MAX = 1024
"""Buffers one ``preadv`` call may fill (POSIX's IOV_MAX on Linux and macOS)."""
CODE_BYTES = CODE_SIZE * 2
_preadv = getattr(os, "preadv", None)


class Codes:
    """The codes of a folder's photos, (N, CODE_SIZE) float16 in the folder's order, read from the
    pack as asked for: ``codes[rows]`` (a slice or an array of positions, of any shape) and
    ``codes.take(rows, axis=0, out=...)`` read them into a new array, as a NumPy array would give
    them. ``len``, ``shape`` and ``dtype`` are those of the array it stands for. Close it (or use
    it as a context manager) to close the pack."""

    dtype = np.dtype(np.float16)

    def __init__(self, path: Path, where: np.ndarray) -> None:
        """``where``: the pack's record number of each photo's code."""
        self._where = where
        self.shape = (len(where), CODE_SIZE)
        # Closed by close(); not opened for no photos, when there may be no pack.
        self._fh = open(path, "rb", buffering=0) if len(where) else None  # noqa: SIM115
        self._key = bytearray(KEY_BYTES)  # where the keys between codes are read to, unused

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        return self.take(np.arange(*rows.indices(len(self))) if isinstance(rows, slice) else rows)

    def take(self, rows: np.ndarray, axis: int = 0, out: np.ndarray | None = None) -> np.ndarray:
        """The codes at positions ``rows`` (as ``ndarray.take`` along axis 0; ``out``, if given,
        C-contiguous).

        Raises:
            OSError: the pack could not be read, or ended before a record it held.
        """
        if axis != 0:
            raise ValueError("codes are taken by rows (axis 0)")
        records = np.asarray(self._where[rows])
        if out is None:
            out = np.empty((*records.shape, CODE_SIZE), dtype=np.float16)
        if not out.flags.c_contiguous or out.shape != (*records.shape, CODE_SIZE):
            raise ValueError(f"out must be C-contiguous, of shape {(*records.shape, CODE_SIZE)}")
        if not records.size:
            return out
        flat = records.reshape(-1).tolist()
        order = np.argsort(records.reshape(-1), kind="stable").tolist()
        into = memoryview(out.reshape(-1, CODE_SIZE)).cast("B")
        # One read for each run of records that follow one another in the pack (a block of the
        # folder, mostly), else one a record.
        start = 0
        while start < len(order):
            end = start + 1
            while end < min(len(order), start + IOV_MAX // 2) and (
                flat[order[end]] == flat[order[end - 1]] + 1
            ):
                end += 1
            self._read_run(flat[order[start]], order[start:end], into)
            start = end
        return out

    def _read_run(self, first: int, rows: list[int], into: memoryview) -> None:
        """Read the codes of the records from the pack's ``first`` on, one a row, into ``rows`` of
        ``into``, skipping the keys between them."""
        assert self._fh is not None  # rows were asked for, so there are photos
        buffers = [into[rows[0] * CODE_BYTES : (rows[0] + 1) * CODE_BYTES]]
        for row in rows[1:]:
            buffers += (self._key, into[row * CODE_BYTES : (row + 1) * CODE_BYTES])
        offset = first * RECORD.itemsize + KEY_BYTES
        if _preadv is not None:
            done = _preadv(self._fh.fileno(), buffers, offset)
        else:  # one read a buffer, where the system has no preadv (macOS before 11, Windows)
            self._fh.seek(offset)
            done = sum(self._fh.readinto(buffer) or 0 for buffer in buffers)
        if done != len(rows) * RECORD.itemsize - KEY_BYTES:
            raise OSError(f"{self._fh.name}: the pack ended before a record it held")

    def close(self) -> None:
        """Close the pack (the codes read stay valid)."""
        if self._fh is not None:
            self._fh.close()

    def __enter__(self) -> Codes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load(path: Path, keys: Sequence[str], cache: ResultCache) -> Codes:
    """The codes under ``keys``, in that order, from the pack at ``path``: the codes it lacks are
    first read from the cache and added to it.

    Raises:
        OSError: a code is in neither, or the pack cannot be written.
    """
    # Photos with the same bytes share a key, and one record.
    unique = list(dict.fromkeys(keys))
    held = _keys(path)
    missing = [key for key in unique if key.encode("ascii") not in held]
    if len(held) + len(missing) > 2 * len(unique) and len(held) > CHUNK:
        _rewrite(path, unique, held, cache)  # mostly codes of photos gone: written anew, in order
        held = {key.encode("ascii"): row for row, key in enumerate(unique)}
    else:
        records = _whole(path)
        for start in range(0, len(missing), CHUNK):
            block = missing[start : start + CHUNK]
            _append(path, block, cache.codes(block))
            held.update((key.encode("ascii"), records + start + i) for i, key in enumerate(block))
    where = np.fromiter((held[key.encode("ascii")] for key in keys), np.int64, len(keys))
    return Codes(path, where)


def read(path: Path, keys: Sequence[str], cache: ResultCache) -> np.ndarray:
    """The codes under ``keys`` as one array, (len(keys), CODE_SIZE) float16 (see :func:`load`)."""
    with load(path, keys, cache) as codes:
        return codes[:]


def _whole(path: Path) -> int:
    """The number of whole records in the pack (0 when there is none)."""
    try:
        return path.stat().st_size // RECORD.itemsize
    except FileNotFoundError:
        return 0


def _keys(path: Path) -> dict[bytes, int]:
    """Each key in the pack, with its record's number."""
    records = _whole(path)
    if not records:
        return {}
    held: dict[bytes, int] = {}
    with open(path, "rb") as fh:
        for start in range(0, records, CHUNK):
            chunk = np.fromfile(fh, dtype=RECORD, count=min(CHUNK, records - start))
            held.update(zip(chunk["key"].tolist(), range(start, start + len(chunk)), strict=True))
    return held


def _append(path: Path, keys: Sequence[str], codes: np.ndarray) -> None:
    """Add records to the end of the pack (after dropping a record a kill cut short)."""
    records = np.empty(len(keys), dtype=RECORD)
    records["key"] = [key.encode("ascii") for key in keys]
    records["code"] = codes
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        whole = os.fstat(fh.fileno()).st_size // RECORD.itemsize * RECORD.itemsize
        fh.truncate(whole)
        fh.seek(whole)
        records.tofile(fh)


def _rewrite(path: Path, keys: Sequence[str], held: dict[bytes, int], cache: ResultCache) -> None:
    """Replace the pack with the records of ``keys`` alone, in that order, atomically: each code
    from the pack (its record number in ``held``) or else from the cache."""
    with replaced(path) as tmp, Codes(path, np.arange(_whole(path))) as old:
        tmp.touch()
        for start in range(0, len(keys), CHUNK):
            block = keys[start : start + CHUNK]
            rows = [held.get(key.encode("ascii"), -1) for key in block]
            codes = np.empty((len(block), CODE_SIZE), dtype=np.float16)
            there = [i for i, row in enumerate(rows) if row >= 0]
            codes[there] = old.take(np.array([rows[i] for i in there], dtype=np.int64))
            lacking = [i for i, row in enumerate(rows) if row < 0]
            if lacking:
                codes[lacking] = cache.codes([block[i] for i in lacking])
            _append(tmp, block, codes)
