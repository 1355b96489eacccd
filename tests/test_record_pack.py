"""The site's pack of photo records: a copy of the cache's entries, read in one go."""

from __future__ import annotations

import dataclasses
import hashlib
import marshal

import pytest

from reportgen import record_pack, serial
from reportgen.cache import ResultCache
from reportgen.cli import main
from reportgen.records import LayerRange, PhotoRecord, Prediction

from .conftest import state_of


def key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def record(i: int) -> PhotoRecord:
    return PhotoRecord(
        width=100 + i,
        height=50,
        frames=1,
        top5=(Prediction(i, f"class «{i}»", 0.5 + i / 1e6), Prediction(999, "other", 0.25)),
        conv1_mean=(0.125 * i, -1.5),
        conv1_max=(3.0, 2.96846 + i),
        ranges=(LayerRange("conv1", -2.5, 3.0 + i),),
    )


def same(a: PhotoRecord, b: PhotoRecord) -> bool:
    return serial.dump(a) == serial.dump(b)


def records(*numbers: int, stamp: bytes = b"as copied") -> dict[str, record_pack.Copy]:
    return {key(i): (stamp + bytes([i]), record(i)) for i in numbers}


def read(pack, keys) -> tuple[dict[str, record_pack.Copy], int]:
    """The pack's copies under ``keys``, each made a record as a build makes it."""
    raw, held = record_pack.read_raw(pack, keys)
    return {k: (stamp, record_pack.typed(copy)) for k, (stamp, copy) in raw.items()}, held


def same_copies(found: dict[str, record_pack.Copy], kept: dict[str, record_pack.Copy]) -> bool:
    return found.keys() == kept.keys() and all(
        found[k][0] == kept[k][0] and same(found[k][1], kept[k][1]) for k in kept
    )


def test_records_come_back_as_they_were_kept(tmp_path):
    pack = tmp_path / "records.pack"
    assert read(pack, [key(1)]) == ({}, 0)
    kept = records(1, 2, 3)
    record_pack.save(pack, kept, kept, 0)
    found, held = read(pack, [key(3), key(1), key(7)])
    assert held == 3 and same_copies(found, {k: kept[k] for k in (key(1), key(3))})
    assert isinstance(found[key(1)][1].top5[0], Prediction)


def test_added_records_are_appended_and_a_mostly_dead_pack_is_written_anew(tmp_path):
    pack = tmp_path / "records.pack"
    record_pack.save(pack, records(*range(6)), records(*range(6)), 0)
    size = pack.stat().st_size
    now = records(*range(7))
    record_pack.save(pack, now, [key(6)], 6)  # one added: appended
    assert pack.stat().st_size > size
    found, held = read(pack, now)
    assert held == 7 and same_copies(found, now)

    few = records(5, 6, 8)  # five of seven gone, one added: more dead than alive
    record_pack.save(pack, few, [key(8)], 7)
    found, held = read(pack, [key(i) for i in range(10)])
    assert held == 3 and same_copies(found, few)


def test_a_later_copy_under_a_key_replaces_the_earlier(tmp_path):
    pack = tmp_path / "records.pack"
    record_pack.save(pack, records(1, 2), records(1, 2), 0)
    again = {**records(1), **records(2, stamp=b"entry written again")}
    record_pack.save(pack, again, [key(2)], 2)
    found, held = read(pack, [key(1), key(2)])
    assert held == 3 and same_copies(found, again)


def test_a_chunk_cut_short_by_a_kill_is_dropped_and_overwritten(tmp_path):
    pack = tmp_path / "records.pack"
    record_pack.save(pack, records(1, 2), records(1, 2), 0)
    whole = pack.stat().st_size
    record_pack.save(pack, records(1, 2, 3), [key(3)], 2)
    with open(pack, "r+b") as fh:
        fh.truncate(pack.stat().st_size - 5)  # the last chunk, cut short
    found, held = read(pack, [key(1), key(2), key(3)])
    assert held == 2 and sorted(found) == sorted([key(1), key(2)])

    record_pack.save(pack, records(1, 2, 4), [key(4)], 2)
    found, held = read(pack, [key(1), key(2), key(4)])
    assert held == 3 and len(found) == 3
    assert pack.stat().st_size > whole


@pytest.mark.parametrize(
    "chunk",
    [
        marshal.dumps((record_pack.FORMAT + 1, record_pack.layout(), [])),  # a later format
        marshal.dumps((record_pack.FORMAT, "[('width', 'int')]", [])),  # other records
        b"\x00not marshal at all",
        marshal.dumps((record_pack.FORMAT, record_pack.layout(), [(key(2), "not bytes", {})])),
    ],
    ids=["format", "layout", "garbage", "stamp"],
)
def test_a_pack_of_another_version_or_damaged_is_ignored(tmp_path, chunk):
    pack = tmp_path / "records.pack"
    record_pack.save(pack, records(1), records(1), 0)
    with open(pack, "ab") as fh:
        fh.write(len(chunk).to_bytes(record_pack.HEADER, "little") + chunk)
    assert record_pack.read_raw(pack, [key(1), key(2)]) == ({}, 0)


def test_a_damaged_copy_is_refused_when_it_is_made_a_record(tmp_path):
    pack = tmp_path / "records.pack"
    record_pack.save(pack, records(1), records(1), 0)
    damaged = marshal.dumps(
        (record_pack.FORMAT, record_pack.layout(), [(key(2), b"", {"width": 1})])
    )
    with open(pack, "ab") as fh:
        fh.write(len(damaged).to_bytes(record_pack.HEADER, "little") + damaged)
    raw, held = record_pack.read_raw(pack, [key(1), key(2)])
    assert held == 2 and raw[key(2)] == (b"", {"width": 1})
    with pytest.raises(ValueError, match="fields"):
        record_pack.typed(raw[key(2)][1])
    assert same(record_pack.typed(raw[key(1)][1]), record(1))


def counting_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the cache entries read from here on."""
    read: list[str] = []
    load = ResultCache.load

    def counting(self, key):
        read.append(key)
        return load(self, key)

    monkeypatch.setattr(ResultCache, "load", counting)
    return read


def test_a_rebuild_takes_its_records_from_the_pack(tmp_path, weights_file, photos_dir, monkeypatch):
    out = tmp_path / "site"
    args = ["build", str(photos_dir), "--out", str(out), "--weights", str(weights_file), "--quiet"]
    assert main(args) == 0
    pages = {p: p.read_bytes() for p in out.rglob("*.html")}
    pack = state_of(out) / "records.pack"
    assert pack.is_file()

    loaded = counting_loads(monkeypatch)
    (out / "index.html").unlink()  # the site has work to do: nothing else changed
    assert main(args) == 0
    assert loaded == []  # every record came from the pack
    assert {p: p.read_bytes() for p in out.rglob("*.html")} == pages

    pack.unlink()  # without it, the same site from the cache's entries
    (out / "index.html").unlink()
    assert main(args) == 0
    assert len(set(loaded)) == len(list(photos_dir.rglob("*.jpg")))
    assert {p: p.read_bytes() for p in out.rglob("*.html")} == pages


def test_a_packed_record_whose_pictures_left_the_cache_is_computed_again(
    tmp_path, weights_file, photos_dir
):
    out = tmp_path / "site"
    args = ["build", str(photos_dir), "--out", str(out), "--weights", str(weights_file), "--quiet"]
    assert main(args) == 0
    cache = state_of(out) / "cache"
    crops = sorted((cache / "pictures").rglob("*-input.jpg"))
    crops[0].unlink()
    (out / "index.html").unlink()
    assert main(args) == 0
    assert crops[0].is_file()  # drawn again, not linked from nowhere


def test_a_damaged_copy_is_read_from_the_cache_instead(
    tmp_path, weights_file, photos_dir, monkeypatch
):
    out = tmp_path / "site"
    args = ["build", str(photos_dir), "--out", str(out), "--weights", str(weights_file), "--quiet"]
    assert main(args) == 0
    pages = {p: p.read_bytes() for p in out.rglob("*.html")}
    pack = state_of(out) / "records.pack"
    with open(pack, "rb") as fh:
        triples = [t for chunk in record_pack._chunks(fh) for t in chunk]
    damaged_key, stamp, copy = triples[0]
    triples[0] = (damaged_key, stamp, {**copy, "width": "wide"})  # its stamp still matches
    body = marshal.dumps((record_pack.FORMAT, record_pack.layout(), triples))
    pack.write_bytes(len(body).to_bytes(record_pack.HEADER, "little") + body)

    loaded = counting_loads(monkeypatch)
    (out / "index.html").unlink()
    assert main(args) == 0
    assert loaded == [damaged_key]  # that photo's entry alone, and no photo computed again
    assert {p: p.read_bytes() for p in out.rglob("*.html")} == pages


def test_the_layout_names_every_stored_field():
    names = [f.name for f in dataclasses.fields(PhotoRecord) if f.metadata.get("stored", True)]
    assert all(repr(name) in record_pack.layout() for name in names)
