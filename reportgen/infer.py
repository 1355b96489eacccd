"""The batched inference pipeline: DataLoader workers decode, the model runs, conv1 is recorded.

What leaves this module per batch is small and already on the CPU: top-5 indices and
probabilities, the crops the model saw and the conv1 grids as ``uint8`` arrays. Activations are
turned into pictures batch by batch and dropped, so memory does not grow with the folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import pictures
from .cam import CamRecorder
from .decode import UnreadableImage, open_rgb
from .layout import columns_for
from .model import Conv1Recorder, LayerRecorder, LoadedModel
from .records import Source

TOPK = 5


@dataclass
class Item:
    """One decoded photo (``x`` set) or one failure (``error`` set)."""

    index: int
    x: torch.Tensor | None = None
    crop: bytes = b""
    """The crop the model saw, JPEG-encoded (empty when crops were not asked for)."""
    width: int = 0
    height: int = 0
    frames: int = 1
    error: str | None = None


@dataclass
class Batch:
    """A collated batch: the photos that decoded, stacked, and the ones that did not."""

    indices: list[int]
    x: torch.Tensor | None
    sizes: list[tuple[int, int, int]]
    crops: list[bytes] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        if self.x is not None:
            self.x = self.x.pin_memory()
        return self


@dataclass
class BatchResult:
    """What the model made of one batch, on the CPU."""

    indices: list[int]
    sizes: list[tuple[int, int, int]]
    """(width, height, frames) of each original photo."""
    top_indices: np.ndarray
    """(B, 5) class indices, most probable first."""
    top_probs: np.ndarray
    """(B, 5) softmax probabilities."""
    crops: list[bytes]
    """JPEG of the 224x224 crop each photo became, as the model saw it."""
    grids: np.ndarray
    """(B, Hg, Wg) uint8: the 64 conv1 maps of each photo, 8 per row."""
    conv1_mean: np.ndarray
    """(B, 64) each conv1 map's mean (before the ReLU), for the kernel pages."""
    conv1_max: np.ndarray
    """(B, 64) each conv1 map's maximum."""
    cams: np.ndarray
    """(B, 5, 13, 13) Grad-CAM of each top-5 class, >= 0, in the order of ``top_indices``."""
    errors: list[tuple[int, str]]
    layer_grids: dict[str, np.ndarray] = field(default_factory=dict)
    """Grey grids of the other requested layers, by name."""
    ranges: dict[str, np.ndarray] = field(default_factory=dict)
    """(B, 2) each layer's lowest and highest activation on each photo (for the legends)."""


class PhotoDataset(Dataset[Item]):
    """Decodes and preprocesses one photo per item; a bad file becomes an error item.

    With ``crops``, each item also carries the JPEG of the crop the model sees, made here in the
    worker process from the model input itself, off the main process's critical path.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        transform: Callable[..., torch.Tensor],
        *,
        max_pixels: int | None = None,
        allow_truncated: bool = False,
        crops: bool = True,
    ) -> None:
        self.paths = [s.path for s in sources]
        self.transform = transform
        self.max_pixels = max_pixels
        self.allow_truncated = allow_truncated
        self.crops = crops

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        try:
            decoded = open_rgb(
                self.paths[index], max_pixels=self.max_pixels, allow_truncated=self.allow_truncated
            )
        except UnreadableImage as exc:
            return Item(index=index, error=str(exc))
        except OSError as exc:
            return Item(index=index, error=f"cannot be read ({exc.strerror or exc})")
        x = self.transform(decoded.image)
        crop = b""
        if self.crops:
            mean, std = self.transform.mean, self.transform.std
            crop = pictures.encode_jpeg(pictures.model_inputs_to_uint8(x[None], mean, std)[0])
        return Item(index, x, crop, decoded.width, decoded.height, decoded.frames)


def collate(items: list[Item]) -> Batch:
    """Stack the good photos of a batch, channels-last as the model runs; keep the failures."""
    good = [it for it in items if it.x is not None]
    x = None
    if good:
        x = torch.stack([it.x for it in good]).contiguous(memory_format=torch.channels_last)
    return Batch(
        indices=[it.index for it in good],
        x=x,
        sizes=[(it.width, it.height, it.frames) for it in good],
        crops=[it.crop for it in good],
        errors=[(it.index, it.error or "unknown error") for it in items if it.x is None],
    )


def make_loader(dataset: PhotoDataset, *, batch_size: int, workers: int, pin: bool) -> DataLoader:
    """The build's DataLoader (also what the benchmark's model-only bound uses)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )


def prepare(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model as the build runs it: on ``device``, channels-last.

    Channels-last lets oneDNN (CPU) and cuDNN pick faster convolutions: on a 2-core CPU the
    forward pass went from 6.0 to 4.5 ms per photo at batch 32, with the same top-5.
    """
    return model.to(device, memory_format=torch.channels_last)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of model inputs moved to ``device`` in the model's memory format."""
    return batch.to(device, non_blocking=True, memory_format=torch.channels_last)


def run(
    loaded: LoadedModel,
    sources: Sequence[Source],
    device: torch.device,
    *,
    batch_size: int,
    workers: int,
    max_pixels: int | None = None,
    allow_truncated: bool = False,
    layers: Sequence[str] = ("conv1",),
    shared: bool = False,
) -> Iterator[BatchResult]:
    """Run every photo through the model, yielding one :class:`BatchResult` per batch.

    The model is moved to ``device``; photos are decoded by ``workers`` processes. conv1 is always
    recorded; ``layers`` adds others; ``shared`` scales all maps of a layer together.
    """
    transform = loaded.transforms
    dataset = PhotoDataset(
        sources, transform, max_pixels=max_pixels, allow_truncated=allow_truncated
    )
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, pin=device.type == "cuda")
    model = prepare(loaded.model, device)

    def record(output: torch.Tensor) -> pictures.Activations:
        return pictures.activations(output, shared=shared)

    deeper = [name for name in layers if name != "conv1"]
    with contextlib.ExitStack() as stack:
        recorder = stack.enter_context(Conv1Recorder(model, _conv1_record(shared)))
        others = {n: stack.enter_context(LayerRecorder(model, n, record)) for n in deeper}
        cam = stack.enter_context(CamRecorder(model))
        stack.enter_context(torch.inference_mode())
        for batch in loader:
            if batch.x is None:
                yield _empty_result(batch)
                continue
            x = to_device(batch.x, device)
            logits = model(x)
            probs = torch.softmax(logits.float(), dim=1)
            top_probs, top_indices = probs.topk(TOPK, dim=1)
            assert recorder.output is not None  # set by the forward pass just above
            conv1, means = recorder.output
            yield BatchResult(
                indices=batch.indices,
                sizes=batch.sizes,
                top_indices=top_indices.cpu().numpy(),
                top_probs=top_probs.cpu().numpy(),
                crops=batch.crops,
                grids=pictures.grey_grids(conv1.levels),
                conv1_mean=means.cpu().numpy(),
                conv1_max=conv1.high.cpu().numpy(),
                cams=cam.cams(top_indices).cpu().numpy(),
                errors=batch.errors,
                layer_grids={
                    n: pictures.grey_grids(r.output.levels, columns_for(n))
                    for n, r in others.items()
                },
                ranges={
                    "conv1": conv1.layer_range.cpu().numpy(),
                    **{n: r.output.layer_range.cpu().numpy() for n, r in others.items()},
                },
            )


def _conv1_record(
    shared: bool,
) -> Callable[[torch.Tensor], tuple[pictures.Activations, torch.Tensor]]:
    """What the conv1 hook keeps: levels and extremes for the grid, and each map's mean."""

    def record(output: torch.Tensor) -> tuple[pictures.Activations, torch.Tensor]:
        return pictures.activations(output, shared=shared), output.mean(dim=(2, 3))

    return record


def _empty_result(batch: Batch) -> BatchResult:
    return BatchResult(
        indices=[],
        sizes=[],
        top_indices=np.zeros((0, TOPK), dtype=np.int64),
        top_probs=np.zeros((0, TOPK), dtype=np.float32),
        crops=[],
        grids=np.zeros((0, 0, 0), dtype=np.uint8),
        conv1_mean=np.zeros((0, 64), dtype=np.float32),
        conv1_max=np.zeros((0, 64), dtype=np.float32),
        cams=np.zeros((0, TOPK, 13, 13), dtype=np.float32),
        errors=batch.errors,
    )
