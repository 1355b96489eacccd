"""Knowing, before any work, that the site is already what a build would write (as make does).

A build's output depends on the photos' bytes and places, the files that could not be read, the
true-class inputs, the weights and options, the templates and reportgen itself. After each build,
the site's state records a hash of all of that (:func:`state`), with what the build reported. A
rebuild whose hash is the same, into a site whose every file is still as that build left it, from a
cache whose entries are too (by size and mtime), has nothing to do: it loads no record and renders
nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .config import Config
from .files import write_changed
from .records import Skipped, Source
from .site.folder import LABELS_FILE
from .site.pages import templates_digest

log = logging.getLogger("reportgen")

LAST_BUILD = "last-build.json"
FORMAT = 1


@dataclass(frozen=True)
class LastBuild:
    """What the last complete build was made from, and what it reported."""

    state: str
    cache: str
    """:meth:`~reportgen.cache.ResultCache.stamps` of every photo's entry and pictures."""
    skipped: tuple[Skipped, ...]
    problems: tuple[str, ...]
    """Its warnings about the true classes (labels.csv lines, unknown class folders)."""


def state(
    config: Config,
    fingerprint: str,
    sources: Sequence[Source],
    unreadable: Sequence[Skipped],
    input_dir: Path,
) -> str:
    """A hash of everything a build's output depends on (``fingerprint``: the cache's, for the
    weights and the options that change results)."""
    digest = hashlib.sha256()
    shown = (config.per_page, config.lean, config.layers, config.normalize, config.decode)
    digest.update(repr((FORMAT, __version__, templates_digest(), fingerprint, shown)).encode())
    for source in sources:
        digest.update(f"\n{source.rel}\0{source.sha256}\0{source.size}".encode())
    for item in unreadable:
        digest.update(f"\n!{item.source}\0{item.reason}".encode())
    try:
        digest.update(b"\nlabels\0" + (input_dir / LABELS_FILE).read_bytes())
    except FileNotFoundError:
        pass
    except OSError as exc:  # unreadable now: the build proper reports it
        digest.update(f"\nlabels unreadable {exc.errno}".encode())
    return digest.hexdigest()


def read(path: Path) -> LastBuild | None:
    """The last build's record; None when there is none, or it cannot be used."""
    try:
        data = json.loads(path.read_bytes())
        if data.get("format") != FORMAT:
            return None
        return LastBuild(
            state=str(data["state"]),
            cache=str(data["cache"]),
            skipped=tuple(Skipped(str(s), str(r)) for s, r in data["skipped"]),
            problems=tuple(str(p) for p in data["problems"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.info("the record of the last build is unusable (%s); building in full", exc)
        return None


def record(path: Path, last: LastBuild | None) -> None:
    """Keep what a complete build was made from (written only when it changed); None forgets it
    (a build that left photos out for now: the next one must try them again)."""
    if last is None:
        path.unlink(missing_ok=True)
        return
    data = {
        "format": FORMAT,
        "state": last.state,
        "cache": last.cache,
        "skipped": [[s.source, s.reason] for s in last.skipped],
        "problems": list(last.problems),
    }
    write_changed(path, (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
