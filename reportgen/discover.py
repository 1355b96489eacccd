"""Finding the photos in the input folder, in a stable order."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from .decoding import heif
from .files import (
    ChangedFile,
    NotRegularFile,
    Stamp,
    extension,
    kind_of,
    not_text,
    open_regular,
    stamp_of,
)
from .progress import bar
from .records import Skipped, Source
from .site.output import LEGACY_STATE_DIR
from .site.states import MARKER

log = logging.getLogger("reportgen")

_CHUNK = 1 << 20

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".avif"}
    | heif.EXTENSIONS
)

SYSTEM_FOLDERS = frozenset({"@eadir", "#recycle", "#snapshot", "$recycle.bin"})
"""Folders that a NAS or an operating system keeps beside the photos, with copies of them (any
case): Synology's thumbnails (``@eaDir``), recycle bin and snapshots, and Windows' recycle bin on
a drive. Searching them would put each photo in the site several times, or ones deleted."""

Known = Callable[[str, Stamp], "str | None"]


def discover(
    input_dir: Path,
    *,
    exclude: Path | None = None,
    leave_out: Sequence[str] = (),
    known: Known | None = None,
    progress: bool = False,
) -> tuple[list[Source], list[Skipped]]:
    """List every photo under ``input_dir``, sorted by relative path.

    ``known(rel, stamp)`` gives the recorded sha256 of a file whose stamp has not changed since
    it was hashed (:class:`reportgen.stat_index.StatIndex`): such a file is not read at all.

    Hidden files and folders are ignored, as are :data:`SYSTEM_FOLDERS` and files without an
    image extension. HEIF files are skipped unread where the plugin that reads them is not
    installed (:mod:`.decoding.heif`). Folder symlinks are followed once (a loop cannot hang the
    walk). ``exclude`` (the output folder, when it lies inside the input) is not searched, nor is
    any other reportgen site: its pictures are not photos; nor is what ``leave_out`` names
    (``--exclude``'s patterns: see :class:`Excluded`). ``progress``: a bar over the photos
    found, as each is hashed or found unchanged (a first build of a large library reads every
    byte of it).

    Returns:
        The photos found, and the files that could not even be read (with the reason).
    """
    sources: list[Source] = []
    skipped: list[Skipped] = []
    found = _image_files(input_dir, exclude, leave_out)
    for path, rel in bar("finding photos", progress=progress, iterable=found):
        if (shown := not_text(rel)) is not None:
            skipped.append(Skipped(shown, "its name is not UTF-8: rename it to include it"))
            continue
        if heif.is_heif_name(rel) and heif.plugin() is None:
            skipped.append(Skipped(rel, heif.MISSING))
            continue
        try:
            stamp, digest = _identify(path, rel, known)
        except NotRegularFile as exc:
            skipped.append(Skipped(rel, f"not a photo: it {exc}"))
            continue
        except OSError as exc:
            skipped.append(Skipped(rel, f"cannot be read ({exc.strerror or exc})"))
            continue
        sources.append(Source(path, rel, size=stamp[0], sha256=digest, stamp=stamp))
    sources.sort(key=lambda s: s.rel)
    skipped.sort(key=lambda s: s.source)
    return sources, skipped


class Excluded:
    """What ``--exclude``'s patterns leave out: a pattern without a ``/`` is matched against each
    file's and folder's name, one with a ``/`` (``2019/drafts``, ``/2019``) against its path from
    the input folder; globs as :mod:`fnmatch` has them, in any case (``*.png`` leaves out
    ``IMG_1.PNG`` too)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.names = [p.casefold() for p in patterns if "/" not in p]
        self.paths = [p.lstrip("/").casefold() for p in patterns if "/" in p]

    def __call__(self, rel: str, name: str) -> bool:
        """Whether the file or folder at ``rel`` (named ``name``) is left out."""
        name, rel = name.casefold(), rel.casefold()
        return any(fnmatchcase(name, p) for p in self.names) or any(
            fnmatchcase(rel, p) for p in self.paths
        )


def _image_files(
    input_dir: Path, exclude: Path | None, leave_out: Sequence[str]
) -> list[tuple[Path, str]]:
    """Each file searched under ``input_dir`` named as an image, with its path relative to it (as
    :func:`discover` says which are searched), before any is opened."""
    found: list[tuple[Path, str]] = []
    for here, prefix, filenames in _walk(input_dir, exclude, leave_out):
        found.extend(
            (here / name, prefix + name)
            for name in filenames
            if extension(name) in IMAGE_EXTENSIONS
        )
    return found


def passed_over(
    input_dir: Path, exclude: Path | None = None, leave_out: Sequence[str] = ()
) -> Counter[str]:
    """The files :func:`discover` passes over for their names alone (searched, but not named as
    images), counted by extension (lower-cased; "" for none): what a folder without photos holds
    instead."""
    counts: Counter[str] = Counter()
    for _, _, filenames in _walk(input_dir, exclude, leave_out):
        counts.update(
            suffix for name in filenames if (suffix := extension(name)) not in IMAGE_EXTENSIONS
        )
    return counts


def _walk(
    input_dir: Path, exclude: Path | None, patterns: Sequence[str]
) -> Iterator[tuple[Path, str, list[str]]]:
    """Each folder searched under ``input_dir`` (as :func:`discover` says: not hidden, not a
    system folder or a site, not ``exclude`` nor left out by ``patterns``), its path relative to
    ``input_dir`` as a prefix ("" or ending in "/"), and the names of its files searched (neither
    hidden nor left out), sorted."""
    root = input_dir.resolve()
    excluded = exclude.resolve() if exclude is not None else None
    leave_out = Excluded(patterns) if patterns else None
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        # Each file's relative path from its folder's, as strings: pathlib's joins and
        # relative_to, per file, were a third of discovering 20,000 unchanged photos.
        prefix = here.relative_to(root).as_posix() + "/" if here != root else ""
        st = here.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d.casefold() not in SYSTEM_FOLDERS
            and (excluded is None or (here / d).resolve() != excluded)
            and not (leave_out is not None and leave_out(prefix + d, d))
            and not _is_site(here / d)
        )
        searched = [
            name
            for name in filenames
            if not name.startswith(".")
            and not (leave_out is not None and leave_out(prefix + name, name))
        ]
        yield here, prefix, sorted(searched)


def _identify(path: Path, rel: str, known: Known | None) -> tuple[Stamp, str]:
    """The file's stamp and sha256: recorded ones where its stamp is unchanged, else hashed."""
    if known is not None:
        st = os.stat(path)
        kind = kind_of(st.st_mode)
        if kind is not None:
            raise NotRegularFile(f"is {kind}")
        digest = known(rel, stamp_of(st))
        if digest is not None:
            return stamp_of(st), digest
    return _hash_file(path)


def _hash_file(path: Path) -> tuple[Stamp, str]:
    """The file's stamp and the hash of its bytes, read once; hashed again should the file
    change while it is read (its stamp moved), so the two always belong together."""
    for _ in range(3):
        digest = hashlib.sha256()
        with open_regular(path) as fh:
            before = stamp_of(os.fstat(fh.fileno()))
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
            if stamp_of(os.fstat(fh.fileno())) == before:
                return before, digest.hexdigest()
    raise ChangedFile(errno.EBUSY, "it keeps changing while it is read")


def _is_site(folder: Path) -> bool:
    """Whether ``folder`` is a site reportgen wrote (its marker, or an older version's state
    folder, is there)."""
    if (folder / MARKER).is_file() or (folder / LEGACY_STATE_DIR).is_dir():
        log.info("not searching %s for photos: it is a reportgen site", folder)
        return True
    return False
