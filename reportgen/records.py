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
