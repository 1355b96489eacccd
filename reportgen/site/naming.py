"""Safe, unique, stable names for everything the site contains.

Names never contain anything from a file name but lower-case ASCII letters, digits and dashes,
plus a short hash that keeps them unique (the same name in two subfolders, names that differ only in
characters we drop).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SLUG_MAX = 40
PAGES_DIR = "photos"
PICTURES_DIR = "img"
KERNELS_PICTURE = f"{PICTURES_DIR}/conv1-kernels.png"
PICTURE_KEY = 20
"""Characters of a result's key that name its pictures."""


def slug(text: str) -> str:
    """ASCII lower-case words joined by dashes; ``photo`` when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return words[:_SLUG_MAX].rstrip("-") or "photo"


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def photo_page(source: str) -> str:
    """Site-relative URL of the page for the photo at ``source`` (relative to the input)."""
    stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{PAGES_DIR}/{slug(stem)}-{short_hash(source)}.html"


def photo_picture(key: str, kind: str) -> str:
    """Site-relative URL of a result's ``kind`` picture ('input', 'conv1', …); ``key`` names the
    result."""
    return f"{PICTURES_DIR}/{key[:PICTURE_KEY]}{picture_suffix(kind)}"


def picture_suffix(kind: str) -> str:
    """What follows the key in the name of a result's ``kind`` picture."""
    return f"-{kind}.jpg"


def summary_chart(name: str) -> str:
    """Site-relative URL of one of the summary page's charts."""
    return f"{PICTURES_DIR}/summary-{name}.png"


def index_page(number: int) -> str:
    """Site-relative URL of index page ``number`` (1-based)."""
    return "index.html" if number == 1 else f"index-{number}.html"
