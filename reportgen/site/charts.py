"""The summary page's charts: drawn with matplotlib once per build (never per photo).

Charts are cached by a hash of the numbers they show, so a rebuild that changes nothing does not
even import matplotlib.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from collections.abc import Sequence

from ..records import PhotoRecord
from .folder import TRANSLATED, FolderSummary, margin

log = logging.getLogger("reportgen")

CHART_NAMES = ("classes", "confidence", "margin")
TOP_CLASSES = 15


def chart_key(photos: Sequence[PhotoRecord], summary: FolderSummary) -> str:
    """Hash of everything the charts show."""
    data = {
        "classes": summary.class_counts[:TOP_CLASSES],
        "confidence": [p.top5[0].probability for p in photos],
        "margin": [margin(p) for p in photos],
    }
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


def figure_class() -> type:
    """matplotlib's ``Figure``, drawn by its Agg backend: matplotlib imported (0.35 s, the
    backend's module too, which a figure's first ``savefig`` imports)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.backends.backend_agg  # noqa: F401
    from matplotlib.figure import Figure

    return Figure


def draw(photos: Sequence[PhotoRecord], summary: FolderSummary) -> dict[str, bytes]:
    """PNG bytes of each chart, by name (no metadata, so the same data gives the same bytes)."""
    Figure = figure_class()  # noqa: N806 (a class)
    charts = {}
    classes = summary.class_counts[:TOP_CLASSES][::-1]
    fig = Figure(figsize=(6, 0.3 * len(classes) + 1.2), dpi=100)
    ax = fig.subplots()
    labels = _drawable([label for label, _ in classes])
    ax.barh(labels, [count for _, count in classes], color="#2f6fe4")
    ax.set_xlabel("photos predicted as this class (top-1)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    with warnings.catch_warnings(record=True) as missing:
        warnings.filterwarnings("always", message="Glyph .* missing from font")
        charts["classes"] = _png(fig)
    if missing:
        log.warning(
            "the summary's classes chart has no font here for some characters of the class "
            "names (drawn as boxes); the list below the chart shows them"
        )
    for name, values, label in (
        ("confidence", [p.top5[0].probability for p in photos], "top-1 probability"),
        ("margin", [margin(p) for p in photos], "top-1 minus top-2 probability"),
    ):
        fig = Figure(figsize=(6, 2.6), dpi=100)
        ax = fig.subplots()
        ax.hist(values, bins=20, range=(0.0, 1.0), color="#2f6fe4")
        ax.set_xlabel(label)
        ax.set_ylabel("photos")
        charts[name] = _png(fig)
    return charts


def _drawable(labels: list[str]) -> list[str]:
    """Each label as the chart can draw it: a class named "name (English name)" (--labels in
    another language) by its English name when the chart's font lacks the name's characters."""
    from matplotlib.font_manager import FontProperties, findfont, get_font

    font = get_font(findfont(FontProperties()))

    def drawable(text: str) -> bool:
        return all(font.get_char_index(ord(c)) for c in text if not c.isspace())

    out = []
    for label in labels:
        both = TRANSLATED.fullmatch(label)
        out.append(both.group(2) if both and not drawable(label) else label)
    return out


def _png(fig) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
