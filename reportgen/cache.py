"""The incremental cache: each photo's record and pictures, keyed by what they depend on.

A photo's key is the hash of its bytes plus a *fingerprint* of everything else that changes its
results (the weights' sha256, library versions that define preprocessing and encoding, the
options that change decoding, and :data:`PICTURES_VERSION`). A renamed or moved photo keeps its
key; a changed photo, weights file or relevant option gets a new one. Entries are written
atomically and only once their pictures exist, so an interrupted build leaves only complete
entries.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import __version__, serial
from .classes import labels_digest
from .config import Config
from .decoding import heif
from .files import write_atomic
from .records import ModelEntry, PhotoRecord
from .weights import WeightsSpec

log = logging.getLogger("reportgen")

T = TypeVar("T")

# Part of every key, so part of every picture's name: bump when what the model's results are, or
# how pictures are drawn, changes.
PICTURES_VERSION = 5  # 3: levels by one multiply-add, heat maps scaled in float64; 4, 5: JPEG 75
CODE_SIZE = 4096
"""Numbers in an fc7 code: the outputs of AlexNet's second fully connected layer."""
# Written into every entry: bump when a stored record changes shape or meaning. Entries of another
# format are recomputed (their pictures keep their names).
ENTRY_FORMAT = 6  # 4: one generic PhotoRecord; 5: numbers unrounded; 6: vectors as base64
HEAT_MAPS = "cams"
"""Where an entry keeps the photo's Grad-CAM heat maps (one for each of its top classes, in their
order): beside the record's stored fields, where they were a field of the record until the build
stopped holding them. The entries are the same, so none is computed again."""
HEAT_MAP_PREFIX = "data:image/png;base64,"
"""How each heat map starts: a small PNG, as a data: URI for the photo's page."""


def fingerprint(weights: WeightsSpec, config: Config) -> str:
    """Hash of everything besides a photo's bytes that its results depend on."""
    data = {
        "format": PICTURES_VERSION,
        "reportgen": __version__,
        "weights": weights.identity,
        "torch": version("torch"),
        "torchvision": version("torchvision"),
        "pillow": version("pillow"),
        "max_pixels": config.max_pixels,
        "allow_truncated": config.allow_truncated,
        "layers": list(config.layers),
        "normalize": config.normalize,
        "decode": config.decode,
        # The class names are stored in each record.
        "labels": labels_digest(config.labels),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Unusable:
    """A cached verdict that a photo cannot be used."""

    reason: str


class ResultCache:
    """A folder of records and pictures for one fingerprint (other fingerprints coexist)."""

    def __init__(
        self, root: Path, fingerprint: str, kinds: tuple[str, ...] = ("input", "conv1")
    ) -> None:
        self.root = root
        self.fingerprint = fingerprint
        self.kinds = kinds
        """The pictures every record has: 'input' and the layers drawn."""
        self.stored = 0
        """Photo records stored for this build: through this object by the encoder's thread, or
        counted as the encoder's processes (each with a copy of this object) report them."""
        self._root = os.fspath(root)

    def key(self, content_sha256: str, name: str = "") -> str:
        """The key of a photo whose bytes hash to ``content_sha256``; ``name``, its file name,
        adds the decoder's version where Pillow's is not the one (:func:`heif.key_part`)."""
        text = f"{content_sha256}:{self.fingerprint}{heif.key_part(name)}"
        return hashlib.sha256(text.encode()).hexdigest()

    # --- photos -----------------------------------------------------------------------------

    # Paths are made as strings: pathlib's joins were a third of a 20,000-photo rebuild.

    def _entry_path(self, key: str) -> Path:
        return Path(self._entry_path_name(key))

    def _entry_path_name(self, key: str) -> str:
        return f"{self._root}/results/{key[:2]}/{key}.json"

    def picture(self, key: str, kind: str) -> Path:
        """Where the ``kind`` picture ('input', or a layer such as 'conv1') of a record is kept."""
        return Path(self.picture_name(key, kind))

    def picture_name(self, key: str, kind: str) -> str:
        """:meth:`picture`, as a string."""
        return f"{self._root}/pictures/{key[:2]}/{key}-{kind}.jpg"

    def code_name(self, key: str) -> str:
        """Where a record's fc7 code is kept: CODE_SIZE float16 numbers, raw."""
        return f"{self._root}/codes/{key[:2]}/{key}.f16"

    def codes(self, keys: Sequence[str]) -> np.ndarray:
        """The fc7 codes under ``keys``, (len(keys), CODE_SIZE) float16, in that order.

        Raises:
            OSError: a code went missing or was damaged since its record was read.
        """
        out = np.empty((len(keys), CODE_SIZE), dtype=np.float16)
        rows = memoryview(out).cast("B")
        size = CODE_SIZE * 2
        for row, key in enumerate(keys):
            # Straight into the array, unbuffered: 20,000 codes in about 0.15 s.
            with open(self.code_name(key), "rb", buffering=0) as fh:
                whole = os.fstat(fh.fileno()).st_size == size
                if not whole or fh.readinto(rows[row * size : (row + 1) * size]) != size:
                    raise OSError(errno.EIO, "fc7 code damaged in the cache; build again", key)
        return out

    def load(self, key: str) -> PhotoRecord | Unusable | None:
        """The stored record or verdict; None when there is none, or it is damaged or stale
        (then the photo is computed again)."""
        found = self._read_entry(key, _record_or_verdict, then="; recomputing it")
        if isinstance(found, PhotoRecord) and not self.has_pictures(key):
            return None
        return found

    def heat_maps(self, key: str) -> tuple[str, ...] | None:
        """The Grad-CAM heat maps kept with the record under ``key``; None when its entry is
        missing or damaged. Read for the one page that shows them, so that no record holds them
        (3 KB a photo: 300 MB of a 100,000-photo build)."""
        return self._read_entry(key, lambda data: _checked_heat_maps(data["record"][HEAT_MAPS]))

    def _read_entry(
        self, key: str, take: Callable[[dict[str, Any]], T], then: str = ""
    ) -> T | None:
        """What ``take`` makes of the entry under ``key``; None when the entry is missing, of
        another format, or damaged: unreadable, or ``take`` finding it so (a ValueError, KeyError,
        TypeError or AttributeError), which is logged, followed by ``then``."""
        name = self._entry_path_name(key)  # a string: this runs for every photo of a build
        try:
            with open(name, "rb") as fh:
                data = json.loads(fh.read())
            if data.get("format") != ENTRY_FORMAT:
                return None
            return take(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.info("cache entry %s is damaged (%s)%s", os.path.basename(name), exc, then)
            return None

    def stamps(self, keys: Iterable[str], known: Mapping[str, bytes] | None = None) -> str | None:
        """A hash of the size and mtime of each entry under ``keys`` and of its pictures: what
        changes when any of them is damaged, emptied or replaced, found without reading them.
        None when one is missing or empty. ``known``: :meth:`entry_stamp` of some of the keys,
        taken earlier in the build (their files are never written again under the same key)."""
        digest = hashlib.sha256()
        known = known or {}
        for key in keys:
            stamp = known.get(key) or self.entry_stamp(key)
            if stamp is None:
                return None
            digest.update(stamp)
        return digest.hexdigest()

    def has_entry(self, key: str) -> bool:
        """Whether an entry under ``key`` is there (not whether it is whole: :meth:`load`)."""
        return os.path.exists(self._entry_path_name(key))

    def entry_stamp(self, key: str) -> bytes | None:
        """The key, and the size and mtime of the entry under it and of every file it needs
        beside it (in the order of :meth:`_files`), as :meth:`stamps` hashes them; None when one
        is missing or empty (then the entry is of no use: :meth:`load` would not take it
        either)."""
        stamp = [key]
        for name in (self._entry_path_name(key), *self._files(key)):
            try:
                st = os.stat(name)
            except OSError:
                return None
            if not st.st_size:
                return None
            stamp += (str(st.st_size), str(st.st_mtime_ns))
        return ("\0".join(stamp) + "\n").encode()

    def _files(self, key: str) -> list[str]:
        """What a record under ``key`` needs beside it: its pictures and its fc7 code."""
        return [*(self.picture_name(key, kind) for kind in self.kinds), self.code_name(key)]

    def has_pictures(self, key: str) -> bool:
        """Whether every picture of the record under ``key``, and its code, is there."""
        return all(_nonempty(name) for name in self._files(key))

    def store(self, key: str, record: PhotoRecord, heat_maps: Sequence[str]) -> None:
        """Keep a photo's record and Grad-CAM heat maps; call after its pictures are written."""
        self._write_entry(key, {"record": entry_fields(record, heat_maps)})
        self.stored += 1

    def store_unusable(self, key: str, reason: str) -> None:
        """Keep the reason a photo cannot be used."""
        self._write_entry(key, {"error": reason})

    def _write_entry(self, key: str, data: dict[str, Any]) -> None:
        write_atomic(self._entry_path(key), _dumps({"format": ENTRY_FORMAT, **data}))

    # --- the model --------------------------------------------------------------------------

    @property
    def _model_dir(self) -> Path:
        return self.root / "models" / self.fingerprint[:32]

    @property
    def kernels_picture(self) -> Path:
        return self._model_dir / "kernels.png"

    def load_model(self) -> ModelEntry | None:
        """The model's description, if stored with its kernels picture."""
        path = self._model_dir / "model.json"
        try:
            data = json.loads(path.read_bytes())
            if data.get("format") != ENTRY_FORMAT:
                return None
            entry = serial.load(ModelEntry, data["model"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.info("cached model description is damaged (%s); rebuilding it", exc)
            return None
        return entry if _nonempty(self.kernels_picture) else None

    def store_model(self, entry: ModelEntry) -> None:
        """Record the model's description; call after the kernels picture is written."""
        data = {"format": ENTRY_FORMAT, "model": serial.dump(entry)}
        write_atomic(self._model_dir / "model.json", _dumps(data))

    def chart(self, key: str, name: str) -> Path:
        """Where a summary chart drawn from data hashing to ``key`` is kept."""
        return self.root / "charts" / f"{key[:32]}-{name}.png"

    # --- housekeeping -----------------------------------------------------------------------

    def prune(self, keep: set[str], *, charts: set[Path] = frozenset()) -> None:
        """Delete records, pictures, charts and model descriptions this build did not use."""
        for path in sorted((self.root / "charts").glob("*.png")):
            if path not in charts:
                path.unlink()
        for folder in ("results", "pictures", "codes"):
            top = os.path.join(self._root, folder)
            for part in sorted(_names(top)):
                inner = os.path.join(top, part)
                for name in sorted(_names(inner)):
                    if name[:64] not in keep:
                        os.unlink(os.path.join(inner, name))
        for path in sorted((self.root / "models").glob("*")):
            if path.is_dir() and path != self._model_dir:
                shutil.rmtree(path)


def _record_or_verdict(data: dict[str, Any]) -> PhotoRecord | Unusable:
    """The record, or the verdict that the photo cannot be used, in an entry's data."""
    if "error" in data:
        return Unusable(str(data["error"]))
    record, _ = from_entry(data["record"])
    return record


def entry_fields(record: PhotoRecord, heat_maps: Sequence[str]) -> dict[str, Any]:
    """A photo's record and its Grad-CAM heat maps as its cache entry keeps them, and as the Ray
    engine's workers hand them back: the record's stored fields, and the maps under
    :data:`HEAT_MAPS`."""
    return {**serial.dump(record), HEAT_MAPS: list(heat_maps)}


def from_entry(data: Any) -> tuple[PhotoRecord, tuple[str, ...]]:
    """The record and heat maps :func:`entry_fields` made ``data`` of.

    Raises:
        ValueError: ``data`` is damaged: a field or the maps missing, extra or of the wrong type,
            or not one map for each of the top classes.
    """
    if not isinstance(data, dict) or HEAT_MAPS not in data:
        raise ValueError("PhotoRecord: no heat maps")
    fields = {name: value for name, value in data.items() if name != HEAT_MAPS}
    record, heat_maps = serial.load(PhotoRecord, fields), _checked_heat_maps(data[HEAT_MAPS])
    if len(heat_maps) != len(record.top5):
        raise ValueError(f"{len(heat_maps)} heat maps for {len(record.top5)} classes")
    return record, heat_maps


def _checked_heat_maps(value: Any) -> tuple[str, ...]:
    """Heat maps as an entry keeps them, checked: data: URIs of PNGs."""
    if type(value) is not list or not all(
        type(uri) is str and uri.startswith(HEAT_MAP_PREFIX) for uri in value
    ):
        raise ValueError(f"heat maps: expected a list of PNG data: URIs, got {value!r:.40}")
    return tuple(value)


def _names(folder: str) -> list[str]:
    """The names in ``folder``; none if it is missing."""
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _nonempty(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file with something in it (pictures are written whole or not at all,
    but a user's tools may still empty one)."""
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def _dumps(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
