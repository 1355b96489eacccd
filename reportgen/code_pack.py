"""The fc7 codes of one site's photos in one file, so that a rebuild reads one file, not one per
photo.

The cache keeps each photo's code in a file of its own (8 KB); the nearest photos and the map need
all of them at every build that changes the folder. Opening 20,000 small files took 0.2 to 0.6 s
here, and more as the folder grows; reading them from one file takes a few hundredths of a second.

The pack is a list of records, each a cache key (64 ASCII bytes) and its code (4,096 float16
numbers), appended to as photos are added and written again whole, in the folder's order, only
when most of it is codes of photos gone. It is a copy: a code it lacks is read from the cache and
appended. A key names its code's bytes, so a record is never stale; a record cut short by a kill is
dropped.
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
"""Records read at a time (8 MB), so that reading needs little memory beside the codes."""


def read(path: Path, keys: Sequence[str], cache: ResultCache) -> np.ndarray:
    """The codes under ``keys``, (len(keys), CODE_SIZE) float16 in that order: from the pack at
    ``path`` where it holds them, else from the cache (then added to the pack).

    Raises:
        OSError: a code is in neither, or the pack cannot be written.
    """
    out = np.empty((len(keys), CODE_SIZE), dtype=np.float16)
    # Photos with the same bytes share a key: each key is read once, into its first row.
    first: dict[bytes, int] = {}
    copies = np.empty(len(keys), dtype=np.int64)
    for row, key in enumerate(keys):
        copies[row] = first.setdefault(key.encode("ascii"), row)
    found = np.zeros(len(keys), dtype=bool)
    records = _read_into(path, first, out, found)
    unique = np.fromiter(first.values(), np.int64, len(first))
    missing = unique[~found[unique]]
    rewrite = records + len(missing) > 2 * len(unique) and records > CHUNK
    # A block at a time, so that a cold build's 20,000 codes never stand twice in memory.
    for block in _blocks(missing):
        out[block] = cache.codes([keys[row] for row in block])
        if not rewrite:
            _append(path, [keys[row] for row in block], out[block])
    again = np.flatnonzero(copies != np.arange(len(keys)))
    out[again] = out[copies[again]]
    if rewrite:  # mostly codes of photos gone: written anew, in the folder's order
        _rewrite(path, keys, unique, out)
    return out


def _blocks(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` in blocks of at most CHUNK."""
    return [rows[start : start + CHUNK] for start in range(0, len(rows), CHUNK)]


def _read_into(path: Path, wanted: dict[bytes, int], out: np.ndarray, found: np.ndarray) -> int:
    """Copy the pack's codes under ``wanted`` keys into their rows of ``out``, marking them in
    ``found``; the number of whole records in the pack (0 when there is none)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return 0
    with fh:
        records = os.fstat(fh.fileno()).st_size // RECORD.itemsize
        left = records
        while left > 0:
            chunk = np.fromfile(fh, dtype=RECORD, count=min(CHUNK, left))
            if len(chunk) == 0:
                break
            left -= len(chunk)
            rows = np.fromiter(
                (wanted.get(key, -1) for key in chunk["key"].tolist()), np.int64, len(chunk)
            )
            hit = rows >= 0
            out[rows[hit]] = chunk["code"][hit]
            found[rows[hit]] = True
    return records


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


def _rewrite(path: Path, keys: Sequence[str], rows: np.ndarray, codes: np.ndarray) -> None:
    """Replace the pack with the records of ``rows`` alone (keys and codes), atomically."""
    with replaced(path) as tmp:
        tmp.touch()
        for block in _blocks(rows):
            _append(tmp, [keys[row] for row in block], codes[block])
