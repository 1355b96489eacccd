"""HEIF photos (iPhones' .heic) through the optional pillow-heif plugin, and without it."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from reportgen.api import build_site
from reportgen.decoding import heif
from reportgen.decoding.decode import PluginMissing, UnreadableImage, open_rgb

from .conftest import REPO, SAMPLE_PHOTOS, run_cli
from .test_predictions import reference_top5

CAT = REPO / "inputs" / "chelsea.jpg"
ORIENTATION = 0x0112
MISSING = "a HEIF photo: reading HEIF needs the pillow-heif plugin (pip install 'reportgen[heif]')"


def phone_heic(path: Path, source: Path = CAT) -> Image.Image:
    """Save ``source`` as an iPhone does when held upright: the picture stored on its side, with
    EXIF orientation 6 (pillow-heif writes it as the file's rotation). The upright picture."""
    upright = Image.open(source).convert("RGB")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    # Through pillow-heif itself: this process's Pillow is left to reportgen to equip.
    pillow_heif.from_pillow(stored).save(path, exif=exif.tobytes(), quality=95)
    return upright


def without_the_opener() -> None:
    """Pillow as a fresh process has it: without the HEIF opener, and reportgen's record of
    having registered it forgotten. (Pillow's lists are changed in place: it adds its own plugins
    to them as it first needs them.)"""
    Image.init()
    Image.ID[:] = [i for i in Image.ID if i != heif.FORMAT]
    Image.OPEN.pop(heif.FORMAT, None)
    heif.plugin.cache_clear()


@pytest.fixture(autouse=True)
def pillow_as_installed() -> Iterator[None]:
    """Each test starts without the HEIF opener (which an earlier test's build registered), so
    it sees reportgen register it, or not."""
    without_the_opener()
    yield
    heif.plugin.cache_clear()  # registered again by the next build that meets a HEIF photo


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    Image.open(SAMPLE_PHOTOS[0]).convert("RGB").save(src / "a.jpg", quality=95)
    phone_heic(src / "IMG_0001.HEIC")
    return src


def build(src: Path, out: Path, *more: str) -> int:
    return run_cli("build", str(src), "--out", str(out), "--weights", "random", *more)


def test_a_heic_photo_is_read_upright_and_predicted_as_torchvision_does(
    folder, tmp_path, weights_file, capsys
):
    out = tmp_path / "site"
    assert run_cli("build", str(folder), "--out", str(out), "--weights", str(weights_file)) == 0
    assert "skipped" not in capsys.readouterr().err
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    expected = reference_top5(weights_file, sorted(folder.iterdir()))
    assert [img["source"] for img in data["images"]] == ["IMG_0001.HEIC", "a.jpg"]
    for img in data["images"]:
        want = expected[img["source"]]
        assert [t["index"] for t in img["top5"]] == [i for i, _ in want]
        for got, (_, p) in zip(img["top5"], want, strict=True):
            assert got["probability"] == pytest.approx(p, abs=1e-5)
    heic = data["images"][0]
    page = (out / heic["page"]).read_text(encoding="utf-8")
    assert "451×300 pixels" in page  # chelsea's own size, upright

    # Upright: the photo as decoded is the cat as it was before the phone turned it (lossy, so
    # near), not the stored picture turned once more.
    upright = np.asarray(Image.open(CAT).convert("RGB"), dtype=np.int16)
    decoded = open_rgb(folder / "IMG_0001.HEIC")
    assert (decoded.width, decoded.height) == (451, 300)
    assert np.abs(np.asarray(decoded.image, dtype=np.int16) - upright).mean() < 4


def test_without_the_plugin_heif_is_skipped_with_the_command_that_adds_it(
    folder, tmp_path, monkeypatch, capsys
):
    """Without pillow-heif: a .heic is skipped unread (a rebuild has nothing to do), and a HEIF
    named .jpg is left out once its bytes are seen; each says what to install. Neither verdict is
    kept, so once the plugin is there the next build reads both, the JPEG from the cache."""
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as where it is not installed
    out = tmp_path / "site"
    assert build(folder, out) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"reportgen: skipped IMG_0001.HEIC: {MISSING}"
    assert "1 photo page" in lines[-1] and "1 file skipped" in lines[-1]
    again = build_site(folder, out, weights="random")
    assert set(again.timings) == {"discover"}  # the last build's verdict stands: nothing to do
    assert [(s.source, s.reason) for s in again.skipped] == [("IMG_0001.HEIC", MISSING)]

    phone_heic(folder / "b.jpg", SAMPLE_PHOTOS[1])
    assert build(folder, out) == 0
    assert f"reportgen: skipped b.jpg: {MISSING}" in capsys.readouterr().err.splitlines()

    monkeypatch.undo()
    heif.plugin.cache_clear()
    assert build(folder, out) == 0
    assert re.search(r"\(2 computed on \w+, 1 from the cache\)", capsys.readouterr().err)
    data = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert [img["source"] for img in data["images"]] == ["IMG_0001.HEIC", "a.jpg", "b.jpg"]
    assert data["skipped"] == []


def test_a_new_plugin_version_recomputes_the_heif_photos_alone(
    folder, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "site"
    assert build(folder, out) == 0
    capsys.readouterr()
    assert build(folder, out) == 0
    assert "all from the cache" in capsys.readouterr().err

    monkeypatch.setattr(pillow_heif, "__version__", "0.0.1-older")
    heif.plugin.cache_clear()
    assert build(folder, out) == 0
    assert re.search(r"\(1 computed on \w+, 1 from the cache\)", capsys.readouterr().err)


def test_heif_bytes_are_known_whatever_the_name(folder, monkeypatch):
    data = (folder / "IMG_0001.HEIC").read_bytes()
    assert heif.looks_like_heif(data)
    assert not heif.looks_like_heif((folder / "a.jpg").read_bytes())
    assert heif.is_heif_name("x/IMG_0001.HEIC") and heif.is_heif_name("y.heif")
    assert not heif.is_heif_name("a.jpg") and not heif.is_heif_name(".heic")
    with pytest.raises(UnreadableImage, match="^truncated or corrupt HEIF data$"):
        open_rgb(data[: len(data) // 2])
    without_the_opener()
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as where it is not installed
    with pytest.raises(PluginMissing, match=re.escape(MISSING)):
        open_rgb(data)


def test_a_heif_of_several_images_gives_its_primary_one(tmp_path):
    """A HEIF file may hold several images and name any of them primary (what a viewer shows):
    that one is the photo, not the first stored."""
    first = Image.open(SAMPLE_PHOTOS[0]).convert("RGB").resize((200, 150))
    primary = Image.open(CAT).convert("RGB").resize((200, 150))
    both = pillow_heif.from_pillow(first)
    both.add_from_pillow(primary)
    path = tmp_path / "burst.heic"
    both.save(path, quality=95, primary_index=1)
    decoded = open_rgb(path)
    assert decoded.frames == 2
    got = np.asarray(decoded.image, dtype=np.int16)
    assert np.abs(got - np.asarray(primary, dtype=np.int16)).mean() < 4
