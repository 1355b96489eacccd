"""The small frozen records the build's stages hand to one another (no tensors, no HTML).

:class:`PhotoRecord` is *the* per-photo record: the inference stage fills its stored fields, the
cache keeps them (see :mod:`reportgen.serial`), and pages, summaries and exports read them. Adding a
per-photo fact is one field here, the code that computes it, and the template that shows it.
"""

from __future__ import annotations

import array
import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .site import naming

Floats = array.array
"""A vector of float64 numbers (typecode 'd'): 8 bytes a number in memory, against 32 in a tuple
of floats; what a photo record keeps of each conv1 map (64 numbers twice a photo)."""


def floats(values: Iterable[float]) -> Floats:
    """``values`` as a :data:`Floats` vector."""
    return array.array("d", values)


# Marks a PhotoRecord field that describes the photo's place in one folder, not what the model
# made of its bytes: filled in by each build, never stored in the cache.
_LOCAL = {"stored": False}


@dataclass(frozen=True)
class Source:
    """One candidate photo found in the input folder."""

    path: Path
    """Where to read it."""
    rel: str
    """Its path relative to the input folder, with ``/`` separators; unique and sortable."""
    size: int
    """Its size in bytes."""
    sha256: str
    """Hex digest of its bytes: the photo's identity for the cache."""
    stamp: tuple[int, int, int]
    """(size, modification time in ns, inode) when it was hashed: a file whose stamp differs
    later has changed since (as git's index and rsync tell)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """One of the top-5 classes for a photo.

    Slotted, as :class:`LayerRange` is: five a photo are held for the whole build, at 112 bytes
    each with their numbers, against 296 with an instance dict (as :mod:`reportgen.serial` loaded
    them)."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True, slots=True)
class LayerRange:
    """A layer's lowest and highest activation on one photo (what black and white stand for)."""

    layer: str
    """'conv1' … 'conv5'."""
    low: float
    high: float


@dataclass(frozen=True)
class PhotoRecord:
    """Everything known about one photo that was reported.

    The fields up to ``ranges`` are what the model made of the photo's bytes: the cache stores
    them, keyed by those bytes. The rest say where the photo sits in this folder and are filled in
    by every build (:meth:`placed`).

    A build holds every photo's record to its end, so a record keeps no pictures: those are in the
    cache beside it, the Grad-CAM heat maps too (:meth:`ResultCache.heat_maps
    <reportgen.cache.ResultCache.heat_maps>`), read only for the page that shows them.
    """

    width: int
    """Of the decoded, upright photo."""
    height: int
    frames: int
    """Frames or pages in the file; only the first is used."""
    top5: tuple[Prediction, ...]
    conv1_mean: Floats
    """Each conv1 map's mean activation (before the ReLU)."""
    conv1_max: Floats
    """Each conv1 map's maximum activation."""
    ranges: tuple[LayerRange, ...]
    """Each drawn layer's extremes on this photo, in network order; conv1 first."""

    source: str = field(default="", metadata=_LOCAL)
    """Path relative to the input folder (``/`` separators)."""
    file_size: int = field(default=0, metadata=_LOCAL)
    key: str = field(default="", metadata=_LOCAL)
    """The cache key of the photo's results; names its pictures."""
    truth: str | None = field(default=None, metadata=_LOCAL)
    """The photo's true class, when the folder says (CLASS/… or labels.csv)."""

    def __post_init__(self) -> None:
        for name in ("conv1_mean", "conv1_max"):
            if not isinstance(getattr(self, name), array.array):
                object.__setattr__(self, name, floats(getattr(self, name)))

    __hash__ = None  # type: ignore[assignment]  # its vectors are not hashable

    def placed(self, source: Source, key: str) -> PhotoRecord:
        """This record as the photo at ``source`` (the cache's copy knows no file names).

        Copied field by field rather than through ``dataclasses.replace``, which checks and
        initialises every field again (0.2 s for 20,000 photos); only the fields are copied, not
        what the cached properties worked out for the old place."""
        record = object.__new__(PhotoRecord)
        record.__dict__.update({name: self.__dict__[name] for name in _FIELDS})
        record.__dict__.update(source=source.rel, file_size=source.size, key=key)
        return record

    @functools.cached_property
    def page(self) -> str:
        """Site-relative URL of the photo's page (worked out once: pages link to it often)."""
        return naming.photo_page(self.source)

    def picture(self, kind: str) -> str:
        """Site-relative URL of one of the photo's pictures: 'input' (the crop the model saw),
        'conv1' … 'conv5' (a layer's maps)."""
        return naming.photo_picture(self.key, kind)

    @functools.cached_property
    def crop(self) -> str:
        """Site-relative URL of the 224x224 crop the model saw."""
        return self.picture("input")

    @functools.cached_property
    def conv1(self) -> str:
        """Site-relative URL of the grid of conv1 output maps."""
        return self.picture("conv1")

    @property
    def conv1_range(self) -> LayerRange:
        return self.ranges[0]

    @property
    def deeper(self) -> tuple[LayerRange, ...]:
        """The layers beyond conv1 drawn for this photo (--layers), in network order."""
        return self.ranges[1:]


_FIELDS = tuple(f.name for f in dataclasses.fields(PhotoRecord))


def stored_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    """The fields of a record the cache keeps (all but those marked as local)."""
    return tuple(f for f in dataclasses.fields(cls) if f.metadata.get("stored", True))


@dataclass(frozen=True)
class Skipped:
    """A file that looked like a photo but could not be used, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class LayerInfo:
    """One row of the model page."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int


@dataclass(frozen=True)
class ModelSummary:
    """What the pages say about the model that produced the predictions."""

    arch: str
    weights: str
    """'pretrained', the local file's name, or 'random'."""
    sha256: str | None
    untrained: bool
    layers: tuple[LayerInfo, ...]
    kernel_shape: tuple[int, ...]
    conv1_output_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    warnings: tuple[str, ...] = ()

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each module's output shape, by module name ('features.0', …)."""
        return {layer.name: layer.output_shape for layer in self.layers}


@dataclass(frozen=True)
class ModelEntry:
    """What the pages need to know about the model, kept so an unchanged rebuild needs no model."""

    summary: ModelSummary
    categories: tuple[str, ...]


@dataclass(frozen=True)
class KernelExample:
    """A photo that fires a kernel strongly."""

    photo: PhotoRecord
    value: float
    """The kernel's maximum activation on this photo."""


@dataclass(frozen=True)
class KernelView:
    """One conv1 kernel across the folder."""

    index: int
    mean: float
    """Mean activation over every map of every photo."""
    max: float
    """Highest activation on any photo."""
    top: tuple[KernelExample, ...]
    """The photos that fire it most, strongest first."""
