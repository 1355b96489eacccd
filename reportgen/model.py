"""AlexNet, its weights, and the hook that records conv1.

Preprocessing and labels always come from torchvision's weights enum
(``AlexNet_Weights.IMAGENET1K_V1.transforms()`` and ``.meta["categories"]``), whichever weights are
loaded: a local file or a random model is assumed to share ImageNet-1k's classes and preprocessing.
"""

from __future__ import annotations

import hashlib
import socket
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch
from torch import nn
from torchvision.models import AlexNet_Weights, alexnet

from .errors import WeightsError
from .records import LayerInfo, ModelSummary

WEIGHTS = AlexNet_Weights.IMAGENET1K_V1
OFFICIAL_FILENAME = Path(WEIGHTS.url).name  # alexnet-owt-7be5be79.pth
OFFICIAL_SHA256_PREFIX = OFFICIAL_FILENAME.rsplit("-", 1)[1].split(".")[0]  # 7be5be79
RANDOM_SEED = 0
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class LoadedModel:
    """An AlexNet in eval mode with what it takes to use and describe it."""

    model: nn.Module
    transforms: Callable[..., torch.Tensor]
    categories: tuple[str, ...]
    weights: str
    """'pretrained', the local file's name, or 'random'."""
    sha256: str | None
    warnings: tuple[str, ...] = ()

    @property
    def untrained(self) -> bool:
        return self.weights == "random"


def preprocessing():
    """The preprocessing every photo gets: resize 256, centre-crop 224, ImageNet normalisation."""
    return WEIGHTS.transforms()


def cached_weights_path() -> Path:
    """Where torchvision keeps (and looks for) the downloaded pretrained weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / OFFICIAL_FILENAME


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(weights: str, *, progress: bool = False) -> LoadedModel:
    """Build AlexNet with the requested weights, in eval mode, on the CPU.

    Args:
        weights: ``"pretrained"``, ``"random"``, or a path to a ``state_dict`` file.
        progress: show torchvision's download progress bar when fetching pretrained weights.

    Raises:
        WeightsError: the weights cannot be found, fetched or loaded.
    """
    if weights == "random":
        torch.manual_seed(RANDOM_SEED)
        model = alexnet(weights=None)
        return _loaded(model, "random", None, ())
    if weights == "pretrained":
        path = cached_weights_path()
        if not path.is_file():
            _download_pretrained(progress)
        model, sha, notes = _load_state_dict_file(path)
        return _loaded(model, "pretrained", sha, notes)
    path = Path(weights).expanduser()
    model, sha, notes = _load_state_dict_file(path)
    return _loaded(model, path.name, sha, notes)


def _loaded(model: nn.Module, label: str, sha: str | None, notes: tuple[str, ...]) -> LoadedModel:
    model.eval()
    return LoadedModel(
        model=model,
        transforms=preprocessing(),
        categories=tuple(WEIGHTS.meta["categories"]),
        weights=label,
        sha256=sha,
        warnings=notes,
    )


def _download_pretrained(progress: bool) -> None:
    """Fetch the official weights into torchvision's cache, or explain how to do without."""
    target = cached_weights_path()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        WEIGHTS.get_state_dict(progress=progress, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"cannot download the pretrained weights ({reason}). Offline? Put "
            f"{OFFICIAL_FILENAME} at {target}, or pass --weights PATH to a local copy "
            f"(or --weights random for a dry run)."
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


def _load_state_dict_file(path: Path) -> tuple[nn.Module, str, tuple[str, ...]]:
    """Load an AlexNet ``state_dict`` saved with ``torch.save`` (safely, strictly)."""
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        sha = file_sha256(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        raise WeightsError(
            f"weights file {str(path)!r} is not a readable state_dict ({_first_line(exc)})"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {str(path)!r} does not hold a state_dict")
    model = alexnet(weights=None)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise WeightsError(
            f"weights file {str(path)!r} does not fit AlexNet ({_first_line(exc)})"
        ) from exc
    notes: tuple[str, ...] = ()
    if path.name == OFFICIAL_FILENAME and not sha.startswith(OFFICIAL_SHA256_PREFIX):
        notes = (
            f"{str(path)!r} is named like torchvision's official file but its sha256 "
            f"({sha[:12]}…) does not start with {OFFICIAL_SHA256_PREFIX}: these are not the "
            "official pretrained weights.",
        )
    return model, sha, notes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def pick_device(requested: str) -> torch.device:
    """Resolve ``auto`` to the best available device; check an explicit one exists.

    Raises:
        WeightsError: never; see :class:`~reportgen.errors.UsageError` raised by the caller.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(requested)


def device_available(device: str) -> bool:
    """Whether an explicitly requested device can be used on this machine."""
    if device == "cuda":
        return torch.cuda.is_available()
    if device == "mps":
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return True


def _copy(output: torch.Tensor) -> torch.Tensor:
    return output.clone()


class Conv1Recorder:
    """Records the output of AlexNet's first convolution, before its ReLU.

    Use as a context manager; the forward hook is removed on exit, also when the body raises::

        with Conv1Recorder(model) as rec:
            model(batch)
            maps = rec.output  # (B, 64, 55, 55)

    ``transform`` is applied to the output inside the hook and must return a new tensor:
    ``features[1]`` is ``ReLU(inplace=True)``, which overwrites the conv output right after the
    hook, so what is kept must be a copy (the default) or something computed from it.
    """

    def __init__(
        self, model: nn.Module, transform: Callable[[torch.Tensor], torch.Tensor] = _copy
    ) -> None:
        self.module: nn.Module = model.features[0]
        self.transform = transform
        self.output: torch.Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(
        self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        self.output = self.transform(output.detach())

    def __enter__(self) -> Conv1Recorder:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.output = None


def conv1_kernels(model: nn.Module) -> torch.Tensor:
    """The first layer's weights, (64, 3, 11, 11), on the CPU."""
    return model.features[0].weight.detach().cpu().clone()


def summarize(loaded: LoadedModel, input_size: int = 224) -> ModelSummary:
    """Layer-by-layer output shapes for one ``input_size`` photo, and parameter counts."""
    model = loaded.model
    rows: list[LayerInfo] = []
    handles = []

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append(LayerInfo(name, type(module).__name__, tuple(output.shape[1:]), params))

        return hook

    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(record(name)))
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    conv1 = next(r for r in rows if r.name == "features.0")
    return ModelSummary(
        arch="alexnet",
        weights=loaded.weights,
        sha256=loaded.sha256,
        untrained=loaded.untrained,
        layers=tuple(rows),
        kernel_shape=tuple(model.features[0].weight.shape),
        conv1_output_shape=conv1.output_shape,
        input_shape=(3, input_size, input_size),
        warnings=loaded.warnings,
    )
