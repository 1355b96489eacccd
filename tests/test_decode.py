"""Every kind of photo becomes the RGB picture a person would expect."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, features

from reportgen.decoding.decode import UnreadableImage, open_rgb
from reportgen.discover import discover


def decoded_pixel(img: Image.Image, tmp_path, name: str, **save) -> tuple[int, int, int]:
    path = tmp_path / name
    img.save(path, **save)
    out = open_rgb(path)
    assert out.image.mode == "RGB"
    return out.image.getpixel((0, 0))


def test_alpha_is_composited_on_white(tmp_path):
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decoded_pixel(transparent, tmp_path, "a.png") == (255, 255, 255)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert decoded_pixel(half, tmp_path, "b.png") == (127, 127, 127)
    la = Image.new("LA", (4, 4), (0, 0))
    assert decoded_pixel(la, tmp_path, "c.png") == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert decoded_pixel(img, tmp_path, "p.png", transparency=1) == (255, 255, 255)
    assert decoded_pixel(img, tmp_path, "q.png") == (10, 200, 30)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    img = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert img.mode.startswith("I;16")
    assert decoded_pixel(img, tmp_path, "g16.png") == (128, 128, 128)


def test_cmyk_one_bit_and_grey(tmp_path):
    assert decoded_pixel(
        Image.new("CMYK", (4, 4), (0, 255, 255, 0)), tmp_path, "c.jpg"
    ) == pytest.approx((255, 0, 0), abs=3)
    assert decoded_pixel(Image.new("1", (4, 4), 1), tmp_path, "one.png") == (255, 255, 255)
    assert decoded_pixel(Image.new("L", (4, 4), 77), tmp_path, "l.png") == (77, 77, 77)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    out = open_rgb(path)
    assert (out.width, out.height) == (20, 40)


def test_first_frame_of_an_animation(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = open_rgb(path)
    assert out.frames == 2
    assert out.image.getpixel((0, 0))[0] > 200


def test_max_pixels_refuses_large_images(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(
        UnreadableImage, match="too large: 100x100 pixels is over the limit of 5000"
    ):
        open_rgb(path, max_pixels=5000)


def test_any_parser_error_is_a_one_line_reason(tmp_path, monkeypatch):
    """Pillow's parsers raise many types on hostile bytes (fuzzing found TypeError and KeyError
    in its TIFF plugin): each becomes this file's one-line reason, never a crash."""
    path = tmp_path / "odd.png"
    Image.new("RGB", (8, 8), "red").save(path)

    def broken(image, **options):
        raise KeyError(274)

    monkeypatch.setattr("reportgen.decoding.decode.ImageOps.exif_transpose", broken)
    with pytest.raises(UnreadableImage, match=r"^corrupt image data \(KeyError: 274\)$"):
        open_rgb(path)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow was built without AVIF")
def test_avif_and_jfif_files_are_found_and_read(tmp_path):
    """Named as images too: .avif (Pillow reads it, turned by its EXIF orientation as any other)
    and .jfif (a JPEG, as Windows names web downloads)."""
    wide = Image.new("RGB", (40, 20), (200, 30, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    wide.save(tmp_path / "a.avif", exif=exif.tobytes(), quality=90)
    wide.save(tmp_path / "b.jfif", format="JPEG")
    sources, skipped = discover(tmp_path)
    assert [s.rel for s in sources] == ["a.avif", "b.jfif"] and skipped == []
    turned = open_rgb(tmp_path / "a.avif")
    assert (turned.width, turned.height) == (20, 40) == turned.image.size
    assert turned.image.getpixel((10, 20)) == pytest.approx((200, 30, 40), abs=8)
    assert open_rgb(tmp_path / "b.jfif").image.size == (40, 20)
