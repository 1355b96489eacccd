"""Which weights a build uses, identified without loading them (and without importing torch).

A rebuild whose photos are all in the cache needs the weights' identity (their sha256), not the
model: resolving here keeps such a rebuild free of torch's multi-second import.
"""

from __future__ import annotations

import os
import socket
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError
from .files import file_sha256

# torchvision's AlexNet_Weights.IMAGENET1K_V1 file; tests check these against torchvision itself.
OFFICIAL_FILENAME = "alexnet-owt-7be5be79.pth"
OFFICIAL_SHA256_PREFIX = "7be5be79"
RANDOM_SEED = 0
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class WeightsSpec:
    """Resolved ``--weights``: what to load and how to name it."""

    label: str
    """'pretrained', the local file's base name, or 'random': what pages call the weights."""
    path: Path | None
    sha256: str | None
    warnings: tuple[str, ...] = ()
    categories: tuple[str, ...] | None = None
    """The names of the head's classes (from --labels); None for ImageNet's, as torchvision
    names them."""

    @property
    def untrained(self) -> bool:
        return self.path is None

    @property
    def identity(self) -> str:
        """What the results depend on: the file's hash, or the random model's seed (the cache
        fingerprint adds the torch version, which decides what that seed draws)."""
        return self.sha256 if self.sha256 is not None else f"random-seed{RANDOM_SEED}"


def hub_dir() -> Path:
    """torch.hub's folder, as documented: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else
    ~/.cache/torch/hub (computed here so that no torch import is needed)."""
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def cached_weights_path() -> Path:
    """Where torchvision keeps (and looks for) the downloaded pretrained weights."""
    return hub_dir() / "checkpoints" / OFFICIAL_FILENAME


def resolve_weights(weights: str, *, progress: bool = False) -> WeightsSpec:
    """Find the weights file (downloading the pretrained one if needed) and hash it.

    Args:
        weights: ``"pretrained"``, ``"random"``, or a path to a ``state_dict`` file.
        progress: show torchvision's download progress bar.

    Raises:
        WeightsError: the file does not exist, or cannot be downloaded.
    """
    if weights == "random":
        return WeightsSpec("random", None, None)
    if weights == "pretrained":
        path = cached_weights_path()
        if not path.is_file():
            _download_pretrained(progress)
        label = "pretrained"
    else:
        path = Path(weights).expanduser()
        label = path.name
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        sha = file_sha256(path)
    except OSError as exc:
        raise WeightsError(f"weights file {str(path)!r} cannot be read ({exc.strerror})") from exc
    notes: tuple[str, ...] = ()
    if path.name == OFFICIAL_FILENAME and not sha.startswith(OFFICIAL_SHA256_PREFIX):
        # Pages are published: they name the file by its base name, never where it lies here.
        label = path.name
        notes = (
            f"{path.name} is named like torchvision's official file but its sha256 "
            f"({sha[:12]}…) does not start with {OFFICIAL_SHA256_PREFIX}: these are not the "
            "official pretrained weights.",
        )
    return WeightsSpec(label, path, sha, notes)


def _download_pretrained(progress: bool) -> None:
    """Fetch the official weights into torchvision's cache, or explain how to do without."""
    from torchvision.models import AlexNet_Weights  # only here: importing torch takes seconds

    target = cached_weights_path()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=progress, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"cannot download the pretrained weights ({reason}). Offline? Put "
            f"{OFFICIAL_FILENAME} at {target}, or pass --weights PATH to a local copy "
            f"(or --weights random for a dry run)."
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
