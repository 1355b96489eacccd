"""The site's pack of fc7 codes: a copy of the cache's codes, read in one go."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from reportgen import code_pack
from reportgen.cache import CODE_SIZE, ResultCache
from reportgen.files import write_atomic


def key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


class CountingCache(ResultCache):
    """A cache whose codes are stored as the build stores them; counts the codes read from it."""

    def __init__(self, root: Path, count: int) -> None:
        super().__init__(root, "fingerprint")
        self.read: list[str] = []
        self.stored = np.random.default_rng(0).standard_normal((count, CODE_SIZE)).astype("<f2")
        for i, code in enumerate(self.stored):
            write_atomic(Path(self.code_name(key(i))), code.tobytes())

    def codes(self, keys):
        self.read.extend(keys)
        return super().codes(keys)


@pytest.fixture
def cache(tmp_path: Path) -> CountingCache:
    return CountingCache(tmp_path / "cache", 3000)


def test_codes_come_from_the_pack_once_it_holds_them(tmp_path, cache):
    pack = tmp_path / "codes.pack"
    keys = [key(i) for i in range(10)]
    assert np.array_equal(code_pack.read(pack, keys, cache), cache.stored[:10])
    assert cache.read == keys and pack.stat().st_size == 10 * code_pack.RECORD.itemsize

    cache.read.clear()
    grown = [key(i) for i in (12, 3, 11, 0)]  # added, in another order, some gone
    assert np.array_equal(code_pack.read(pack, grown, cache), cache.stored[[12, 3, 11, 0]])
    assert cache.read == [key(12), key(11)]  # only what the pack lacked
    assert pack.stat().st_size == 12 * code_pack.RECORD.itemsize


def test_photos_with_the_same_bytes_share_one_record(tmp_path, cache):
    pack = tmp_path / "codes.pack"
    keys = [key(1), key(2), key(1)]
    assert np.array_equal(code_pack.read(pack, keys, cache), cache.stored[[1, 2, 1]])
    assert cache.read == [key(1), key(2)]
    cache.read.clear()
    assert np.array_equal(code_pack.read(pack, keys, cache), cache.stored[[1, 2, 1]])
    assert cache.read == [] and pack.stat().st_size == 2 * code_pack.RECORD.itemsize


def test_a_record_cut_short_by_a_kill_is_read_again_from_the_cache(tmp_path, cache):
    pack = tmp_path / "codes.pack"
    keys = [key(i) for i in range(5)]
    code_pack.read(pack, keys, cache)
    with open(pack, "r+b") as fh:
        fh.truncate(pack.stat().st_size - 100)  # the last record half written
    cache.read.clear()
    assert np.array_equal(code_pack.read(pack, keys, cache), cache.stored[:5])
    assert cache.read == [key(4)]
    assert pack.stat().st_size == 5 * code_pack.RECORD.itemsize


def test_a_pack_mostly_of_photos_gone_is_written_anew(tmp_path, cache):
    pack = tmp_path / "codes.pack"
    code_pack.read(pack, [key(i) for i in range(3000)], cache)
    kept = [key(i) for i in range(2999, 1500, -2)]  # 750 of them, in reverse order
    codes = code_pack.read(pack, kept, cache)
    assert np.array_equal(codes, cache.stored[2999:1500:-2])
    records = np.fromfile(pack, dtype=code_pack.RECORD)
    assert records["key"].tolist() == [k.encode() for k in kept]
    assert not list(tmp_path.glob(".*tmp"))


def test_a_code_in_neither_is_an_error(tmp_path, cache):
    with pytest.raises(OSError):
        code_pack.read(tmp_path / "codes.pack", [key(5000)], cache)
