"""Progress bars for the stages of a build that take a while on a large folder, on stderr (the
command line shows them at a terminal, unless --quiet)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

SHOWN_AFTER = 1.0
"""Seconds a stage runs before its bar appears: a build of a few photos shows only the model's
and the pages' bars, a large folder a bar for each stage it would otherwise wait on in silence."""
UNCOUNTED = "{l_bar}{bar}| [{elapsed}<{remaining}]"
"""A bar's look without its count: the share done, the time taken and the time left."""


def bar(
    desc: str,
    *,
    progress: bool,
    total: int | None = None,
    unit: str = "photo",
    iterable: Iterable[Any] | None = None,
    counted: bool = True,
    at_once: bool = False,
) -> tqdm:
    """A bar for a stage (``progress`` False: one that shows nothing); one not ``counted`` shows
    its share done and the time, not its count, which means nothing to a user (passes over the
    photos, say). It appears after :data:`SHOWN_AFTER`, or ``at_once`` (the model's run and the
    pages, which every build shows)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not progress,
        delay=0 if at_once else SHOWN_AFTER,
        bar_format=None if counted else UNCOUNTED,
    )
