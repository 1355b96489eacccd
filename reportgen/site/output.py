"""The output folder: what reportgen owns there, staging a new site aside, and swapping it in.

reportgen keeps a manifest of every file it wrote in ``OUT/.reportgen/manifest.json``. Only files
named there are ever replaced or deleted; a folder without a manifest that is not empty is refused
unless the user forces it. A new site is written under ``OUT/.reportgen/staging`` first, and only
moved into place once complete, so an interrupted build leaves the previous site whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ..errors import BuildError, UsageError
from ..files import write_atomic, write_new

log = logging.getLogger("reportgen")

STATE_DIR = ".reportgen"
MANIFEST = "manifest.json"
STAGING = "staging"
LOCK = "lock"
MANIFEST_VERSION = 2  # 2: each file with its sha256 (written ones), size and mtime


def _safe_relpath(rel: str) -> PurePosixPath:
    """Reject any site path that could land outside the output folder."""
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        raise ValueError(f"unsafe site path {rel!r}")
    if path.parts[0] == STATE_DIR:
        raise ValueError(f"site path {rel!r} is inside reportgen's private folder")
    return path


class OutputFolder:
    """The site folder and reportgen's private state inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / STATE_DIR
        self.staging = self.state / STAGING

    def check(self, *, input_dir: Path, force: bool) -> None:
        """Refuse output folders that would lose or mix up a user's files.

        Raises:
            UsageError: OUT is a file, is the input folder itself, or holds files that are not a
                previous reportgen site (unless ``force``).
        """
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"output {str(self.root)!r} exists and is not a folder")
        if self.root.resolve() == input_dir.resolve():
            raise UsageError("the output folder cannot be the input folder; choose another --out")
        if self.state.is_symlink():
            raise UsageError(
                f"{str(self.state)!r} is a symbolic link; reportgen will not follow it"
            )
        if not self.root.is_dir() or self.is_reportgen_site() or force:
            return
        # Only reportgen's own state (a first build that was interrupted) counts as empty.
        if any(entry.name != STATE_DIR for entry in self.root.iterdir()):
            raise UsageError(
                f"output folder {str(self.root)!r} is not empty and is not a reportgen site; "
                "choose another --out, empty it, or pass --force to add the site beside its files"
            )

    def is_reportgen_site(self) -> bool:
        return (self.state / MANIFEST).is_file()

    def owned_files(self) -> dict[str, FileState]:
        """Site-relative paths reportgen wrote last time (empty for a new folder), each with what
        it was then: sha256, size and mtime (empty and zero where not known)."""
        try:
            data = json.loads((self.state / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        files = data.get("files", []) if isinstance(data, dict) else []
        if isinstance(files, list):  # version 1: names only
            return {f: _UNKNOWN for f in files if isinstance(f, str)}
        if not isinstance(files, dict):
            return {}
        return {
            rel: (str(v[0]), int(v[1]), int(v[2]))
            for rel, v in files.items()
            if isinstance(rel, str) and isinstance(v, list) and len(v) == 3
        }

    @contextlib.contextmanager
    def lock(self, *, wait: bool = False) -> Iterator[None]:
        """Hold the folder's build lock: one build at a time writes to an output folder.

        An OS file lock (``flock``) on ``OUT/.reportgen/lock``, so the kernel releases it when a
        build dies, however it dies. The file keeps the holder's process id, for the message.

        Raises:
            BuildError: another build holds the lock (unless ``wait``: then wait for it).
        """
        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                if not wait:
                    raise BuildError(
                        f"another build (pid {holder}) is writing to {str(self.root)!r}; wait "
                        "for it to finish, or pass --wait to start when it has"
                    ) from None
                log.warning("waiting for the build (pid %s) writing to %s", holder, self.root)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def discard_staging(self) -> None:
        """Remove a half-written new site (best effort: the next build removes it too)."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def begin(self) -> Staging:
        """Start a fresh staging area (discarding an interrupted one: it is ours)."""
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        return Staging(self)


FileState = tuple[str, int, int]
"""A site file as the manifest remembers it: sha256 of its bytes ('' for a picture linked from
the cache), size, mtime in ns."""
_UNKNOWN: FileState = ("", -1, -1)


class Staging:
    """A new site being written aside; :meth:`commit` swaps it in.

    A file whose bytes are already in place is not written again: a page whose bytes hash as the
    manifest says and whose size and mtime are as the last build left them, or a picture that is
    already the very file (hard link) in the cache. Those are *kept*.
    """

    def __init__(self, folder: OutputFolder) -> None:
        self.folder = folder
        self.files: set[str] = set()
        """Staged: to be moved into the site."""
        self.kept: dict[str, str] = {}
        """In place already, with their sha256 ('' for pictures)."""
        self.digests: dict[str, str] = {}
        self._old = folder.owned_files()

    def path(self, rel: str) -> Path:
        """Where a site-relative file is staged (its folder created)."""
        target = self.folder.staging.joinpath(*_safe_relpath(rel).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.files.add(rel)
        return target

    def write(self, rel: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if self._unchanged(rel, digest):
            self.kept[rel] = digest
            return
        self.digests[rel] = digest
        write_new(self.path(rel), data)

    def _unchanged(self, rel: str, digest: str) -> bool:
        """Whether the site's ``rel`` is what the last build left there, with these bytes."""
        was = self._old.get(rel)
        if was is None or was[0] != digest:
            return False
        try:
            st = self.folder.root.joinpath(*_safe_relpath(rel).parts).lstat()
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == was[1:]

    def link(self, rel: str, existing: Path) -> None:
        """Stage ``existing`` under ``rel`` without copying its bytes when the disk allows.

        Linking the same ``rel`` twice (two photos with the same bytes) stages it once; a site
        file that is already ``existing`` itself is kept.
        """
        if rel in self.files or rel in self.kept:
            return
        current = self.folder.root.joinpath(*_safe_relpath(rel).parts)
        with contextlib.suppress(OSError):
            if rel in self._old and not current.is_symlink() and current.samefile(existing):
                self.kept[rel] = ""
                return
        target = self.path(rel)
        try:
            os.link(existing, target)
        except OSError:
            shutil.copyfile(existing, target)

    def commit(
        self, *, force: bool = False, first: tuple[str, ...] = (), last: tuple[str, ...] = ()
    ) -> int:
        """Move every staged file into the site, then delete what the old site had and this lacks;
        return the site's size in bytes (what publishing it uploads).

        Files are replaced one by one with atomic renames: ``first`` (pictures: new names, invisible
        to the old pages), then pages, ``last`` (the index) at the end, so at every moment each link
        in the visible site points at a file that exists. The manifest names old and new files
        while the swap runs, so an interrupted swap still leaves every file owned.

        Raises:
            UsageError: a staged file would replace a file reportgen did not write (unless
                ``force``); nothing has been moved then.
        """
        folder = self.folder
        old = self._old
        root = folder.root.resolve()
        for parent_rel in sorted({PurePosixPath(rel).parent for rel in self.files}):
            parent = folder.root.joinpath(*parent_rel.parts)
            if not parent.resolve().is_relative_to(root):
                raise UsageError(
                    f"{str(parent)!r} leads outside the output folder (a symbolic link?); "
                    "reportgen writes only inside it"
                )
        if not force:
            foreign = sorted(
                rel for rel in self.files - old.keys() if folder.root.joinpath(rel).exists()
            )
            if foreign:
                shown = ", ".join(repr(f) for f in foreign[:3])
                more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
                raise UsageError(
                    f"the site would replace files reportgen did not write: {shown}{more}; "
                    "move them away or pass --force"
                )
        site = self.files | set(self.kept)
        self._write_manifest({**old, **{rel: _UNKNOWN for rel in self.files}})
        order = sorted(self.files, key=lambda f: (not f.startswith(first), f in last, f))
        for rel in order:
            source = folder.staging.joinpath(*PurePosixPath(rel).parts)
            target = folder.root.joinpath(*PurePosixPath(rel).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        for rel in sorted(set(old) - site):
            try:
                target = folder.root.joinpath(*_safe_relpath(rel).parts)
            except ValueError:
                continue  # a hand-edited manifest cannot make us delete outside the site
            if target.is_file() or target.is_symlink():
                target.unlink()
                _remove_empty_parents(target.parent, folder.root)
        states = {rel: self._state(rel) for rel in site}
        self._write_manifest(states)
        shutil.rmtree(folder.staging)
        return sum(size for _, size, _ in states.values())

    def _state(self, rel: str) -> FileState:
        """What the site's ``rel`` is now, for the manifest."""
        st = self.folder.root.joinpath(*PurePosixPath(rel).parts).stat()
        digest = self.kept.get(rel, self.digests.get(rel, ""))
        return digest, st.st_size, st.st_mtime_ns

    def _write_manifest(self, files: dict[str, FileState]) -> None:
        data = {"version": MANIFEST_VERSION, "files": {rel: files[rel] for rel in sorted(files)}}
        encoded = (json.dumps(data, indent=0) + "\n").encode()
        path = self.folder.state / MANIFEST
        with contextlib.suppress(OSError):
            if path.read_bytes() == encoded:
                return  # nothing changed: nothing written
        write_atomic(path, encoded)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
