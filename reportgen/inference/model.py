"""AlexNet: loading its weights, choosing a device, describing it, and hooks that record its layers.

Preprocessing and labels always come from torchvision's weights enum
(``AlexNet_Weights.IMAGENET1K_V1.transforms()`` and ``.meta["categories"]``), whichever weights are
loaded: a local file or a random model is assumed to share ImageNet-1k's classes and preprocessing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import UsageError, WeightsError
from ..layout import CONV_LAYERS
from ..records import LayerInfo, ModelSummary
from ..weights import RANDOM_SEED, WeightsSpec


@dataclass(frozen=True)
class LoadedModel:
    """An AlexNet in eval mode with what it takes to use and describe it."""

    model: nn.Module
    transforms: Callable[..., torch.Tensor]
    categories: tuple[str, ...]
    weights: WeightsSpec


def _weights_enum() -> Any:
    """torchvision's ``AlexNet_Weights.IMAGENET1K_V1``.

    torchvision is imported here, not at the top: importing it takes about a second, which the
    decoding workers, started before the model is loaded, put to use (see
    :mod:`reportgen.decoding.preprocess`).
    """
    from torchvision.models import AlexNet_Weights

    return AlexNet_Weights.IMAGENET1K_V1


def preprocessing() -> Callable[..., torch.Tensor]:
    """The preprocessing every photo gets: resize 256, centre-crop 224, ImageNet normalisation."""
    return _weights_enum().transforms()


def _alexnet_builder() -> Callable[..., nn.Module]:
    """torchvision's ``alexnet`` (imported outside any ``torch.device`` context)."""
    from torchvision.models import alexnet

    return alexnet


def load_model(weights: WeightsSpec) -> LoadedModel:
    """Build AlexNet with resolved weights, in eval mode, on the CPU.

    Raises:
        WeightsError: the file is not a readable AlexNet ``state_dict``.
    """
    if weights.path is None:
        alexnet = _alexnet_builder()
        torch.manual_seed(RANDOM_SEED)
        model = alexnet(weights=None)
    else:
        model = _load_state_dict_file(weights.path)
    model.eval()
    return LoadedModel(
        model=model,
        transforms=preprocessing(),
        categories=weights.categories or tuple(_weights_enum().meta["categories"]),
        weights=weights,
    )


def model_from_state(state: dict[str, torch.Tensor]) -> nn.Module:
    """AlexNet, in eval mode, holding a ``state_dict`` that fits it (checked by
    :func:`_load_state_dict_file`; the Ray engine's workers get the driver's model this way)."""
    model = _empty_alexnet(_classes_of(state))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _empty_alexnet(num_classes: int = 1000) -> nn.Module:
    """AlexNet with a head of ``num_classes`` on the meta device: its shapes, without randomly
    initialising 61M weights about to be replaced."""
    with torch.device("meta"):
        return _alexnet_builder()(weights=None, num_classes=num_classes)


_HEAD_WEIGHT = "classifier.6.weight"


def _classes_of(state: dict[str, torch.Tensor]) -> int:
    """The outputs of a state_dict's last layer (a fine-tuned head may have any number); 1000
    when it has none (the shape check then says what is missing)."""
    head = state.get(_HEAD_WEIGHT)
    return int(head.shape[0]) if head is not None and head.dim() == 2 else 1000


def read_head_size(path: Path) -> int:
    """How many classes the AlexNet state_dict in ``path`` has (mapped, not read whole).

    Raises:
        WeightsError: the file is not a state_dict that torch.load can read safely.
    """
    return _classes_of(_state_dict(_read_checkpoint(path, mmap=True), path))


def _load_state_dict_file(path: Path) -> nn.Module:
    """Load an AlexNet ``state_dict`` saved with ``torch.save`` (safely, strictly); its last layer
    may have any number of classes.

    Raises:
        WeightsError: one line saying what the file is instead, and what to give.
    """
    state = _state_dict(_read_checkpoint(path), path)
    _check_fits(state, _empty_alexnet(_classes_of(state)).state_dict(), path)
    return model_from_state(state)


_SAVE_HINT = "save one with torch.save(model.state_dict(), PATH) and pass that file"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _read_checkpoint(path: Path, *, mmap: bool = False) -> Any:
    """What ``torch.load`` finds in the file, loaded without running any code from it (``mmap``:
    mapped, for a look at its shapes; a legacy, non-zip file is read whole)."""
    try:
        if mmap:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; each is diagnosed here
        text = _ANSI.sub("", str(exc))
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found and found.group(1).split(".")[0] in ("torch", "torchvision"):
            raise WeightsError(
                f"weights file {str(path)!r} holds a whole pickled model ({found.group(1)}), "
                f"not a state_dict; {_SAVE_HINT}"
            ) from exc
        if found:
            raise WeightsError(
                f"weights file {str(path)!r} holds a pickled {found.group(1)}, which reportgen "
                f"will not load (unpickling it could run code); {_SAVE_HINT}"
            ) from exc
        raise WeightsError(
            f"weights file {str(path)!r} is not a PyTorch checkpoint that torch.load can read; "
            f"pass AlexNet's state_dict ({_SAVE_HINT})"
        ) from exc


def _state_dict(data: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside a checkpoint: the whole of it, or under 'state_dict' or 'model'."""
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        what = type(data).__name__ if not isinstance(data, dict) else "dict of other things"
        raise WeightsError(
            f"weights file {str(path)!r} holds a {what}, not a state_dict; {_SAVE_HINT}"
        )
    return data


def _check_fits(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path
) -> None:
    """Every tensor AlexNet has, of its shape, and nothing else.

    Raises:
        WeightsError: naming what differs, and what the file seems to be.
    """
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        guess = " (a ResNet's?)" if any(k.startswith("layer1.") for k in state) else ""
        raise WeightsError(
            f"weights file {str(path)!r} is a state_dict, but not AlexNet's{guess}: it lacks "
            f"{len(missing)} of AlexNet's {len(expected)} tensors"
            + (f" (such as {missing[0]!r})" if missing else "")
            + f" and has {len(extra)} that AlexNet does not"
            + (f" (such as {extra[0]!r})" if extra else "")
            + "; pass the state_dict of torchvision's alexnet"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"weights file {str(path)!r} does not fit AlexNet: {key} has shape "
                f"{tuple(state[key].shape)} where AlexNet's is {tuple(tensor.shape)}"
            )


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(requested: str) -> torch.device:
    """Resolve ``auto`` to the best available device; check that an explicit one exists.

    Raises:
        UsageError: the requested device is not available on this machine.
    """
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
    if requested == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available.get(requested, False):
        raise UsageError(f"--device {requested} was asked for but is not available here")
    return torch.device(requested)


def _copy(output: torch.Tensor) -> torch.Tensor:
    return output.clone()


H = TypeVar("H", bound="HookOwner")
Hook = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]


class HookOwner:
    """Owns forward hooks on some modules: registered on entering a ``with`` block, all removed
    on leaving it, also when the body raises (as torch-cam's CAM extractors do)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, slot: int) -> Hook:
        """The hook for ``self.modules[slot]``."""
        raise NotImplementedError

    def clear(self) -> None:
        """Drop what the hooks recorded (on exit too), so that it is not held till the next
        forward pass."""

    def __enter__(self: H) -> H:
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()


class LayerRecorder(HookOwner):
    """Records the output of one of AlexNet's convolutions, before its ReLU.

    Use as a context manager; the forward hook is removed on exit, also when the body raises::

        with LayerRecorder(model, "conv3") as rec:
            model(batch)
            maps = rec.output  # (B, 384, 13, 13)

    ``transform`` is applied to the output inside the hook and must return new tensors: every
    convolution is followed by ``ReLU(inplace=True)``, which overwrites its output right after the
    hook, so what is kept must be a copy (the default) or something computed from it.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str = "conv1",
        transform: Callable[[torch.Tensor], Any] = _copy,
    ) -> None:
        super().__init__([dict(model.named_modules())[CONV_LAYERS[layer]]])
        self.transform = transform
        self.output: Any = None

    def _hook(self, slot: int) -> Hook:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.output = self.transform(output.detach())

        return hook

    def clear(self) -> None:
        self.output = None


class Conv1Recorder(LayerRecorder):
    """A :class:`LayerRecorder` of conv1: by default ``rec.output`` is a copy of its (B, 64, 55, 55)
    output; with a ``transform``, whatever that returns."""

    def __init__(self, model: nn.Module, transform: Callable[[torch.Tensor], Any] = _copy) -> None:
        super().__init__(model, "conv1", transform)


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
    conv1 = next(r for r in rows if r.name == CONV_LAYERS["conv1"])
    return ModelSummary(
        arch="alexnet",
        weights=loaded.weights.label,
        sha256=loaded.weights.sha256,
        untrained=loaded.weights.untrained,
        layers=tuple(rows),
        kernel_shape=tuple(model.features[0].weight.shape),
        conv1_output_shape=conv1.output_shape,
        input_shape=(3, input_size, input_size),
        warnings=loaded.weights.warnings,
    )
