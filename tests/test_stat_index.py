"""Rebuilds read only the photos that changed: an unchanged file's recorded hash is reused by its
stamp (size, mtime in ns, inode), as git's index does."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import reportgen
import reportgen.discover
from reportgen.build import STAT_INDEX

from .conftest import SAMPLE_PHOTOS


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The files discovery reads and hashes, by name, as builds go."""
    calls: list[str] = []
    real = reportgen.discover._hash_file

    def counting(path: Path):
        calls.append(path.name)
        return real(path)

    monkeypatch.setattr(reportgen.discover, "_hash_file", counting)
    return calls


def settled(folder: Path, count: int) -> Path:
    """Photos last written a minute ago (a file written just now is hashed again next time)."""
    folder.mkdir()
    past = time.time() - 60
    for i in range(count):
        path = folder / f"p{i}.jpg"
        shutil.copy(SAMPLE_PHOTOS[i % len(SAMPLE_PHOTOS)], path)
        os.utime(path, (past, past))
    return folder


def build(src: Path, out: Path, **options):
    return reportgen.build_site(src, out, weights="random", workers=0, **options)


def test_a_rebuild_reads_only_the_files_that_changed(tmp_path, hashed):
    src, out = settled(tmp_path / "in", 4), tmp_path / "site"
    first = build(src, out)
    assert sorted(hashed) == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"]
    assert (out / ".reportgen" / STAT_INDEX).is_file()

    hashed.clear()
    again = build(src, out)
    assert hashed == [] and again.computed == 0
    assert [p.top5 for p in again.photos] == [p.top5 for p in first.photos]

    os.utime(src / "p1.jpg")  # touched: read again (same bytes: nothing to compute)
    shutil.copy(SAMPLE_PHOTOS[4], src / "p2.jpg")  # new bytes
    hashed.clear()
    third = build(src, out)
    assert sorted(hashed) == ["p1.jpg", "p2.jpg"] and third.computed == 1

    hashed.clear()
    build(src, out, full=True)  # --full reads everything
    assert len(hashed) == 4


def test_a_file_written_just_before_hashing_is_hashed_again(tmp_path, hashed):
    src, out = settled(tmp_path / "in", 2), tmp_path / "site"
    shutil.copy(SAMPLE_PHOTOS[2], src / "fresh.jpg")  # its mtime is now: a racy entry
    build(src, out)
    hashed.clear()
    build(src, out)
    assert hashed == ["fresh.jpg"]


def test_a_damaged_index_is_ignored(tmp_path, hashed):
    src, out = settled(tmp_path / "in", 2), tmp_path / "site"
    build(src, out)
    (out / ".reportgen" / STAT_INDEX).write_bytes(b"not a database")
    hashed.clear()
    result = build(src, out)
    assert len(hashed) == 2 and result.computed == 0 and len(result.photos) == 2
