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


@pytest.mark.parametrize("preadv", [True, False], ids=["preadv", "without preadv"])
def test_codes_are_read_from_the_pack_as_an_array_would_give_them(
    tmp_path, cache, monkeypatch, preadv
):
    if not preadv:
        monkeypatch.setattr(code_pack, "_preadv", None)
    keys = [key(i) for i in (7, 2, 9, 2, 4)]
    want = cache.stored[[7, 2, 9, 2, 4]]
    with code_pack.load(tmp_path / "codes.pack", keys, cache) as codes:
        assert len(codes) == 5 and codes.shape == want.shape and codes.dtype == want.dtype
        assert np.array_equal(codes[1:4], want[1:4]) and np.array_equal(codes[::-2], want[::-2])
        rows = np.array([[4, 0], [3, 3]])
        out = np.empty((2, 2, CODE_SIZE), dtype=np.float16)
        assert codes.take(rows, axis=0, out=out) is out
        assert np.array_equal(out, want[rows]) and np.array_equal(codes[rows], want[rows])
    assert np.array_equal(out, want[rows])  # its own: still whole once the pack is closed
    with code_pack.load(tmp_path / "none.pack", [], cache) as none:  # no photos: no pack needed
        assert none.shape == (0, CODE_SIZE) and none[:].shape == (0, CODE_SIZE)


def _status(field: str) -> int:
    """A figure of /proc/self/status, in KB."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_reading_scattered_codes_leaves_the_pack_out_of_memory(tmp_path, cache):
    """The pack is read, not mapped: a memory map of it kept 200 to 600 MB of a 100,000-code pack
    resident while its rows were read 768 at a time, scattered."""
    pack = tmp_path / "codes.pack"
    keys = [key(i) for i in range(3000)]
    code_pack.load(pack, keys, cache).close()
    order = np.random.default_rng(1).permutation(3000).reshape(-1, 12, 5)
    for rows in order[:3]:  # warm up, so that the peak below is the reading's alone
        code_pack.Codes(pack, np.arange(3000)).take(rows).sum()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
    start = _status("VmRSS:")
    with code_pack.load(pack, keys, cache) as codes:
        for rows in order:
            assert np.array_equal(codes[rows], cache.stored[rows])
    assert _status("VmHWM:") - start < 6 * 1024  # KB, against the pack's 24 MB


def test_the_search_and_the_map_read_the_pack_as_they_would_the_array(tmp_path, cache, monkeypatch):
    from reportgen import folder_map, similar

    from .test_similar import clustered_codes

    monkeypatch.setattr(similar, "EXACT_LIMIT", 300)  # past it, faiss's graph
    for n in (200, 600):
        stored = clustered_codes(n, seed=n)
        keys = [key(10_000 + i) for i in range(n)]
        for k, code in zip(keys, stored, strict=True):
            write_atomic(Path(cache.code_name(k)), code.tobytes())
        names = [f"p{i:03d}" for i in range(n)]
        with code_pack.load(tmp_path / f"codes-{n}.pack", keys, cache) as codes:
            found = similar.find(names, keys, codes)
            want = similar.find(names, keys, stored)
            assert found.method == want.method == ("exact" if n == 200 else "faiss-hnsw")
            assert np.array_equal(found.nearest, want.nearest)
            assert np.array_equal(found.distances, want.distances)
            previous = similar.find(names[5:], keys[5:], stored[5:])
            again = similar.find(names, keys, codes, previous)
            assert again.method == "incremental"
            fresh = similar.find(names, keys, stored, previous)
            assert np.array_equal(again.nearest, fresh.nearest)
            if n == 200:
                places = folder_map.layout(codes, found)
                assert np.array_equal(places, folder_map.layout(stored, want))
