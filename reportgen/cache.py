"""The incremental cache: each photo's results and pictures, keyed by what they depend on.

A photo's key is the hash of its bytes plus a *fingerprint* of everything else that changes its
results (the weights' sha256, library versions that define preprocessing and encoding, the
options that change decoding, and this format's version). A renamed or moved photo keeps its key;
a changed photo, weights file or relevant option gets a new one. Entries are written atomically
and only once their pictures exist, so an interrupted build leaves only complete entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import __version__
from .output import write_atomic
from .records import LayerInfo, ModelSummary
from .weights import WeightsSpec

log = logging.getLogger("reportgen")

# Bump whenever what is stored, or how pictures are drawn, changes.
FORMAT_VERSION = 3  # 3: levels by one multiply-add, heat maps scaled in float64


def fingerprint(
    weights: WeightsSpec,
    *,
    max_pixels: int | None,
    allow_truncated: bool,
    layers: tuple[str, ...] = ("conv1",),
    normalize: str = "map",
) -> str:
    """Hash of everything besides a photo's bytes that its results depend on."""
    data = {
        "format": FORMAT_VERSION,
        "reportgen": __version__,
        "weights": weights.identity,
        "torch": version("torch"),
        "torchvision": version("torchvision"),
        "pillow": version("pillow"),
        "max_pixels": max_pixels,
        "allow_truncated": allow_truncated,
        "layers": list(layers),
        "normalize": normalize,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class StoredResult:
    """What the model made of one photo, or why the photo could not be used."""

    top5: tuple[tuple[int, float], ...] = ()
    width: int = 0
    height: int = 0
    frames: int = 1
    cams: tuple[str, ...] = ()
    """Grad-CAM of each top-5 class, as data: URIs of small PNGs."""
    conv1_mean: tuple[float, ...] = ()
    """Each conv1 map's mean activation (before the ReLU)."""
    conv1_max: tuple[float, ...] = ()
    """Each conv1 map's maximum activation."""
    ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    """Each drawn layer's lowest and highest activation on the photo."""
    error: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """What the pages need to know about the model, kept so an unchanged rebuild needs no model."""

    summary: ModelSummary
    categories: tuple[str, ...]
    kernels_size: tuple[int, int]
    """Width and height of the kernels picture."""
    grid_size: tuple[int, int]
    """Width and height of each photo's conv1 grid picture."""
    kernel_scale: int
    """How much the kernels picture enlarges each weight."""


class ResultCache:
    """A folder of results and pictures for one fingerprint (other fingerprints coexist)."""

    def __init__(
        self, root: Path, fingerprint: str, kinds: tuple[str, ...] = ("input", "conv1")
    ) -> None:
        self.root = root
        self.fingerprint = fingerprint
        self.kinds = kinds
        """The pictures every result has: 'input' and the layers drawn."""

    def key(self, content_sha256: str) -> str:
        """The key of a photo whose bytes hash to ``content_sha256``."""
        return hashlib.sha256(f"{content_sha256}:{self.fingerprint}".encode()).hexdigest()

    # --- photos -----------------------------------------------------------------------------

    def _result_path(self, key: str) -> Path:
        return self.root / "results" / key[:2] / f"{key}.json"

    def picture(self, key: str, kind: str) -> Path:
        """Where the ``kind`` picture ('input', or a layer such as 'conv1') of a result is kept."""
        return self.root / "pictures" / key[:2] / f"{key}-{kind}.jpg"

    def load(self, key: str) -> StoredResult | None:
        """The stored result, or None when there is none (or it is damaged: then it is redone)."""
        path = self._result_path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            result = StoredResult(
                top5=tuple((int(i), float(p)) for i, p in data["top5"]),
                width=int(data["width"]),
                height=int(data["height"]),
                frames=int(data["frames"]),
                cams=tuple(str(c) for c in data["cams"]),
                conv1_mean=tuple(float(v) for v in data["conv1_mean"]),
                conv1_max=tuple(float(v) for v in data["conv1_max"]),
                ranges={k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()},
                error=data["error"],
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.info("cache entry %s is damaged (%s); recomputing it", path.name, exc)
            return None
        if result.error is None and not all(
            self.picture(key, kind).is_file() for kind in self.kinds
        ):
            return None
        return result

    def store(self, key: str, result: StoredResult) -> None:
        """Record a result; call after its pictures are written."""
        # Its fields are plain values already: a shallow dict (asdict's deep copy took 0.5 ms).
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        write_atomic(self._result_path(key), _dumps(fields))

    # --- the model --------------------------------------------------------------------------

    @property
    def _model_dir(self) -> Path:
        return self.root / "models" / self.fingerprint[:32]

    @property
    def kernels_picture(self) -> Path:
        return self._model_dir / "kernels.png"

    def load_model(self) -> ModelEntry | None:
        try:
            data = json.loads((self._model_dir / "model.json").read_text(encoding="utf-8"))
            summary = data["summary"]
            entry = ModelEntry(
                summary=ModelSummary(
                    **{
                        **summary,
                        "layers": tuple(
                            LayerInfo(**{**layer, "output_shape": tuple(layer["output_shape"])})
                            for layer in summary["layers"]
                        ),
                        "kernel_shape": tuple(summary["kernel_shape"]),
                        "conv1_output_shape": tuple(summary["conv1_output_shape"]),
                        "input_shape": tuple(summary["input_shape"]),
                        "warnings": tuple(summary["warnings"]),
                    }
                ),
                categories=tuple(data["categories"]),
                kernels_size=_pair(data["kernels_size"]),
                grid_size=_pair(data["grid_size"]),
                kernel_scale=int(data["kernel_scale"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.info("cached model description is damaged (%s); rebuilding it", exc)
            return None
        return entry if self.kernels_picture.is_file() else None

    def store_model(self, entry: ModelEntry) -> None:
        """Record the model's description; call after the kernels picture is written."""
        data = {
            "summary": dataclasses.asdict(entry.summary),
            "categories": list(entry.categories),
            "kernels_size": list(entry.kernels_size),
            "grid_size": list(entry.grid_size),
            "kernel_scale": entry.kernel_scale,
        }
        write_atomic(self._model_dir / "model.json", _dumps(data))

    def chart(self, key: str, name: str) -> Path:
        """Where a summary chart drawn from data hashing to ``key`` is kept."""
        return self.root / "charts" / f"{key[:32]}-{name}.png"

    # --- housekeeping -----------------------------------------------------------------------

    def prune(self, keep: set[str], *, charts: set[Path] = frozenset()) -> int:
        """Delete results, pictures, charts and model descriptions this build did not use."""
        removed = 0
        for path in sorted((self.root / "charts").glob("*.png")):
            if path not in charts:
                path.unlink()
                removed += 1
        for folder in ("results", "pictures"):
            for path in sorted((self.root / folder).glob("*/*")):
                if path.name[:64] not in keep:
                    path.unlink()
                    removed += 1
        for path in sorted((self.root / "models").glob("*")):
            if path.is_dir() and path != self._model_dir:
                shutil.rmtree(path)
        return removed


def _pair(values: Any) -> tuple[int, int]:
    first, second = values
    return int(first), int(second)


def _dumps(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
