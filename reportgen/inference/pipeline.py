"""The batched pipeline: DataLoader workers decode, the model runs, its layers are recorded.

What leaves this module per batch is a :class:`BatchOutput`: small and already on the CPU (top-5
indices and probabilities, the crops the model saw, grids of grey levels, a few numbers per map).
Activations are turned into pictures batch by batch and dropped, so memory does not grow with the
folder.
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .. import forked
from ..decoding import preprocess
from ..decoding.decode import FAST_MARGIN, UnreadableImage, open_rgb
from ..files import ChangedFile, NotRegularFile, read_unchanged
from ..layout import Grid
from ..records import Source
from . import pictures
from .cam import CamRecorder
from .model import Conv1Recorder, LayerRecorder, LoadedModel

TOPK = 5
CONV_PART = 16
"""Photos the convolutions take at a time on the CPU; the head (fc6 to fc8) then takes the whole
batch at once, since each of its passes reads all of its 230 MB of weights (two passes of 32
photos took 89 ms against 67 ms for one of 64). The convolutions' tensors, a batch's largest
(its input and conv1's output: 38 and 50 MB at 64 photos), shrink to a quarter, at the same
speed (the convolutions of 64 photos took 415 ms in parts of 16, 402 ms at once: within the
spread of runs). Those tensors are what glibc's heap must fit in again for every batch, around
what outlives them: measured on 2 cores, a 2,000-photo build peaked at 1,097 and 1,112 MB against
1,194 to 1,234 MB in one pass, and a 300-photo build at 1,065 and 1,084 MB against 1,156 MB. On a
GPU the whole batch goes at once."""
READ_AHEAD = 512
"""Photos the workers may decode ahead of the model (77 MB of crops), or one batch a worker where
that is more (on a GPU machine, 8 workers of 128 photos: 1,024)."""


@dataclass(frozen=True)
class DecodeFailure:
    """Why a photo could not be decoded."""

    index: int
    reason: str
    lasting: bool
    """True when it is the photo's bytes that cannot be used (kept in the cache); False when
    the file could not be read as it was found (it vanished or changed): then the next build
    tries again."""


@dataclass
class DecodedPhoto:
    """One photo as a worker decoded it (``pixels`` set), or why it could not (``failure``)."""

    index: int
    pixels: np.ndarray | None = None
    """(224, 224, 3) uint8: the crop the model sees, before normalisation."""
    crop: bytes = b""
    """``pixels`` as a JPEG, for the photo's page."""
    width: int = 0
    height: int = 0
    frames: int = 1
    failure: DecodeFailure | None = None


@dataclass
class DecodedBatch:
    """A collated batch: the photos that decoded, stacked, and the ones that did not."""

    indices: list[int]
    pixels: torch.Tensor | None
    """(B, 224, 224, 3) uint8 crops; :func:`model_inputs` makes them the model's input."""
    sizes: list[tuple[int, int, int]]
    crops: list[bytes] = field(default_factory=list)
    failures: list[DecodeFailure] = field(default_factory=list)

    def pin_memory(self) -> DecodedBatch:
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


@dataclass
class BatchOutput:
    """What the model made of one batch's photos, on the CPU, row by row."""

    indices: list[int]
    sizes: list[tuple[int, int, int]]
    """(width, height, frames) of each original photo."""
    top_indices: np.ndarray
    """(B, 5) class indices, most probable first."""
    top_probs: np.ndarray
    """(B, 5) softmax probabilities."""
    crops: list[bytes]
    """JPEG of the 224x224 crop each photo became, as the model saw it."""
    conv1_mean: np.ndarray
    """(B, maps) each conv1 map's mean (before the ReLU), for the kernel pages."""
    conv1_max: np.ndarray
    """(B, maps) each conv1 map's maximum."""
    cams: np.ndarray
    """(B, 5, H, W) Grad-CAM of each top-5 class, >= 0, in the order of ``top_indices``."""
    grids: dict[str, np.ndarray]
    """Each drawn layer's grey grids, (B, height, width) uint8, conv1 first."""
    ranges: dict[str, np.ndarray]
    """(B, 2) each drawn layer's lowest and highest activation on each photo."""
    codes: np.ndarray
    """(B, 4096) float16: each photo's fc7 code, what the similar photos and the map are made of."""


@dataclass
class _Drawn:
    """What the layers' recorders made of some of a batch's photos (see :class:`BatchOutput`)."""

    conv1_mean: np.ndarray
    conv1_max: np.ndarray
    grids: dict[str, np.ndarray]
    ranges: dict[str, np.ndarray]

    @staticmethod
    def joined(parts: list[_Drawn]) -> _Drawn:
        """The parts' rows, in order, as one."""
        if len(parts) == 1:
            return parts[0]
        return _Drawn(
            conv1_mean=np.concatenate([p.conv1_mean for p in parts]),
            conv1_max=np.concatenate([p.conv1_max for p in parts]),
            grids={n: np.concatenate([p.grids[n] for p in parts]) for n in parts[0].grids},
            ranges={n: np.concatenate([p.ranges[n] for p in parts]) for n in parts[0].ranges},
        )


class PhotoDataset(Dataset[DecodedPhoto]):
    """Decodes one photo per item into the 224x224 crop the model sees (and that crop as a JPEG);
    a bad file becomes a failure item.

    Each photo's bytes are read once and checked against the hash discovery found, so what the
    cache keeps under that hash is always made from those bytes. Runs in the DataLoader's worker
    processes and needs only Pillow (see :mod:`reportgen.decoding.preprocess`).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        max_pixels: int | None,
        allow_truncated: bool,
        decode: str = "exact",
    ) -> None:
        self.paths = [s.path for s in sources]
        self.stamps = [s.stamp for s in sources]
        self.max_pixels = max_pixels
        self.allow_truncated = allow_truncated
        self.reduce_to = preprocess.RESIZE_SIZE * FAST_MARGIN if decode == "fast" else None

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> bytes | DecodeFailure:
        """The photo's bytes as discovery hashed them, or why they cannot be had now.

        The file's stamp (size, mtime, inode) is checked before and after reading, rather than
        hashing its bytes again: a few microseconds instead of milliseconds for a phone photo.
        """
        try:
            data = read_unchanged(self.paths[index], self.stamps[index])
        except ChangedFile:
            return DecodeFailure(index, "changed while the build ran; build again", lasting=False)
        except OSError as exc:
            reason = str(exc) if isinstance(exc, NotRegularFile) else exc.strerror or str(exc)
            return DecodeFailure(index, f"cannot be read now ({reason})", lasting=False)
        return data

    def __getitem__(self, index: int) -> DecodedPhoto:
        data = self.read(index)
        if isinstance(data, DecodeFailure):
            return DecodedPhoto(index, failure=data)
        try:
            decoded = open_rgb(
                data,
                max_pixels=self.max_pixels,
                allow_truncated=self.allow_truncated,
                reduce_to=self.reduce_to,
            )
        except UnreadableImage as exc:
            failure = DecodeFailure(index, str(exc), lasting=exc.lasting)
            return DecodedPhoto(index, failure=failure)
        pixels = np.asarray(preprocess.crop_for_model(decoded.image, decoded.turn))
        crop = pictures.encode_jpeg(pixels, pictures.CROP_QUALITY)
        return DecodedPhoto(index, pixels, crop, decoded.width, decoded.height, decoded.frames)


def batches_ahead(batch_size: int, workers: int) -> int:
    """Batches each of ``workers`` decodes ahead of the model: :data:`READ_AHEAD` photos in all,
    and at least one batch each."""
    return max(1, math.ceil(READ_AHEAD / (batch_size * workers)))


def collate(items: list[DecodedPhoto]) -> DecodedBatch:
    """Stack the good photos of a batch; keep the failures."""
    good = [it for it in items if it.pixels is not None]
    return DecodedBatch(
        indices=[it.index for it in good],
        pixels=torch.from_numpy(np.stack([it.pixels for it in good])) if good else None,
        sizes=[(it.width, it.height, it.frames) for it in good],
        crops=[it.crop for it in good],
        failures=[it.failure for it in items if it.failure is not None],
    )


class Decoding:
    """A dataset's photos, decoded batch by batch by a DataLoader's worker processes.

    The workers start on construction, so they decode while the caller imports torchvision and
    loads the model; they read ahead about :data:`READ_AHEAD` photos, and at least one batch each.
    Use as a context manager: leaving the block shuts the workers down, also when the body raises.
    With ``workers=0``, photos are decoded in this process as they are asked for.
    """

    def __init__(
        self, dataset: PhotoDataset, *, batch_size: int, workers: int, pin: bool = False
    ) -> None:
        with warnings.catch_warnings():
            # torch's own warning when the workers outnumber the cores, printed at construction
            # and again at iter(), with its traceback line: the build says it once, in its words.
            warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=workers,
                collate_fn=collate,
                pin_memory=pin,
                prefetch_factor=batches_ahead(batch_size, workers) if workers > 0 else None,
                persistent_workers=False,
                # Each worker ends with the process that started it, however that ends.
                worker_init_fn=functools.partial(_worker_started, os.getpid()),
            )
            batches = iter(loader) if len(dataset) else iter(())
        self._batches: Iterator[DecodedBatch] | None = batches

    def __iter__(self) -> Iterator[DecodedBatch]:
        if self._batches is None:
            raise RuntimeError("decoding has been shut down")
        return self._batches

    def close(self) -> None:
        """Stop the workers (dropping the DataLoader's iterator shuts them down)."""
        self._batches = None

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _worker_started(parent: int, worker: int) -> None:
    """In a decoding worker, as it starts: end it with ``parent``, the build, where the build
    forked it (not where a fork server did, as Python 3.14 starts workers on Linux, nor a fresh
    interpreter, as elsewhere: their parent is not the build)."""
    if multiprocessing.get_start_method(allow_none=True) == "fork":
        forked.die_with(parent)


def model_inputs(pixels: torch.Tensor, transforms: Any, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 crops to the model's input on ``device``: (B, 3, H, W) floats,
    channels-last, normalised with the weights' mean and std.

    The weights' transforms do ``convert_image_dtype`` (``/ 255``) then ``normalize``
    (``- mean``, ``/ std``): the same float32 operations in the same order here, so on the CPU the
    result is bitwise the same (a GPU may round a division differently in the last bit). They run
    on (B, H, W, 3) memory with mean and std laid out along whole rows (W x 3), twice as fast as
    broadcasting a 3-long channel axis; the channels-last view at the end costs nothing. Only the
    uint8 crops travel to the device.
    """
    x = pixels.to(device, non_blocking=True).to(torch.float32).div_(255.0)
    width = x.shape[2]
    mean = torch.as_tensor(transforms.mean, dtype=x.dtype, device=device).repeat(width, 1)
    std = torch.as_tensor(transforms.std, dtype=x.dtype, device=device).repeat(width, 1)
    return x.sub_(mean).div_(std).permute(0, 3, 1, 2)


def prepare(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model as the build runs it: on ``device``, channels-last.

    Channels-last lets oneDNN (CPU) and cuDNN pick faster convolutions: on a 2-core CPU the
    forward pass went from 6.0 to 4.5 ms per photo at batch 32, with the same top-5.

    On a GPU, TF32 is switched off: cuDNN's default TF32 convolutions put the Grad-CAM maps up to
    4 levels (of 255) off a float32 reference on an H200, where the tests allow 2; AlexNet is too
    small for the GPU's speed to matter (decoding sets the pace).
    """
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return model.to(device, memory_format=torch.channels_last)


def _convolutions(
    model: torch.nn.Module,
    x: torch.Tensor,
    recorders: tuple[Conv1Recorder, dict[str, LayerRecorder]],
    grids: dict[str, Grid],
) -> tuple[torch.Tensor, _Drawn]:
    """AlexNet's convolutions over the input ``x`` of some of a batch's photos: their pooled
    features, flattened for the head (as ``AlexNet.forward`` flattens them), and what the layers'
    recorders (conv1's, and the deeper layers' by name) made of them. The recorders are cleared."""
    pooled = torch.flatten(model.avgpool(model.features(x)), 1)
    conv1, deeper = recorders
    levels, means = conv1.output
    layers = {"conv1": levels, **{n: r.output for n, r in deeper.items()}}
    made = _Drawn(
        conv1_mean=means.cpu().numpy(),
        conv1_max=levels.high.cpu().numpy(),
        grids={n: pictures.grey_grids(a.levels, grids[n]) for n, a in layers.items()},
        ranges={n: a.layer_range.cpu().numpy() for n, a in layers.items()},
    )
    for recorder in (conv1, *deeper.values()):
        recorder.clear()
    return pooled, made


@contextlib.contextmanager
def _recorders(
    model: torch.nn.Module, grids: dict[str, Grid], normalize: str
) -> Iterator[tuple[Conv1Recorder, dict[str, LayerRecorder], CamRecorder]]:
    """The hooks that record what the build keeps of each pass: conv1's levels and means, the
    other drawn layers' levels (by name), and what Grad-CAM needs. Removed on leaving the block."""

    def record(output: torch.Tensor) -> pictures.Activations:
        return pictures.activations(output, normalize=normalize)

    def record_conv1(output: torch.Tensor) -> tuple[pictures.Activations, torch.Tensor]:
        return record(output), output.mean(dim=(2, 3))

    with contextlib.ExitStack() as stack:
        conv1 = stack.enter_context(Conv1Recorder(model, record_conv1))
        deeper = {
            name: stack.enter_context(LayerRecorder(model, name, record))
            for name in grids
            if name != "conv1"
        }
        yield conv1, deeper, stack.enter_context(CamRecorder(model))


def run_batches(
    loaded: LoadedModel,
    decoding: Decoding,
    device: torch.device,
    grids: dict[str, Grid],
    *,
    normalize: str = "map",
) -> Iterator[tuple[BatchOutput | None, list[DecodeFailure]]]:
    """Run every decoded photo through the model on ``device``.

    Yields, per batch, what the model made of the photos that decoded (None when none did) and
    why the others did not. ``grids`` names the layers to draw ('conv1' first)
    and their layouts; ``normalize`` is as ``--normalize``: 'map' or 'layer'.
    """
    model = prepare(loaded.model, device)
    with _recorders(model, grids, normalize) as (conv1, deeper, cam), torch.inference_mode():
        recorders = (conv1, deeper)
        part = CONV_PART if device.type == "cpu" else None

        def outcome(batch: DecodedBatch) -> BatchOutput:
            """What the model made of one batch. Its tensors are freed on return (the hooks'
            records too), so that the next batch's can take their place."""
            pieces = [
                _convolutions(model, model_inputs(p, loaded.transforms, device), recorders, grids)
                for p in batch.pixels.split(part or len(batch.pixels))
            ]
            logits = model.classifier(torch.cat([pooled for pooled, _ in pieces]))
            made = _Drawn.joined([made for _, made in pieces])
            top = min(TOPK, logits.shape[1])
            top_probs, top_indices = torch.softmax(logits.float(), dim=1).topk(top, dim=1)
            output = BatchOutput(
                indices=batch.indices,
                sizes=batch.sizes,
                top_indices=top_indices.cpu().numpy(),
                top_probs=top_probs.cpu().numpy(),
                crops=batch.crops,
                conv1_mean=made.conv1_mean,
                conv1_max=made.conv1_max,
                cams=cam.cams(top_indices).cpu().numpy(),
                grids=made.grids,
                ranges=made.ranges,
                codes=cam.codes().to(torch.float16).cpu().numpy(),
            )
            cam.clear()
            return output

        for batch in decoding:
            yield (None if batch.pixels is None else outcome(batch)), batch.failures
