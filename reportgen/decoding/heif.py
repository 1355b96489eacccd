"""HEIF photos (``.heic``, what iPhones save by default), read through the optional pillow-heif
plugin: ``pip install 'reportgen[heif]'``.

Pillow cannot read HEIF by itself. With the plugin installed, a HEIF photo is decoded as any other
(its primary image, turned upright by the file's own transform: pillow-heif applies it and resets
the EXIF orientation, so nothing is turned twice). Without it, each HEIF file found is named as
skipped at once, with the command that adds the plugin, and is neither read nor hashed.

A HEIF photo's results depend on the plugin's decoder as a JPEG's depend on Pillow's, so its cache
key names the plugin's version (:func:`key_part`): upgrading the plugin recomputes the HEIF
photos, and only them.
"""

from __future__ import annotations

import functools

from ..files import extension

EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
FORMAT = "HEIF"
"""Pillow's name for the format, once the plugin is registered."""
INSTALL = "pip install 'reportgen[heif]'"
MISSING = f"a HEIF photo: reading HEIF needs the pillow-heif plugin ({INSTALL})"
# ISO base media files open with a 'ftyp' box; these major brands are HEIF still images and
# sequences (AVIF's 'avif' and 'avis' are Pillow's own).
_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


@functools.cache
def plugin() -> str | None:
    """The version of pillow-heif, registered with Pillow on the first call; None where it is
    not installed (or cannot be imported)."""
    try:
        import pillow_heif
    except ImportError:
        return None
    pillow_heif.register_heif_opener()
    return str(pillow_heif.__version__)


def is_heif_name(name: str) -> bool:
    """Whether a file name has a HEIF extension (any case)."""
    return extension(name) in EXTENSIONS


def looks_like_heif(data: bytes) -> bool:
    """Whether a file's first bytes are a HEIF file's, whatever its name."""
    return data[4:8] == b"ftyp" and data[8:12] in _BRANDS


def key_part(name: str) -> str:
    """What a photo named ``name`` adds to its cache key: the plugin's version for a HEIF file,
    nothing for any other (so their keys are as they were before HEIF was read)."""
    return f":pillow-heif {plugin()}" if is_heif_name(name) else ""
