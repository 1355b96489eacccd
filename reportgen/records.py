"""Small frozen records the build stages hand to one another (no tensors, no HTML)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


@dataclass(frozen=True)
class Prediction:
    """One of the top-5 classes for a photo."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class LayerPicture:
    """One layer's activation maps for one photo, drawn as a grid."""

    name: str
    """'conv1' … 'conv5'."""
    url: str
    shape: tuple[int, ...]
    """(maps, height, width)."""
    size: tuple[int, int]
    """Width and height of the grid picture."""
    columns: int
    low: float
    """The layer's lowest activation on this photo."""
    high: float


@dataclass(frozen=True)
class ImageRecord:
    """Everything the pages need to know about one photo that was reported."""

    source: str
    """Path relative to the input folder (``/`` separators)."""
    file_size: int
    width: int
    height: int
    frames: int
    """Frames or pages in the file; only the first is used."""
    top5: tuple[Prediction, ...]
    page: str
    """Site-relative URL of the photo's page."""
    crop: str
    """Site-relative URL of the 224x224 crop the model saw."""
    conv1: str
    """Site-relative URL of the 8x8 grid of conv1 output maps."""
    cams: tuple[str, ...] = ()
    """Grad-CAM of each top-5 class (data: URIs of small PNGs), in the order of ``top5``."""
    conv1_mean: tuple[float, ...] = ()
    """Each conv1 map's mean activation (before the ReLU)."""
    conv1_max: tuple[float, ...] = ()
    """Each conv1 map's maximum activation."""
    layers: tuple[LayerPicture, ...] = ()
    """Layers beyond conv1 drawn for this photo (--layers), in network order."""
    conv1_range: tuple[float, float] = (0.0, 0.0)
    """conv1's lowest and highest activation on this photo."""
    truth: str | None = None
    """The photo's true class, when the folder says (CLASS/… or labels.csv)."""


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


@dataclass(frozen=True)
class KernelExample:
    """A photo that fires a kernel strongly."""

    photo: ImageRecord
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
