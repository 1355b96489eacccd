"""The part of a build that needs torch: run the model over the photos the cache lacks.

Results and pictures go straight into the cache as each batch finishes, so whatever finished
before an interruption is reused by the next build.
"""

from __future__ import annotations

import base64
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import infer, layout, pictures, preprocess
from ._memory import WarmHeap
from .cache import ModelEntry, ResultCache, StoredResult
from .config import Config
from .errors import BuildError
from .model import LoadedModel, conv1_kernels, load_model, pick_device, summarize
from .output import write_atomic
from .records import Source
from .weights import WeightsSpec

CPU_BATCH_SIZE = 64  # measured best on 2 cores: 16 -> 84, 32 -> 89, 64 -> 94, 128 -> 91 photos/s
GPU_BATCH_SIZE = 128
PROBABILITY_DIGITS = 6
STAT_DIGITS = 4
# Batches whose pictures may wait to be encoded while the model runs on (bounds memory).
PENDING_BATCHES = 2


@dataclass(frozen=True)
class Computed:
    model: ModelEntry
    device: str
    load_seconds: float
    """Time to load and describe the model (the rest of compute() is inference)."""


def compute(
    weights: WeightsSpec,
    todo: Sequence[Source],
    keys: Mapping[str, str],
    cache: ResultCache,
    config: Config,
    *,
    progress: bool,
    described: ModelEntry | None = None,
) -> Computed:
    """Load the model, describe it, and fill the cache for every photo in ``todo``.

    Args:
        keys: each photo's cache key, by its relative path.
        described: the model's description from the cache, when it has one (not redrawn).

    Raises:
        ReportgenError: the device is unavailable, the weights cannot be loaded, a worker died.
    """
    start = time.perf_counter()
    device = pick_device(config.device)
    batch_size, workers = defaults(config, device)
    decoding = infer.Decoding(
        todo,
        batch_size=batch_size,
        workers=workers,
        pin=device.type == "cuda",
        max_pixels=config.max_pixels,
        allow_truncated=config.allow_truncated,
    )
    try:
        with decoding:
            # The workers are decoding already, while torchvision is imported and the model loaded.
            loaded = load_model(weights)
            preprocess.check_matches(loaded.transforms)
            entry = described or _describe(loaded, cache)
            loaded_at = time.perf_counter()
            if todo:
                _infer(loaded, decoding, todo, keys, cache, config, device, progress)
    except RuntimeError as exc:
        # torch reports a dead worker from its SIGCHLD handler, wherever the main process is.
        if "DataLoader worker" in str(exc):
            raise BuildError(f"a photo-decoding worker process died ({exc})") from exc
        raise
    return Computed(entry, str(device), loaded_at - start)


def _describe(loaded: LoadedModel, cache: ResultCache) -> ModelEntry:
    """The model page's facts and the kernels picture, stored in the cache."""
    kernels = pictures.kernel_grid(conv1_kernels(loaded.model))
    write_atomic(cache.kernels_picture, pictures.encode_png(kernels))
    summary = summarize(loaded)
    entry = ModelEntry(
        summary=summary,
        categories=loaded.categories,
        kernels_size=(kernels.shape[1], kernels.shape[0]),
        grid_size=layout.grid_size(summary.conv1_output_shape[0], summary.conv1_output_shape[1:]),
        kernel_scale=pictures.KERNEL_SCALE,
    )
    cache.store_model(entry)
    return entry


def defaults(config: Config, device: torch.device) -> tuple[int, int]:
    """Batch size and worker count, where the user left them to us."""
    gpu = device.type != "cpu"
    batch = config.batch_size or (GPU_BATCH_SIZE if gpu else CPU_BATCH_SIZE)
    if config.workers is not None:
        return batch, config.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # On the CPU the model wants the cores; one worker keeps decoding off its critical path.
    return batch, (min(8, max(1, (cores or 1) - 1)) if gpu else 1)


def _infer(
    loaded: LoadedModel,
    decoding: infer.Decoding,
    todo: Sequence[Source],
    keys: Mapping[str, str],
    cache: ResultCache,
    config: Config,
    device: torch.device,
    progress: bool,
) -> None:
    """Run the model over ``todo``; each batch's pictures are encoded while the next one runs."""
    pending: deque[Future[None]] = deque()
    bar = tqdm(total=len(todo), desc="inference", unit="photo", disable=not progress)
    results = infer.run(
        loaded, decoding, device, layers=config.layers, shared=config.normalize == "layer"
    )
    # JPEG encoding releases the GIL, so one thread overlaps it with the next forward pass.
    encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reportgen-pictures")
    with WarmHeap() as memory, encoder:
        try:
            for result in results:
                for index, reason in result.errors:
                    cache.store(keys[todo[index].rel], StoredResult(error=reason))
                batch_keys = [keys[todo[i].rel] for i in result.indices]
                pending.append(encoder.submit(_store_batch, batch_keys, result, cache))
                while len(pending) > PENDING_BATCHES:
                    pending.popleft().result()
                bar.update(len(result.indices) + len(result.errors))
                memory.check()
            while pending:
                pending.popleft().result()
        finally:
            bar.close()


def _store_batch(keys: Sequence[str], result: infer.BatchResult, cache: ResultCache) -> None:
    """Encode one batch's pictures into the cache, then record each photo's result."""
    heat, per_photo = pictures.heat_pngs(result.cams), result.cams.shape[1]
    # Rounded for the whole batch at once; float64 first, so 0.1234 is stored as 0.1234.
    conv1_mean = _rounded(result.conv1_mean, STAT_DIGITS)
    conv1_max = _rounded(result.conv1_max, STAT_DIGITS)
    ranges = {layer: _rounded(r, STAT_DIGITS) for layer, r in result.ranges.items()}
    top_probs = _rounded(result.top_probs, PROBABILITY_DIGITS)
    for row, key in enumerate(keys):
        write_atomic(cache.picture(key, "input"), result.crops[row])
        write_atomic(cache.picture(key, "conv1"), pictures.encode_jpeg(result.grids[row]))
        for layer, grids in result.layer_grids.items():
            write_atomic(cache.picture(key, layer), pictures.encode_jpeg(grids[row]))
        width, height, frames = result.sizes[row]
        cams = tuple(
            "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            for png in heat[row * per_photo : (row + 1) * per_photo]
        )
        stored = StoredResult(
            top5=tuple(zip(result.top_indices[row].tolist(), top_probs[row], strict=True)),
            width=width,
            height=height,
            frames=frames,
            cams=cams,
            conv1_mean=tuple(conv1_mean[row]),
            conv1_max=tuple(conv1_max[row]),
            ranges={layer: (r[row][0], r[row][1]) for layer, r in ranges.items()},
        )
        cache.store(key, stored)


def _rounded(values: np.ndarray, digits: int) -> list[list[float]]:
    return np.round(values.astype(np.float64), digits).tolist()
