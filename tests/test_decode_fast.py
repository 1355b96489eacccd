"""--decode fast: large JPEGs decoded at a reduced DCT scale stay within 2 grey levels of the full
decode, upright and in the right colours, whatever the JPEG's kind."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from reportgen.decoding.decode import FAST_MARGIN, open_rgb
from reportgen.decoding.preprocess import RESIZE_SIZE, crop_for_model

from .conftest import SAMPLE_PHOTOS, run_cli

BOUND = 2  # grey levels, as the README states
SIZE = (2800, 2100)  # short side over 2 x 4 x 256: reduced once, to 1400x1050
REDUCE_TO = RESIZE_SIZE * FAST_MARGIN


def photo(mode: str = "RGB") -> Image.Image:
    """A large, natural-looking picture: a sample photo upscaled, with mild noise."""
    rng = np.random.default_rng(0)
    big = Image.open(SAMPLE_PHOTOS[1]).convert("RGB").resize(SIZE, Image.Resampling.BICUBIC)
    noisy = np.asarray(big, dtype=np.float32) + rng.normal(0, 3, (SIZE[1], SIZE[0], 3))
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return image.convert(mode)


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **options)
    return buffer.getvalue()


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(image, exif=exif.tobytes())


def model_input(data: bytes, reduce_to: int | None) -> tuple[np.ndarray, tuple[int, int], bool]:
    decoded = open_rgb(data, reduce_to=reduce_to)
    reduced = max(decoded.image.size) < max(decoded.width, decoded.height)
    pixels = np.asarray(crop_for_model(decoded.image, decoded.turn)).astype(np.int16)
    return pixels, (decoded.width, decoded.height), reduced


@pytest.fixture(scope="module")
def rgb() -> Image.Image:
    return photo()


KINDS = {
    "baseline 4:2:0": lambda im: jpeg(im, subsampling=2),
    "baseline 4:4:4": lambda im: jpeg(im, subsampling=0),
    "progressive": lambda im: jpeg(im, progressive=True),
    "greyscale": lambda im: jpeg(im.convert("L")),
    "CMYK": lambda im: jpeg(im.convert("CMYK")),
    **{f"EXIF orientation {o}": (lambda im, o=o: with_orientation(im, o)) for o in range(1, 9)},
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fast_stays_within_the_bound_of_exact(rgb, kind):
    data = KINDS[kind](rgb)
    exact, exact_size, exact_reduced = model_input(data, None)
    fast, fast_size, fast_reduced = model_input(data, REDUCE_TO)
    assert fast_reduced and not exact_reduced  # fast did decode fewer pixels
    assert fast_size == exact_size  # the photo's own size, upright, either way
    assert np.abs(fast - exact).max() <= BOUND, kind


T = Image.Transpose
# For each EXIF orientation, the turn whose result that orientation makes upright again.
UNDO = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
        6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}  # fmt: skip


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_turns_photos_upright(rgb, orientation):
    """The crop matches the upright picture, not just exact's (which could share a mistake)."""
    upright = np.asarray(crop_for_model(rgb)).astype(np.int16)
    # What a phone stores for this orientation: the picture turned back the other way.
    undo = UNDO[orientation]
    stored = rgb.transpose(undo) if undo is not None else rgb
    fast, size, _ = model_input(with_orientation(stored, orientation), REDUCE_TO)
    assert size == SIZE
    assert np.abs(fast - upright).mean() < 2.5  # JPEG's own loss, not a turned picture's


def test_colours_survive_fast_decoding(rgb):
    red = Image.new("RGB", SIZE, (200, 30, 40))
    for data in (jpeg(red), jpeg(red.convert("CMYK"))):
        fast, _, reduced = model_input(data, REDUCE_TO)
        assert reduced
        assert np.abs(fast.mean(axis=(0, 1)) - (200, 30, 40)).max() < 3


def test_other_formats_and_small_jpegs_take_the_exact_path(rgb, tmp_path):
    small = rgb.resize((1600, 1200))
    for data in (jpeg(small), _png(rgb)):
        exact, _, _ = model_input(data, None)
        fast, _, reduced = model_input(data, REDUCE_TO)
        assert not reduced and np.array_equal(fast, exact)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_the_decode_mode_is_recorded_and_part_of_the_cache_key(tmp_path, rgb, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "phone.jpg").write_bytes(with_orientation(rgb, 6))
    out = tmp_path / "site"
    args = ("build", str(src), "--out", str(out), "--weights", "random", "--workers", "0")
    assert run_cli(*args) == 0
    data = json.loads((out / "predictions.json").read_text())
    assert data["model"]["decode"] == "fast"
    assert "<code>fast</code>" in (out / "model.html").read_text()
    assert data["images"][0]["source"] == "phone.jpg"
    page = (out / data["images"][0]["page"]).read_text()
    assert "2100×2800 pixels" in page  # upright, at its own size
    capsys.readouterr()
    assert run_cli(*args, "--decode", "exact") == 0
    assert re.search(r"\(1 computed on \w+, 0 from the cache\)", capsys.readouterr().err)
    assert json.loads((out / "predictions.json").read_text())["model"]["decode"] == "exact"
    assert "<code>exact</code>" in (out / "model.html").read_text()
