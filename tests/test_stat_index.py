"""Rebuilds read only the photos that changed: an unchanged file's recorded hash is reused by its
stamp (size, mtime in ns, inode), as git's index does."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import reportgen
import reportgen.discover
from reportgen import similar
from reportgen.build import SIMILAR, STAT_INDEX

from .conftest import SAMPLE_PHOTOS, sample_folder, state_of


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
    sample_folder(folder, count)
    past = time.time() - 60
    for i in range(count):
        os.utime(folder / f"p{i}.jpg", (past, past))
    return folder


def build(src: Path, out: Path, **options):
    return reportgen.build_site(src, out, weights="random", workers=0, **options)


def test_a_rebuild_reads_only_the_files_that_changed(tmp_path, hashed):
    src, out = settled(tmp_path / "in", 4), tmp_path / "site"
    first = build(src, out)
    assert sorted(hashed) == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"]
    assert (state_of(out) / STAT_INDEX).is_file()

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
    (state_of(out) / STAT_INDEX).write_bytes(b"not a database")
    hashed.clear()
    result = build(src, out)
    assert len(hashed) == 2 and result.computed == 0 and len(result.photos) == 2


def nearest_lists(out: Path) -> dict[str, tuple[str, ...]]:
    """Each photo's nearest photos as the last build found them, by source."""
    found, _ = similar.load(state_of(out) / SIMILAR)
    return {s: tuple(found.sources[j] for j, _ in found.of(i)) for i, s in enumerate(found.sources)}


def _versions(out: Path) -> dict[str, tuple[int, int]]:
    """Each site file's inode and mtime: a rewritten file gets a new one or the other."""
    return {
        p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".reportgen" not in p.parts
    }


def test_a_rebuild_rewrites_only_the_files_whose_bytes_change(tmp_path):
    src, out = settled(tmp_path / "in", 6), tmp_path / "site"
    build(src, out, per_page=3)
    before = _versions(out)
    state = {name: (state_of(out) / name).stat().st_mtime_ns
             for name in ("manifest.json", STAT_INDEX)}  # fmt: skip

    build(src, out, per_page=3)  # nothing changed: nothing is written
    assert _versions(out) == before
    for name, mtime in state.items():
        assert (state_of(out) / name).stat().st_mtime_ns == mtime, name

    # New bytes (pictures are named by content), sorting last: index page 3 of 3.
    lists = nearest_lists(out)
    Image.open(SAMPLE_PHOTOS[0]).transpose(Image.Transpose.ROTATE_90).save(src / "p9.jpg")
    result = build(src, out, per_page=3)
    after = _versions(out)
    rewritten = {rel for rel in after if before.get(rel) != after[rel]}
    new = next(p for p in result.photos if p.source == "p9.jpg")
    neighbour = next(p for p in result.photos if p.source == "p5.jpg")
    assert {"index-3.html", new.crop, new.conv1} <= rewritten
    # Photo pages: the new one, its neighbour's (a new next link), and those whose nearest photos
    # changed (the new photo entered their lists); no other.
    alike = {p.page for p in result.photos if lists.get(p.source) != nearest_lists(out)[p.source]}
    assert {r for r in rewritten if r.startswith("photos/")} == {new.page, neighbour.page} | alike
    unchanged_photo = next(p for p in result.photos if p.source == "p0.jpg")
    assert unchanged_photo.crop not in rewritten and unchanged_photo.conv1 not in rewritten
    assert "assets/style.css" not in rewritten


@pytest.fixture
def rendered(monkeypatch) -> list[str]:
    """The pages the site's writer renders, by path, as builds go."""
    from reportgen.site.pages import PageWriter

    calls: list[str] = []
    real = PageWriter.render

    def counting(self, template: str, path: str, **context):
        calls.append(path)
        return real(self, template, path, **context)

    monkeypatch.setattr(PageWriter, "render", counting)
    return calls


def test_a_rebuild_renders_only_the_pages_whose_content_changed(tmp_path, rendered):
    src, out = settled(tmp_path / "in", 6), tmp_path / "site"
    first = build(src, out, per_page=3)
    photo_pages = {p.page for p in first.photos}
    assert photo_pages | {"index.html", "index-2.html"} <= set(rendered)

    rendered.clear()
    build(src, out, per_page=3)  # nothing changed: no photo or index page is rendered
    assert not set(rendered) & (photo_pages | {"index.html", "index-2.html"})

    rendered.clear()
    lists = nearest_lists(out)
    Image.open(SAMPLE_PHOTOS[1]).transpose(Image.Transpose.ROTATE_90).save(src / "p9.jpg")
    result = build(src, out, per_page=3)
    new = next(p for p in result.photos if p.source == "p9.jpg")
    before = next(p for p in result.photos if p.source == "p5.jpg")
    # The new page, its neighbour's (a new next link), the index page it lands on, and the pages
    # whose nearest photos changed.
    alike = {p.page for p in result.photos if lists.get(p.source) != nearest_lists(out)[p.source]}
    assert (
        set(rendered) & ({p.page for p in result.photos} | {"index-3.html"})
        == {
            new.page,
            before.page,
            "index-3.html",
        }
        | alike
    )

    rendered.clear()
    (out / before.page).write_text("edited by hand")  # a page not as the last build left it
    build(src, out, per_page=3)
    assert before.page in rendered and "edited" not in (out / before.page).read_text()


def test_a_photo_added_last_leaves_the_index_pages_it_does_not_land_on(tmp_path, rendered):
    src, out = settled(tmp_path / "in", 7), tmp_path / "site"
    build(src, out, per_page=3)  # pages of 3, 3 and 1 photos
    Image.open(SAMPLE_PHOTOS[1]).transpose(Image.Transpose.ROTATE_90).save(src / "p9.jpg")
    rendered.clear()
    build(src, out, per_page=3)
    # The page it lands on, and the front page (which counts the folder); not page 2.
    assert {r for r in rendered if r.startswith("index")} == {"index.html", "index-3.html"}
    front, middle = (out / "index.html").read_text(), (out / "index-2.html").read_text()
    assert "8 photos run through AlexNet" in front
    assert "Page 2 of 3: 3 photos, from p3.<wbr>jpg to p5.<wbr>jpg" in middle
    assert "photos run through" not in middle


def test_a_photo_added_first_leaves_the_other_index_pages_and_their_photos(tmp_path, rendered):
    src, out = settled(tmp_path / "in", 7), tmp_path / "site"
    build(src, out, per_page=3)  # pages of 3, 3 and 1 photos
    lists = nearest_lists(out)
    Image.open(SAMPLE_PHOTOS[1]).transpose(Image.Transpose.ROTATE_90).save(src / "a.jpg")
    rendered.clear()
    result = build(src, out, per_page=3)
    # Page 1 grows to 4 photos; pages 2 and 3, and the "All photos" links of the photos on them,
    # stay as they were (cut anew, every page and the photos at their edges would change).
    assert {r for r in rendered if r.startswith("index")} == {"index.html"}
    by_source = {p.source: p for p in result.photos}
    alike = {p.page for p in result.photos if lists.get(p.source) != nearest_lists(out)[p.source]}
    pages = {p.page for p in result.photos}
    assert set(rendered) & pages == {by_source["a.jpg"].page, by_source["p0.jpg"].page} | alike
    assert (out / "index.html").read_text().count('<span class="name">') == 4
    # p2.jpg, last on page 1, stays there (cut anew, it would move to page 2).
    assert 'href="../index.html" rel="up"' in (out / by_source["p2.jpg"].page).read_text()


def test_the_output_folder_holds_only_the_site_and_a_small_marker(tmp_path):
    src, out = settled(tmp_path / "in", 2), tmp_path / "site"
    result = build(src, out)
    own = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert own == [".nojekyll", ".reportgen-site"]
    assert (out / ".reportgen-site").stat().st_size < 100
    published = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert result.site_bytes == published
    state = state_of(out)
    assert (state / "manifest.json").is_file() and (state / "cache").is_dir()
    assert not state.is_relative_to(out)
    assert len(list((state / "cache" / "pictures").glob("*/*.jpg"))) == 4


def test_a_site_from_an_older_version_is_taken_over_and_its_state_removed(tmp_path):
    """Versions before 0.2 kept their manifest and cache in OUT/.reportgen (and published them):
    the first build takes the site over as its own and removes that folder."""
    src, out = settled(tmp_path / "in", 2), tmp_path / "site"
    build(src, out)
    legacy = out / ".reportgen"
    legacy.mkdir()
    shutil.move(state_of(out) / "manifest.json", legacy / "manifest.json")
    (out / ".reportgen-site").unlink()
    (legacy / "cache").mkdir()
    (out / "photos" / "gone.html").write_text("a page of a photo since removed")
    manifest = (legacy / "manifest.json").read_text()
    (legacy / "manifest.json").write_text(
        manifest.replace('"files": {', '"files": {\n"photos/gone.html": ["", 0, 0],', 1)
    )

    build(src, out)  # no --force needed: the old manifest says these files are reportgen's
    assert not legacy.exists() and (out / ".reportgen-site").is_file()
    assert not (out / "photos" / "gone.html").exists()


def test_a_marked_site_whose_state_is_gone_is_rebuilt_without_deleting_anything(tmp_path):
    """A site folder that was moved, or whose state was cleared with the user's cache, is still
    a reportgen site (its marker says so): its pages are replaced, and nothing else is deleted."""
    src, out = settled(tmp_path / "in", 2), tmp_path / "site"
    build(src, out)
    (out / "CNAME").write_text("photos.example.org\n")
    shutil.rmtree(state_of(out))
    result = build(src, out)
    assert result.computed == 2 and (out / "CNAME").read_text() == "photos.example.org\n"
    assert (out / "index.html").is_file()


def test_a_rebuild_with_nothing_changed_reads_no_record_and_says_the_same(
    tmp_path, monkeypatch, caplog, rendered
):
    import reportgen.cache
    import reportgen.record_pack

    src, out = settled(tmp_path / "in", 3), tmp_path / "site"
    (src / "broken.jpg").write_bytes(b"not a photo")
    first = build(src, out)
    loads: list[str] = []
    real = reportgen.cache.ResultCache.load
    monkeypatch.setattr(
        reportgen.cache.ResultCache, "load", lambda self, key: loads.append(key) or real(self, key)
    )
    packs: list[int] = []
    read_pack = reportgen.record_pack.read_raw
    monkeypatch.setattr(
        reportgen.record_pack, "read_raw", lambda *args: packs.append(1) or read_pack(*args)
    )
    caplog.clear()
    rendered.clear()
    again = build(src, out)
    assert loads == [] and packs == [] and again.computed == 0 and again.reused == 3
    assert "summary.html" not in rendered
    assert again.skipped == first.skipped and again.site_bytes == first.site_bytes
    assert "skipped broken.jpg: " in caplog.text  # said again, as every build says it
    # The photos are there for a caller who looks (read from the site's record pack only then).
    assert [p.top5 for p in again.photos] == [p.top5 for p in first.photos]
    assert [p.page for p in again.photos] == [p.page for p in first.photos]
    assert len(packs) == 1 and loads == []


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda src, out: {"per_page": 2}, id="an option"),
        pytest.param(lambda src, out: (src / "labels.csv").write_text("source,label\n") and {},
                     id="labels.csv"),
        pytest.param(lambda src, out: next((out / "photos").glob("*.html")).unlink() or {},
                     id="a page removed"),
        pytest.param(lambda src, out: (src / "p0.jpg").unlink() or {}, id="a photo removed"),
    ],
)  # fmt: skip
def test_anything_a_build_depends_on_makes_it_build(tmp_path, rendered, change):
    src, out = settled(tmp_path / "in", 3), tmp_path / "site"
    build(src, out)
    rendered.clear()
    options = change(src, out)
    build(src, out, **options)
    assert "summary.html" in rendered  # rendered by every build that has work, by no other


@given(st.text(alphabet=st.sampled_from("a.J PgÉé/_-"), min_size=1, max_size=12))
def test_a_file_name_s_extension_is_as_pathlib_reads_it(name):
    from reportgen.files import extension

    if "/" not in name and name not in (".", ".."):
        assert extension(name) == Path(name).suffix.lower()


def test_photos_in_nested_folders_get_their_relative_paths(tmp_path):
    src = tmp_path / "in"
    for rel in ("a/b/c.JPG", "a/d.jpeg", "e.png", "a/.hidden/f.jpg", "a/g.txt", "h..jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(SAMPLE_PHOTOS[0].read_bytes())
    sources, _ = reportgen.discover.discover(src)
    assert [s.rel for s in sources] == ["a/b/c.JPG", "a/d.jpeg", "e.png", "h..jpg"]
    assert all(s.path == src.resolve() / s.rel for s in sources)
