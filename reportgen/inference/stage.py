"""The inference stage: run the model over the photos the cache lacks, filling the cache.

Records and pictures go into the cache as each batch finishes, so whatever finished before an
interruption is reused by the next build.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import forked
from ..cache import HEAT_MAP_PREFIX, ResultCache
from ..config import (
    CPU_BATCH_SIZE,
    CPU_WORKERS,
    CPU_WORKERS_LARGE,
    GPU_BATCH_SIZE,
    LARGE_PHOTO_BYTES,
    MAX_ENCODERS,
    MAX_GPU_WORKERS,
    Config,
    usable_cores,
)
from ..decoding import preprocess
from ..errors import BuildError
from ..files import size_text, write_atomic
from ..heap import collector_paused, hand_back
from ..layout import layer_grids
from ..progress import bar
from ..records import LayerRange, ModelEntry, PhotoRecord, Prediction, Source, floats
from ..weights import WeightsSpec
from . import memory, pictures
from .memory import WarmHeap
from .model import LoadedModel, conv1_kernels, load_model, pick_device, summarize
from .pipeline import BatchOutput, DecodeFailure, Decoding, PhotoDataset, run_batches

log = logging.getLogger("reportgen")

MIN_BATCH_SIZE = 8
# Batches whose pictures may wait to be encoded while the model runs on (bounds memory).
PENDING_BATCHES = 2


@dataclass(frozen=True)
class ModelRun:
    """What running the model left besides the cache's new entries."""

    model: ModelEntry
    device: str
    load_seconds: float
    """Time to load and describe the model (the rest of the stage is inference)."""
    unread: dict[str, str]
    """Why photos that could not be read as they were found were left out, by cache key (not
    kept in the cache: the next build tries again)."""
    store_seconds: float = 0.0
    """Of the inference, the time this process spent writing results into the cache (the Ray
    engine's driver; the local engine does it on a thread, beside the model)."""


def run_model(
    weights: WeightsSpec,
    todo: Sequence[Source],
    keys: Mapping[str, str],
    cache: ResultCache,
    config: Config,
    *,
    progress: bool,
    described: ModelEntry | None = None,
) -> ModelRun:
    """Load the model, describe it, and fill the cache for every photo in ``todo``.

    Args:
        keys: each photo's cache key, by its relative path.
        described: the model's description from the cache, when it has one (not redrawn).

    Raises:
        ReportgenError: the device is unavailable, the weights cannot be loaded, a worker died.
    """
    start, device = time.perf_counter(), pick_device(config.device)
    batch_size, workers = defaults(config, device, todo)
    _warn_of_excess(config, device, min(batch_size, len(todo)), workers)
    photos = PhotoDataset(
        todo,
        max_pixels=config.max_pixels,
        allow_truncated=config.allow_truncated,
        decode=config.decode,
    )
    # Processes that encode are forked first: before the decoding workers' threads and CUDA.
    encoder = Encoder(cache, encoder_processes(device, workers) if todo else 0)
    try:
        with (
            encoder,
            Decoding(
                photos, batch_size=batch_size, workers=workers, pin=device.type == "cuda"
            ) as decoding,
        ):
            # The workers are decoding already, while torchvision is imported and the model loaded.
            with collector_paused():  # torchvision's import and the model's modules
                loaded = load_model(weights)
            preprocess.check_matches(loaded.transforms)
            entry = described or describe(loaded, cache)
            loaded_at = time.perf_counter()
            unread: dict[str, str] = {}
            if todo:
                grids = layer_grids(config.layers, entry.summary.output_shapes)
                batches = run_batches(loaded, decoding, device, grids, normalize=config.normalize)
                todo_keys = [keys[s.rel] for s in todo]
                unread = _fill_cache(batches, todo_keys, entry.categories, encoder, progress)
                del batches
            del loaded
    except RuntimeError as exc:
        if (said := _said(exc, device, batch_size)) is None:
            raise
        raise said from exc
    # The model and its last batches are gone: their memory goes back to the system before the
    # rest of the build (neighbours, map, pages) takes its own.
    hand_back()
    return ModelRun(entry, str(device), loaded_at - start, unread)


def _said(exc: RuntimeError, device: torch.device, batch_size: int) -> BuildError | None:
    """The error a user is told for what went wrong running the model (``exc``), where it is one
    of theirs to act on: a decoding worker that died, or memory the batch did not fit in."""
    text = str(exc)
    # torch reports a dead worker from its SIGCHLD handler, wherever the main process is.
    if "DataLoader worker" in text:
        return BuildError(f"a photo-decoding worker process died ({exc})")
    # CUDA's is an OutOfMemoryError; the CPU allocator's and MPS's say it in their words.
    if not isinstance(exc, torch.OutOfMemoryError) and not re.search(
        r"can't allocate memory|out of memory", text
    ):
        return None
    asked = re.search(r"allocate (\d+(?:\.\d+)? ?[KMGT]?i?B|\d+ bytes)", text)
    more = f" (it asked for {asked.group(1)} more)" if asked else ""
    gpu = device.type != "cpu"
    if batch_size > 1:
        advice = f"pass a --batch-size under {batch_size}"
    else:
        advice = "run it with --device cpu" if gpu else "free some memory, or use a larger machine"
    return BuildError(
        f"{'the GPU' if gpu else 'this machine'} ran out of memory running the model over a batch"
        f" of {batch_size} photo{'s' if batch_size > 1 else ''}{more}; {advice}"
    )


def describe(loaded: LoadedModel, cache: ResultCache) -> ModelEntry:
    """The model page's facts and the kernels picture, stored in the cache."""
    kernels = pictures.kernel_grid(conv1_kernels(loaded.model))
    write_atomic(cache.kernels_picture, pictures.encode_png(kernels))
    entry = ModelEntry(summary=summarize(loaded), categories=loaded.categories)
    cache.store_model(entry)
    return entry


def defaults(config: Config, device: torch.device, todo: Sequence[Source] = ()) -> tuple[int, int]:
    """Batch size and worker count, where the user left them to us.

    Each worker decodes whole batches, so a batch is never so large that some workers get none:
    on a GPU machine, 128 phone photos in the default batch of 128 went to one worker of eight
    (4.5 photos/s on an H200 machine's 16 cores).
    """
    gpu = device.type != "cpu"
    cores = usable_cores()
    if config.workers is not None:
        workers = config.workers
    elif gpu:
        workers = min(MAX_GPU_WORKERS, max(1, cores - 1))
    else:
        sizes = sorted(s.size for s in todo)
        large = bool(sizes) and sizes[len(sizes) // 2] >= LARGE_PHOTO_BYTES
        workers = min(cores, CPU_WORKERS_LARGE) if large else CPU_WORKERS
    if config.batch_size:
        batch = config.batch_size
    else:
        batch = GPU_BATCH_SIZE if gpu else CPU_BATCH_SIZE
        # Two batches per worker at least, while batches stay at 8 photos or more.
        batch = min(batch, max(MIN_BATCH_SIZE, -(-len(todo) // (2 * max(1, workers)))))
    # A worker with no batch to decode would be a process started for nothing (--workers 999
    # over 5 photos started 999).
    return batch, min(workers, -(-len(todo) // batch))


def _warn_of_excess(config: Config, device: torch.device, batch: int, workers: int) -> None:
    """Say so where ``--workers`` starts more decoding workers than there are cores, or where
    ``--batch-size`` makes batches (of ``batch`` photos, the folder's photos being fewer) that
    would take more memory than the system has free: on the CPU its OOM killer would stop the
    build with no word (on a GPU, running out is the error :func:`_said` words)."""
    if workers > (cores := usable_cores()):
        log.warning(
            "--workers %d starts %d decoding workers on %d core%s: those past one a core decode"
            " no faster, and each takes memory",
            config.workers,
            workers,
            cores,
            "" if cores == 1 else "s",
        )
    if not config.batch_size or device.type != "cpu":
        return
    each, free = memory.photo_bytes(len(config.layers)), memory.available_bytes()
    if free is not None and (need := memory.BUILD_BYTES + batch * each) > free:
        fits = (free - memory.BUILD_BYTES) // each  # of an estimate: said as a power of 2
        fits = 1 << (fits.bit_length() - 1) if fits > 0 else 0
        log.warning(
            "--batch-size %d makes the build need about %s, more than the %s free here: the"
            " system may stop it; %s",
            config.batch_size,
            size_text(need),
            size_text(free),
            f"a --batch-size of {fits} fits" if fits else "free some memory first",
        )


def encoder_processes(device: torch.device, workers: int) -> int:
    """How many processes encode the pictures and write the cache beside the model: 0 for one
    thread of the build's own process.

    On the CPU the model wants every core, and one thread overlaps the encoding with it. On a GPU
    the model is fast enough for that thread to set the pace: on an H100 machine the model's stage
    ran at about 610 photos/s, where decoding allowed 1,070 to 1,340, the thread waiting for
    Python's lock on the main thread's work (more threads gave nothing). Processes each have their
    own; they take the cores the decoding workers leave.
    """
    if device.type == "cpu" or not forked.available():
        return 0
    spare = usable_cores() - workers - 1
    return min(MAX_ENCODERS, spare) if spare >= 2 else 0


class Encoder:
    """Where each batch's pictures are encoded and stored in the cache, while the model runs on:
    one thread of this process, or ``processes`` forked copies of it, each batch going to the next
    copy in turn.

    The copies are forked on construction: before the decoding workers' threads start and before
    CUDA is used, as the decoding workers are. They write only the cache's files for the keys they
    are handed, each file atomically, so a copy's work is the thread's. Use as a context manager.
    """

    def __init__(self, cache: ResultCache, processes: int = 0) -> None:
        self.cache = cache
        self._capacity = processes or PENDING_BATCHES
        """Batches that may wait for the encoder while the model runs the next."""
        self._pending: deque[Future[None] | _Stored] = deque()
        self._pool = forked.Pool(self._store, processes) if processes else None
        self._thread = (
            None
            if processes
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="reportgen-pictures")
        )

    def submit(self, keys: Sequence[str], output: BatchOutput, categories: Sequence[str]) -> None:
        """Store one batch's results, soon: first waits while as many batches as the encoder
        holds are waiting for it (raising what storing one of them raised)."""
        while len(self._pending) >= self._capacity:
            self._pending.popleft().result()
        if self._thread is not None:
            stored = self._thread.submit(_store_batch, keys, output, categories, self.cache)
        else:  # the copies
            stored = _Stored(self._pool.submit((keys, output, categories)), self.cache)
        self._pending.append(stored)

    def wait(self) -> None:
        """Wait for every batch handed over to be stored (raising what storing one raised)."""
        while self._pending:
            self._pending.popleft().result()

    def _store(self, task: tuple[Sequence[str], BatchOutput, Sequence[str]]) -> int:
        """In a copy: store one batch; how many photos it stored."""
        keys, output, categories = task
        _store_batch(keys, output, categories, self.cache)
        return len(keys)

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Let the batches handed over be stored (the thread's queue, or each copy's batch), and
        count those the copies stored, so the count is whole when the build stops early."""
        if self._thread is not None:
            self._thread.shutdown()
        if self._pool is not None:
            self._pool.close()
            for stored in self._pending:
                stored.count()


class _Stored:
    """A batch handed to one of the encoder's copies: :meth:`result` waits for it (and counts its
    photos as stored, as the thread's store does in this process)."""

    def __init__(self, answer: forked.Answer, cache: ResultCache) -> None:
        self._answer, self._cache = answer, cache

    def result(self) -> None:
        self._cache.stored += self._answer.result()

    def count(self) -> None:
        """Count the batch's photos if the copy stored them; when it did not, the build is
        stopping already for what stopped it (the batches it waited for raise their errors)."""
        with contextlib.suppress(Exception):
            self.result()


def _fill_cache(
    batches: Iterator[tuple[BatchOutput | None, list[DecodeFailure]]],
    keys: Sequence[str],
    categories: Sequence[str],
    encoder: Encoder,
    progress: bool,
) -> dict[str, str]:
    """Store what the model made of each batch: the encoder stores it while the model runs the
    next (JPEG encoding releases the GIL, so on the CPU one thread overlaps it with the forward
    pass; see :class:`Encoder`).

    Returns why photos that could not be read as they were found were left out, by key.
    """
    unread: dict[str, str] = {}
    shown = bar("inference", progress=progress, total=len(keys), at_once=True)
    with WarmHeap() as memory:
        try:
            for output, failures in batches:
                done = len(failures)
                for failure in failures:
                    if failure.lasting:
                        encoder.cache.store_unusable(keys[failure.index], failure.reason)
                    else:
                        unread[keys[failure.index]] = failure.reason
                if output is not None:
                    batch_keys = [keys[i] for i in output.indices]
                    encoder.submit(batch_keys, output, categories)
                    done += len(batch_keys)
                    del output  # a copy has it: not kept while the model runs the next batch
                shown.update(done)
                memory.check()
            encoder.wait()
        finally:
            shown.close()
    return unread


def _store_batch(
    keys: Sequence[str], output: BatchOutput, categories: Sequence[str], cache: ResultCache
) -> None:
    """Encode one batch's pictures into the cache, then store each photo's record."""
    for result in encode_batch(keys, output, categories):
        store_result(cache, result)


@dataclass(frozen=True)
class PhotoResult:
    """One photo's finished result: its record and its pictures' bytes, by kind."""

    key: str
    record: PhotoRecord
    heat_maps: tuple[str, ...]
    """Grad-CAM of each top class, in the order of the record's ``top5``: data: URIs of small
    PNGs, kept in the record's cache entry."""
    pictures: dict[str, bytes]
    codes: bytes
    """The photo's fc7 code: 4096 float16 numbers."""


def encode_batch(
    keys: Sequence[str], output: BatchOutput, categories: Sequence[str]
) -> Iterator[PhotoResult]:
    """Each photo of one batch as a finished result: pictures encoded, record made."""
    made = zip(keys, _records(output, categories), _heat_maps(output), strict=True)
    for row, (key, record, heat_maps) in enumerate(made):
        grids = {
            layer: pictures.encode_jpeg(grids[row], pictures.GRID_QUALITY)
            for layer, grids in output.grids.items()
        }
        pictures_ = {"input": output.crops[row], **grids}
        yield PhotoResult(key, record, heat_maps, pictures_, output.codes[row].tobytes())


def store_result(cache: ResultCache, result: PhotoResult) -> None:
    """Keep a finished result: its pictures and code first, then its record (which marks it
    complete)."""
    for kind, data in result.pictures.items():
        write_atomic(cache.picture(result.key, kind), data)
    write_atomic(Path(cache.code_name(result.key)), result.codes)
    cache.store(result.key, result.record, result.heat_maps)


def _heat_maps(output: BatchOutput) -> Iterator[tuple[str, ...]]:
    """Each photo's Grad-CAM heat maps, from one batch's output, as its page shows them."""
    heat, per_photo = pictures.heat_pngs(output.cams), output.cams.shape[1]
    for row in range(len(output.sizes)):
        pngs = heat[row * per_photo : (row + 1) * per_photo]
        yield tuple(HEAT_MAP_PREFIX + base64.b64encode(png).decode() for png in pngs)


def _records(output: BatchOutput, categories: Sequence[str]) -> Iterator[PhotoRecord]:
    """Each photo's record, from one batch's output.

    Numbers are kept whole (float32's values, exactly): whatever shows them rounds them once.
    """
    conv1_mean = output.conv1_mean.tolist()
    conv1_max = output.conv1_max.tolist()
    ranges = {layer: r.tolist() for layer, r in output.ranges.items()}
    top_probs = output.top_probs.tolist()
    for row, (width, height, frames) in enumerate(output.sizes):
        yield PhotoRecord(
            width=width,
            height=height,
            frames=frames,
            top5=tuple(
                Prediction(i, categories[i], p)
                for i, p in zip(output.top_indices[row].tolist(), top_probs[row], strict=True)
            ),
            conv1_mean=floats(conv1_mean[row]),
            conv1_max=floats(conv1_max[row]),
            ranges=tuple(LayerRange(n, *r[row]) for n, r in ranges.items()),
        )
