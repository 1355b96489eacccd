"""The build: discover → infer → render pictures → write pages."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import infer, naming, pictures
from ._memory import RssCeiling
from .config import Config
from .discover import discover
from .errors import BuildError, InputError, UsageError
from .model import (
    LoadedModel,
    conv1_kernels,
    device_available,
    load_model,
    pick_device,
    summarize,
)
from .output import OutputFolder, Staging
from .pages import PageWriter, SiteContent, predictions_json
from .records import ImageRecord, Prediction, Skipped, Source

log = logging.getLogger("reportgen")

CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 128
PROBABILITY_DIGITS = 6
# Batches whose pictures may wait to be encoded while the model runs on (bounds memory).
PENDING_BATCHES = 2


@dataclass(frozen=True)
class BuildResult:
    """What a build produced."""

    out_dir: Path
    photos: tuple[ImageRecord, ...]
    skipped: tuple[Skipped, ...]
    device: str


def build(config: Config, *, force: bool = False, progress: bool = False) -> BuildResult:
    """Build the site described by ``config``.

    Args:
        config: a validated configuration (``input_dir`` must be set).
        force: build into a non-empty folder that is not a previous site, replacing same-named
            files.
        progress: show progress bars on stderr.

    Raises:
        ReportgenError: for anything the user can fix; the previous site is left whole.
    """
    input_dir = _check_input(config.input_dir)
    out = OutputFolder(config.out_dir)
    out.check(input_dir=input_dir, force=force)
    device = _device(config.device)

    # First gather everything about every photo.
    sources, skipped = discover(input_dir, exclude=config.out_dir)
    for item in skipped:
        log.warning("skipped %s: %s", item.source, item.reason)
    if not sources:
        raise InputError(f"no images found in {str(input_dir)!r}")
    loaded = load_model(config.weights, progress=progress)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    summary = summarize(loaded)

    staging = out.begin()
    photos, unreadable = _infer_and_render(loaded, sources, device, config, staging, progress)
    skipped = sorted([*skipped, *unreadable], key=lambda s: s.source)
    if not photos:
        raise InputError(
            f"none of the {len(sources)} image files in {str(input_dir)!r} could be read"
        )
    kernels = pictures.kernel_grid(conv1_kernels(loaded.model))
    pictures.save(kernels, staging.path(naming.KERNELS_PICTURE))

    # Then write every page, and swap the new site in.
    site = SiteContent(
        photos=photos,
        skipped=skipped,
        model=summary,
        kernels_size=(kernels.shape[1], kernels.shape[0]),
        grid_size=_grid_size(summary.conv1_output_shape),
        kernel_scale=pictures.KERNEL_SCALE,
        per_page=config.per_page,
    )
    _write_pages(site, staging, progress)
    staging.commit(force=force, first=(naming.PICTURES_DIR + "/",), last=("index.html",))
    return BuildResult(config.out_dir, tuple(photos), tuple(skipped), str(device))


def _check_input(input_dir: Path | None) -> Path:
    """The input folder, which must exist."""
    if input_dir is None:
        raise UsageError("no input folder given (reportgen build INPUT_DIR)")
    if not input_dir.exists():
        raise UsageError(f"input folder {str(input_dir)!r} does not exist")
    if not input_dir.is_dir():
        raise UsageError(f"input {str(input_dir)!r} is not a folder")
    return input_dir


def _device(requested: str) -> torch.device:
    if not device_available(requested):
        raise UsageError(f"--device {requested} was asked for but is not available here")
    return pick_device(requested)


def _grid_size(conv1_shape: Sequence[int]) -> tuple[int, int]:
    """Width and height of the conv1 grid picture for maps of ``conv1_shape`` (C, H, W)."""
    channels, height, width = conv1_shape
    rows = -(-channels // pictures.GRID_COLUMNS)
    gap = pictures.GRID_GAP
    return (
        pictures.GRID_COLUMNS * (width + gap) - gap,
        rows * (height + gap) - gap,
    )


def _defaults(config: Config, device: torch.device) -> tuple[int, int]:
    """Batch size and worker count, where the user left them to us."""
    gpu = device.type != "cpu"
    batch = config.batch_size or (GPU_BATCH_SIZE if gpu else CPU_BATCH_SIZE)
    if config.workers is not None:
        workers = config.workers
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        # On the CPU the model wants the cores; one worker keeps decoding off its critical path.
        workers = min(8, max(1, (cores or 1) - 1)) if gpu else 1
    return batch, workers


def _infer_and_render(
    loaded: LoadedModel,
    sources: Sequence[Source],
    device: torch.device,
    config: Config,
    staging: Staging,
    progress: bool,
) -> tuple[list[ImageRecord], list[Skipped]]:
    """Run the model over every photo; each batch's pictures are encoded while the next runs."""
    batch_size, workers = _defaults(config, device)
    photos: list[ImageRecord] = []
    skipped: list[Skipped] = []
    pending: deque[Future[None]] = deque()
    memory = RssCeiling()
    bar = tqdm(total=len(sources), desc="inference", unit="photo", disable=not progress)
    results = infer.run(
        loaded,
        sources,
        device,
        batch_size=batch_size,
        workers=workers,
        max_pixels=config.max_pixels,
    )
    # JPEG encoding releases the GIL, so one thread overlaps it with the next forward pass.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reportgen-pictures") as encoder:
        try:
            for result in results:
                for index, reason in result.errors:
                    skipped.append(Skipped(sources[index].rel, reason))
                    log.warning("skipped %s: %s", sources[index].rel, reason)
                batch = [
                    _record(sources[i], result, row, loaded.categories)
                    for row, i in enumerate(result.indices)
                ]
                photos.extend(batch)
                pending.append(encoder.submit(_save_pictures, batch, result, staging))
                while len(pending) > PENDING_BATCHES:
                    pending.popleft().result()
                bar.update(len(result.indices) + len(result.errors))
                memory.check()
            while pending:
                pending.popleft().result()
        except RuntimeError as exc:
            if "DataLoader worker" in str(exc):
                raise BuildError(f"a photo-decoding worker process died: {exc}") from exc
            raise
        finally:
            bar.close()
    photos.sort(key=lambda p: p.source)
    return photos, skipped


def _record(
    source: Source, result: infer.BatchResult, row: int, categories: Sequence[str]
) -> ImageRecord:
    """The record of the photo in ``row`` of a batch."""
    crop_url, conv1_url = naming.photo_pictures(source.sha256)
    width, height, frames = result.sizes[row]
    top5 = tuple(
        Prediction(int(i), categories[int(i)], round(float(p), PROBABILITY_DIGITS))
        for i, p in zip(result.top_indices[row], result.top_probs[row], strict=True)
    )
    return ImageRecord(
        source=source.rel,
        file_size=source.size,
        width=width,
        height=height,
        frames=frames,
        top5=top5,
        page=naming.photo_page(source.rel),
        crop=crop_url,
        conv1=conv1_url,
    )


def _save_pictures(
    records: Sequence[ImageRecord], result: infer.BatchResult, staging: Staging
) -> None:
    """Encode one batch's crops and conv1 grids into the staged site."""
    for row, record in enumerate(records):
        pictures.save(result.crops[row], staging.path(record.crop))
        pictures.save(result.grids[row], staging.path(record.conv1))


def _write_pages(site: SiteContent, staging: Staging, progress: bool) -> None:
    """Every HTML page, the assets and predictions.json."""
    writer = PageWriter(site, staging.write)
    writer.assets()
    writer.page("kernels.html", "kernels.html")
    total_params = sum(layer.parameters for layer in site.model.layers)
    writer.page("model.html", "model.html", total_parameters=total_params)
    for position in tqdm(range(len(site.photos)), desc="pages", unit="page", disable=not progress):
        writer.photo_page(position)
    writer.index_pages()
    staging.write("predictions.json", predictions_json(site))
