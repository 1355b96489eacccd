"""Which photos each index page lists: pages that stay put as the folder grows.

Cut anew at every build, index pages of ``per_page`` photos would all shift when a photo sorts
ahead of the rest: every index page, and the "All photos" link of every photo page at a page's
edge, would change (about 1,700 pages at 20,000 photos, for 10 photos added). Instead, a build
keeps the last build's cuts, each remembered as the file name that began a page, as a B-tree
keeps its keys: a photo added lands on the page whose range holds its name, and only that page
changes. A page may so grow to twice ``per_page`` and shrink to half of it; past either, or when
``per_page`` changes, the pages are cut anew. Photos added after the last page fill it to
``per_page`` and then make new pages, as cutting anew would.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from pathlib import Path

from ..files import write_atomic

PAGES_FILE = "index-pages.json"
"""In the site's state folder: ``per_page`` and the name that begins each index page but the
first."""


def cut(count: int, per_page: int) -> list[int]:
    """Where each index page begins (positions, from 0), cutting ``count`` photos anew."""
    return list(range(0, count, per_page)) or [0]


def lay_out(sources: Sequence[str], per_page: int, state: Path, *, anew: bool = False) -> list[int]:
    """Where each index page begins in ``sources`` (the photos' names, sorted): the last
    build's pages, as kept in ``state``, where they still fit (unless ``anew``); cut anew else.
    What it chose is kept in ``state`` for the next build."""
    path = state / PAGES_FILE
    try:
        last = path.read_bytes()
    except OSError:
        last = b""
    kept = None if anew else _names(last, per_page)
    starts = _keep(sources, per_page, kept) if kept is not None else None
    if starts is None:
        starts = cut(len(sources), per_page)
    chosen = _encode(per_page, [sources[s] for s in starts[1:]])
    if chosen != last:
        write_atomic(path, chosen)
    return starts


def _keep(sources: Sequence[str], per_page: int, names: Sequence[str]) -> list[int] | None:
    """The pages beginning where ``names`` would sort, the last one filled to ``per_page`` and
    then followed by new ones; None when a page (but the last) would hold fewer than half of
    ``per_page`` photos or more than twice as many."""
    count = len(sources)
    starts = sorted({0, *(bisect.bisect_left(sources, name) for name in names)} - {count}) or [0]
    while count - starts[-1] > per_page:
        starts.append(starts[-1] + per_page)
    sizes = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    if any(not (per_page + 1) // 2 <= size <= 2 * per_page for size in sizes):
        return None
    return starts


def _names(kept: bytes, per_page: int) -> list[str] | None:
    """The names a build with the same ``per_page`` kept (the file's bytes, ``kept``); None
    when there are none (a first build, another ``per_page``, or a file this version cannot
    read)."""
    try:
        data = json.loads(kept)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("per_page") != per_page:
        return None
    names = data.get("starts")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def _encode(per_page: int, names: list[str]) -> bytes:
    return json.dumps({"per_page": per_page, "starts": names}, ensure_ascii=True).encode()
