"""Where reportgen keeps its state for each site, and which site each state folder is for.

An output folder's state (its manifest, stat index, records, build lock and, by default, the
cache) lives outside it, in :func:`sites_home` ``/NAME-HASH``, named from the folder's path (see
:class:`~reportgen.site.output.OutputFolder`). Each state folder also says which folder it is
for (:data:`SITE_FILE`), so that

- a site that was moved or renamed takes its state along at its next build (:func:`follow`),
  where it would otherwise compute every photo again. The moved site is known by its files: all
  that its last build wrote, with the sizes and mtimes the state's manifest gives (a move keeps
  them), or, where the times changed, the sizes and every page's sha256. Nothing in the site says
  which it is, so two sites built alike stay byte for byte alike;
- a copy of a site (``cp -a`` or ``cp -r``: the original is still where it was) starts from a
  copy of the original's state, the default cache's files shared by hard links;
- the states of sites that are gone can be listed (:func:`site_states`) and removed
  (:func:`prune`): with its cache, a site of 20,000 photos leaves 1.8 GB behind. A site on a
  disk that is not mounted now is not gone: each state also names the mount point its site was
  under, and while nothing is mounted there its state is kept.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..files import write_atomic

log = logging.getLogger("reportgen")

HOME_VARIABLE = "REPORTGEN_HOME"
MARKER = ".reportgen-site"
"""The one file of reportgen's own in OUT: says that a reportgen site lives there."""
SITE_FILE = "site.json"
"""In each state folder: the folder of the site it is for (``path``), and the mount point of the
disk that folder is on (``disk``)."""
MANIFEST = "manifest.json"
"""In each state folder: every file the site's last finished build wrote (see
:mod:`reportgen.site.output`)."""
LOCK = "lock"
CACHE_DIR = "cache"
"""The default cache, in each state folder. Its files are only ever replaced whole or removed,
never changed in place, so the state of a copy shares them by hard links."""
_PARTIAL = ".partial-"
"""The name's start of a state folder being made or removed: never mistaken for a site's."""


def state_home() -> Path:
    """Where reportgen keeps its state and caches: ``$REPORTGEN_HOME``, else
    ``$XDG_CACHE_HOME/reportgen``, else ``~/.cache/reportgen`` (as torch keeps
    ``~/.cache/torch``)."""
    if home := os.environ.get(HOME_VARIABLE):
        return Path(home)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "reportgen"


def sites_home() -> Path:
    """The folder of the sites' state folders, one each."""
    return state_home() / "sites"


@dataclass(frozen=True)
class SiteState:
    """One state folder, and the site it is for."""

    folder: Path
    site: Path | None
    """Where the site was last built; None for a state an earlier reportgen made, which did not
    say (until the site is built again)."""
    size: int
    """Bytes in the state folder, the default cache included."""
    own: int
    """Of those, the bytes no other folder shares (by hard links: a site's pictures, or the cache
    of a copy's state): what removing the state frees."""
    present: bool
    """Whether a reportgen site is still there (its marker)."""
    away: Path | None = None
    """The mount point of the disk the site was on, when nothing is mounted there now: the site
    may well be on that disk, so its state is not pruned. None otherwise."""
    built: bool = True
    """Whether a build of the site ever finished (the state has a manifest): one that did not
    left only what its first build found (the photos' hashes, say) before it stopped."""

    @property
    def gone(self) -> bool:
        """Whether the site is known to be gone: its state is one :func:`prune` removes."""
        return self.site is not None and not self.present and self.away is None


def open_lock(state: Path) -> int:
    """A descriptor of ``state``'s build lock file, made if missing, for ``flock``."""
    return os.open(state / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)


def claim(state: Path, root: Path) -> None:
    """Say in ``state`` that it is the state of the site at ``root`` (written when that changed: a
    new state, or one taken along from where the site was)."""
    where = str(root.resolve())
    if _recorded(state) != (where, _disk_of(where)):
        _record(state, where)


def follow(root: Path, state: Path, *, holds: Callable[[Path], bool]) -> tuple[str, Path] | None:
    """Give the site at ``root``, when it has no state of its own yet (``state``, named from its
    path), the state of the site it was moved or copied from: the state of a site whose files
    ``root`` ``holds`` (every one as that site's last build left it). A site gone from where it
    was built was moved here: its state folder is renamed to ``state``. A site still there was
    copied: ``state`` is made a copy of its state. Return ``("moved", where it was)`` or
    ``("copied", where the original is)``; None when there is neither."""
    if state.exists() or not (root / MARKER).is_file():
        return None
    where = str(root.resolve())
    original = None
    for old in _states():
        recorded = _recorded(old)
        if recorded is None:
            continue  # a state of an earlier version's: where its site was is not known
        was, disk = recorded
        if was != where:  # (one that names this folder already is a move a kill cut short)
            if not holds(old):
                continue  # another site's
            if (Path(was) / MARKER).is_file() or _unmounted(disk):
                # Still there (or maybe, on a disk not mounted now): this is a copy of it.
                original = original or (old, Path(was))
                continue
        if _take(old, state, was=was, where=where):
            return "moved", Path(was)
    if original is not None and _clone(original[0], state):
        return "copied", original[1]
    return None


def _take(old: Path, state: Path, *, was: str, where: str) -> bool:
    """Rename the state folder ``old`` (of the site that was in ``was``) to ``state`` (of the site
    in ``where``) unless a build is using it; whether it did."""
    with _locked(old) as held:
        if not held:
            log.info("not taking the site's state along from %s: a build is using it", old)
            return False
        # Named first, so that a state cut off between the two steps is never taken for one of a
        # site gone (and pruned): it names a site that is there, and the next build takes it.
        _record(old, where)
        try:
            os.rename(old, state)
        except OSError as exc:  # another build into this folder made a state of its own first
            if exc.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
                raise
            if old.is_dir():
                _record(old, was)
            return False
    return True


def _clone(old: Path, state: Path) -> bool:
    """Make ``state`` a copy of the state folder ``old`` unless a build is using it: the default
    cache's files linked, the rest (which builds append to) copied, all aside first and renamed
    into place, so that a kill leaves no half state. Whether it did; a failure costs only the
    work the copy would have saved."""
    aside = state.with_name(f"{_PARTIAL}{os.getpid()}-{state.name}")
    shared = old / CACHE_DIR

    def link_or_copy(source: str, target: str) -> None:
        if Path(source).is_relative_to(shared):
            with contextlib.suppress(OSError):  # a file system without links: copied below
                os.link(source, target)
                return
        shutil.copy2(source, target)

    with _locked(old) as held:
        if not held:
            log.info("not copying the state of the site copied here (%s): a build is using it", old)
            return False
        try:
            ignored = shutil.ignore_patterns(LOCK, SITE_FILE, ".*.tmp")
            shutil.copytree(old, aside, ignore=ignored, copy_function=link_or_copy)
            os.rename(aside, state)
        except OSError as exc:
            log.info("could not copy the state of the site copied here (%s): %s", old, exc)
            return False
        finally:  # what a failure or an interruption left (a kill's: the next prune)
            shutil.rmtree(aside, ignore_errors=True)
    return True


def _record(state: Path, where: str) -> None:
    """Write in ``state`` that its site is in the folder ``where``, and on which disk."""
    data = json.dumps({"path": where, "disk": _disk_of(where)}, ensure_ascii=False) + "\n"
    write_atomic(state / SITE_FILE, data.encode("utf-8"))


def _disk_of(path: str) -> str:
    """The mount point of the file system that holds ``path``, or of its nearest folder that
    exists."""
    here = Path(path)
    while here != here.parent and not os.path.ismount(here):
        here = here.parent
    return str(here)


def _unmounted(disk: str | None) -> Path | None:
    """``disk``, a mount point a state recorded, when nothing is mounted there now."""
    return Path(disk) if disk and not os.path.ismount(disk) else None


def site_states() -> list[SiteState]:
    """Every site reportgen keeps state for, by state folder name."""
    found = []
    for folder in _states():
        recorded = _recorded(folder)
        site = Path(recorded[0]) if recorded else None
        present = site is not None and (site / MARKER).is_file()
        away = None if present or recorded is None else _unmounted(recorded[1])
        built = (folder / MANIFEST).is_file()
        found.append(SiteState(folder, site, *_sizes(folder), present, away, built))
    return found


def prune(states: list[SiteState]) -> tuple[list[SiteState], list[SiteState]]:
    """Remove the state folders of ``states`` whose site is gone (deleted, moved and not built
    since, or never built to the end); leave those of sites still there, of sites on a disk not
    mounted now, and those made before reportgen said which site they are for. Return those
    removed, and those left because a build was using them."""
    removed, busy = [], []
    for gone in (s for s in states if s.gone):
        if not gone.folder.is_dir():  # removed meanwhile
            continue
        if (recorded := _recorded(gone.folder)) and _unmounted(recorded[1]):  # its disk went
            continue
        with _locked(gone.folder) as held:
            if not held:
                busy.append(gone)
                continue
            if (gone.site / MARKER).is_file():  # built there again meanwhile
                continue
            doomed = gone.folder.with_name(f"{_PARTIAL}{os.getpid()}-{gone.folder.name}")
            os.rename(gone.folder, doomed)
        shutil.rmtree(doomed)
        removed.append(gone)
    for leftover in sites_home().glob(_PARTIAL + "*"):  # cut short: by a kill, say
        maker = leftover.name[len(_PARTIAL) :].split("-", 1)[0]
        if not (maker.isdigit() and _running(int(maker))):  # not a copy being made now
            shutil.rmtree(leftover, ignore_errors=True)
    return removed, busy


def _running(pid: int) -> bool:
    """Whether the process ``pid`` is running (this one is not counted)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(state: Path) -> Iterator[bool]:
    """Hold ``state``'s build lock while the block runs, if no build holds it; yields whether."""
    fd = open_lock(state)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def _states() -> list[Path]:
    """The state folders, by name (not those being made or removed)."""
    try:
        return sorted(p for p in sites_home().iterdir() if p.is_dir() and p.name[0] != ".")
    except FileNotFoundError:
        return []


def _recorded(state: Path) -> tuple[str, str | None] | None:
    """The folder ``state`` says its site is in, and its disk's mount point (None from a
    reportgen that did not say); None when it does not say where its site is."""
    try:
        data = json.loads((state / SITE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    path, disk = data.get("path"), data.get("disk")
    if not (isinstance(path, str) and path):
        return None
    return path, disk if isinstance(disk, str) and disk else None


def _sizes(folder: Path) -> tuple[int, int]:
    """Bytes in the files under ``folder`` (a file linked twice counted once), and in those whose
    every link is under it."""
    files: dict[tuple[int, int], list[int]] = {}  # size, links, links seen here
    for here, _, names in os.walk(folder):
        for name in names:
            try:
                st = os.lstat(os.path.join(here, name))
            except OSError:
                continue  # removed meanwhile
            files.setdefault((st.st_dev, st.st_ino), [st.st_size, st.st_nlink, 0])[2] += 1
    total = sum(size for size, _, _ in files.values())
    return total, sum(size for size, links, seen in files.values() if seen >= links)
