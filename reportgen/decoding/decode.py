"""Reading any photo Pillow understands into an RGB image, or a one-line reason why not."""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..files import read_regular
from . import heif


class UnreadableImage(Exception):
    """The file cannot be used as a photo; ``str()`` is the one-line reason."""

    lasting = True
    """Whether the verdict holds for these bytes whatever is installed (kept in the cache)."""


class PluginMissing(UnreadableImage):
    """The photo needs a Pillow plugin that is not installed: the user can add it, so the verdict
    is not kept (the next build tries again)."""

    lasting = False


@dataclass
class Decoded:
    """A photo ready for the model: RGB, upright, first frame (a HEIF file's primary image)."""

    image: Image.Image
    width: int
    """The photo's own size, upright (not the size of a reduced ``image``)."""
    height: int
    frames: int
    turn: Image.Transpose | None = None
    """Still to be applied to ``image`` to make it upright: a reduced JPEG is turned after it is
    resized, a few thousand pixels instead of millions (:func:`preprocess.crop_for_model`)."""


DECODE_MODES = ("fast", "exact")
FAST_MARGIN = 4
"""``fast`` decodes a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) that keeps its short side at
least FAST_MARGIN times the short side the model's preprocessing resizes to. Chosen by
measurement (``benchmarks/bench_decode.py``): at 4x, the model's input stays within 2 grey levels
of the full decode on 12 MP phone photos; at 2x it did not."""


def open_rgb(
    photo: Path | bytes,
    *,
    max_pixels: int | None = None,
    allow_truncated: bool = False,
    reduce_to: int | None = None,
) -> Decoded:
    """Decode a photo (a file, or its bytes) to an upright 8-bit RGB image.

    EXIF orientation is applied; alpha is composited on white; 16- and 32-bit greys are scaled to
    8 bits rather than clipped; CMYK, palette, 1-bit and the rest go through Pillow's conversions.
    Only the first frame of an animation or multipage file is used (of a HEIF file, the image
    it names as primary). HEIF needs the pillow-heif plugin (:mod:`.heif`).

    With ``reduce_to``, a JPEG is decoded at the smallest DCT scale that keeps its short side at
    least ``reduce_to`` pixels (libjpeg's scaled decoding: a fraction of the work), and left as it
    is stored, with the turn that makes it upright in ``turn``; other formats, and JPEGs too small
    to reduce, are decoded whole and turned. ``width`` and ``height`` are always the photo's own
    size, upright.

    Raises:
        UnreadableImage: with a short reason (empty file, not an image, truncated, too large, ...).
            :class:`PluginMissing` for a HEIF file without the plugin that reads it.
        OSError: the file cannot be read (:class:`~reportgen.files.NotRegularFile` for a pipe,
            socket or device, which is never opened for reading).
    """
    data = read_regular(photo) if isinstance(photo, Path) else photo
    if not data:
        raise UnreadableImage("empty file")
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its limit; a bomb is a bomb. Its other warnings
            # (odd metadata it skipped) would reach the terminal from the workers unexplained.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _opened(data) as img:
                return _decode(img, limit, allow_truncated, reduce_to)
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(f"too large (decompression-bomb guard): {exc}") from None
    except OSError as exc:
        raise UnreadableImage(_os_reason(exc)) from None
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise UnreadableImage(f"corrupt image data ({_first_line(exc)})") from None
    except Exception as exc:
        # Pillow's parsers meet hostile bytes with many other exception types (the fuzz tests
        # found TypeError and KeyError in its TIFF plugin): each is this file's problem, named.
        raise UnreadableImage(
            f"corrupt image data ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _opened(data: bytes) -> Image.Image:
    """The photo's bytes opened by Pillow; a HEIF file through the plugin, registered only once
    one is met (a folder without HEIF never imports it)."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if not heif.looks_like_heif(data):
            raise
    if heif.FORMAT not in Image.OPEN and heif.plugin() is None:
        raise PluginMissing(heif.MISSING)
    try:
        return Image.open(io.BytesIO(data))  # with the plugin, if it was not there before
    except UnidentifiedImageError:
        raise UnreadableImage("truncated or corrupt HEIF data") from None


def _decode(
    img: Image.Image, limit: int | None, allow_truncated: bool, reduce_to: int | None
) -> Decoded:
    """The first frame (or primary image) of an opened image, upright and RGB (see
    :func:`open_rgb`)."""
    if limit is not None and img.width * img.height > limit:
        raise UnreadableImage(
            f"too large: {img.width}x{img.height} pixels is over the limit of {limit}"
        )
    frames = int(getattr(img, "n_frames", 1) or 1)
    if img.format != heif.FORMAT:  # a HEIF file opens at its primary image, not always the first
        img.seek(0)
    stored = img.size
    reduced = reduce_to is not None and img.format == "JPEG" and _reduce(img, reduce_to)
    _load(img, allow_truncated)
    if reduced:
        turn = _TURNS.get(img.getexif().get(ORIENTATION, 1))
        rgb = to_rgb(img)
        sideways = turn in SIDEWAYS
    else:
        # In place: for an upright photo, exif_transpose would otherwise copy every pixel (28 ms
        # for 12 MP, a sixth of a full decode), and for a turned one keep the unturned copy too.
        ImageOps.exif_transpose(img, in_place=True)
        turn, rgb = None, to_rgb(img)
        sideways = rgb.size != stored
    width, height = (stored[1], stored[0]) if sideways else stored
    return Decoded(image=rgb, width=width, height=height, frames=frames, turn=turn)


ORIENTATION = 0x0112
# EXIF orientation to the turn that makes the picture upright, as ImageOps.exif_transpose does.
_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIDEWAYS = {  # the turns that swap width and height
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
}


def _reduce(img: Image.Image, short_side: int) -> bool:
    """Ask libjpeg for the smallest DCT scale whose short side is still ``short_side`` or more;
    whether it reduces at all."""
    scale = short_side / min(img.size)
    if scale >= 0.5:  # not even one halving keeps the margin
        return False
    before = img.size
    img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
    return img.size != before


def _load(img: Image.Image, allow_truncated: bool) -> None:
    """Decode the pixels; a truncated file raises unless the user accepted those."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated
    try:
        img.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _os_reason(exc: OSError) -> str:
    text = str(exc)
    if "truncated" in text:
        return "truncated image data"
    if exc.strerror:
        return f"cannot be read ({exc.strerror})"
    return f"cannot be decoded ({text})"


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a person would expect to see it."""
    mode = img.mode
    if mode == "RGB":
        return img.copy() if img.readonly else img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img), mode), mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info or mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Scale a high-bit-depth grey image into 0..255 instead of clipping it."""
    data = array.astype(np.float64)
    if mode.startswith("I;16"):
        top = 65535.0
    else:
        peak = float(data.max()) if data.size else 0.0
        if mode == "F" and peak <= 1.0:
            top = 1.0
        elif peak <= 255:
            top = 255.0
        elif peak <= 65535:
            top = 65535.0
        else:
            top = peak
    scaled = np.clip(data, 0, None) / top * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
