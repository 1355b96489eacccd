"""The model stage on a Ray cluster (``--engine ray``), through Ray Data.

The stage is a map over photos, and the cache is keyed by content, so the cluster only has to fill
it: the driver (this process) splits the photos the cache lacks into the very batches the local
engine would make, and hands them to Ray Data:

- **decoding** and the 224x224 crop run as CPU tasks (``Dataset.map``), one batch a task, with the
  local engine's own :class:`~reportgen.inference.pipeline.PhotoDataset`: so the photos must be at
  the same path on every node (a shared file system);
- **the model** (forward pass, conv1 and layer hooks, Grad-CAM, the pictures' encoding) runs in a
  stateful class under ``map_batches``, one model per actor, on a GPU when the cluster has one
  (``num_gpus``) and on CPUs otherwise. The weights go to the object store once, not per batch.
  A worker that dies is replaced and its batch run again, by Ray Data's own defaults (tasks are
  retried, model actors restarted and their calls retried);
- results stream back (``iter_batches``) and the driver writes each photo's pictures and record
  into the cache as it arrives, so a kill loses nothing finished. Pages are then written exactly
  as with the local engine.

The same batches through the same code give the same numbers, so a site built with ``--engine
ray`` is the local engine's, byte for byte (``tests/test_ray.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch

from ..cache import ResultCache, entry_fields, from_entry
from ..config import Config
from ..decoding import preprocess
from ..errors import BuildError
from ..layout import layer_grids
from ..progress import bar
from ..records import ModelEntry, Source
from ..weights import WeightsSpec
from .model import LoadedModel, load_model, model_from_state, preprocessing
from .pipeline import DecodedBatch, DecodeFailure, PhotoDataset, collate, run_batches
from .stage import ModelRun, PhotoResult, defaults, describe, encode_batch, store_result

log = logging.getLogger("reportgen")

CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a cluster's address to answer before saying it cannot be reached."""


def run_model_on_ray(
    weights: WeightsSpec,
    todo: Sequence[Source],
    keys: Mapping[str, str],
    cache: ResultCache,
    config: Config,
    *,
    progress: bool,
    described: ModelEntry | None = None,
) -> ModelRun:
    """:func:`~reportgen.inference.stage.run_model`, with the photos decoded and run through the
    model on a Ray cluster: ``config.ray_address``, else ``$RAY_ADDRESS``, else a local Ray
    started for this build and shut down after it (or the Ray this process already joined).

    Raises:
        BuildError: the cluster cannot be reached, or a worker cannot read a photo that is there.
        ReportgenError: as the local engine's (the weights cannot be loaded, ...).
    """
    import ray

    start = time.perf_counter()
    with _cluster(ray, config.ray_address):
        # Loaded here too: it describes the model, and its weights go to the workers from here.
        loaded = load_model(weights)
        preprocess.check_matches(loaded.transforms)
        entry = described or describe(loaded, cache)
        loaded_at = time.perf_counter()
        unread: dict[str, str] = {}
        device, storing = "cpu", 0.0
        if todo:
            device, unread, storing = _fill_cache(
                ray, loaded, entry, todo, keys, cache, config, progress
            )
    return ModelRun(entry, f"ray ({device})", loaded_at - start, unread, storing)


@contextlib.contextmanager
def _cluster(ray: Any, address: str | None) -> Iterator[None]:
    """Joined to the cluster at ``address`` (or ``$RAY_ADDRESS``, or a local one) for the block.

    Raises:
        BuildError: the cluster does not answer within seconds.
    """
    if ray.is_initialized():  # a caller of the library that runs Ray itself
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address not in ("auto", "local"):
        _check_reachable(address)
    options = {"logging_level": logging.ERROR, "log_to_driver": False}
    # ray.init sets its own SIGTERM handler (sys.exit), for good: the build's own (the CLI's:
    # stop as on Ctrl-C, and say so) is put back.
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise BuildError(f"cannot start or join {where} ({_first_line(exc)})") from exc
    finally:
        if on_sigterm is not None and signal.getsignal(signal.SIGTERM) != on_sigterm:
            signal.signal(signal.SIGTERM, on_sigterm)
    try:
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own, as the local engine does
        with _ray_data_quiet():
            yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _ray_data_quiet() -> Iterator[None]:
    """Ray Data's console lines (each dataset's start, plan and end, and that its progress bars
    are off) left out of the build's output for the block, as the local engine prints none of its
    own; its errors still show, and its log file under Ray's session folder keeps every line."""
    logger = logging.getLogger("ray.data")
    consoles = [
        h
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in consoles]
    for handler in consoles:
        handler.setLevel(max(handler.level, logging.ERROR))
    try:
        yield
    finally:
        for handler, level in zip(consoles, levels, strict=True):
            handler.setLevel(level)


def _check_reachable(address: str) -> None:
    """Fail within seconds, not minutes, when nothing answers at a cluster's address."""
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise BuildError(f"--ray-address {address!r} is not host:port (or ray://host:port)")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BuildError(
            f"cannot reach the Ray cluster at {address!r} ({reason}); check --ray-address or "
            "RAY_ADDRESS, and that the cluster is running"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fill_cache(
    ray: Any,
    loaded: LoadedModel,
    entry: ModelEntry,
    todo: Sequence[Source],
    keys: Mapping[str, str],
    cache: ResultCache,
    config: Config,
    progress: bool,
) -> tuple[str, dict[str, str], float]:
    """Run every photo of ``todo`` through the cluster and store what comes back; the device the
    model ran on, why photos that could not be read now were left out (by key), and the seconds
    spent storing results here."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if config.device != "cpu" else 0
    device = torch.device("cuda" if gpus else "cpu")
    batch_size, _ = defaults(config, device, todo)  # the local engine's batches
    actors = config.workers or gpus or max(1, int(resources.get("CPU", 1)) // 2)
    dataset = _dataset(ray, loaded, entry, todo, keys, config, batch_size, gpus, actors)
    paths = {keys[s.rel]: s.path for s in todo}
    unread: dict[str, str] = {}
    storing = 0.0
    shown = bar("inference (ray)", progress=progress, total=len(todo), at_once=True)
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            started = time.perf_counter()
            for row in _rows(batch, cache.kinds):
                _keep(row, cache, paths, unread)
            storing += time.perf_counter() - started
            shown.update(len(batch["key"]))
    finally:
        shown.close()
    return ("cuda" if gpus else "cpu"), unread, storing


def _dataset(
    ray: Any,
    loaded: LoadedModel,
    entry: ModelEntry,
    todo: Sequence[Source],
    keys: Mapping[str, str],
    config: Config,
    batch_size: int,
    gpus: int,
    actors: int,
) -> Any:
    """The Ray Data pipeline: the local engine's batches, decoded by tasks, run by model actors."""
    chunks = [
        {
            "keys": [keys[s.rel] for s in todo[i : i + batch_size]],
            "paths": [str(s.path) for s in todo[i : i + batch_size]],
            "stamps": json.dumps([list(s.stamp) for s in todo[i : i + batch_size]]),
        }
        for i in range(0, len(todo), batch_size)
    ]
    state = ray.put(loaded.model.state_dict())
    return (
        ray.data.from_items(chunks, override_num_blocks=len(chunks))
        .map(
            _decode_chunk,
            fn_kwargs={
                "max_pixels": config.max_pixels,
                "allow_truncated": config.allow_truncated,
                "decode": config.decode,
            },
            num_cpus=1,
        )
        .map_batches(
            ModelActor,
            fn_constructor_args=(
                [state],
                loaded.weights,
                entry.categories,
                tuple(config.layers),
                config.normalize,
                dict(entry.summary.output_shapes),
                bool(gpus),
            ),
            batch_size=1,  # one decoded batch a call: exactly the local engine's batch
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
        )
    )


def _rows(batch: Mapping[str, np.ndarray], kinds: Sequence[str]) -> Iterator[dict[str, Any]]:
    for i in range(len(batch["key"])):
        yield {
            name: batch[name][i] for name in ("key", "record", "error", "lasting", "codes", *kinds)
        }


def _keep(
    row: dict[str, Any], cache: ResultCache, paths: Mapping[str, Path], unread: dict[str, str]
) -> None:
    """Store one photo's result, or its failure, as the local engine does.

    Raises:
        BuildError: a worker could not read a photo that this machine can: not a shared path.
    """
    key, error = str(row["key"]), str(row["error"])
    if not error:
        record, heat_maps = from_entry(json.loads(str(row["record"])))
        pictures = {kind: bytes(row[kind]) for kind in cache.kinds}
        store_result(cache, PhotoResult(key, record, heat_maps, pictures, bytes(row["codes"])))
    elif bool(row["lasting"]):
        cache.store_unusable(key, error)
    elif error.startswith(_UNREADABLE) and paths[key].is_file():
        raise BuildError(
            f"a Ray worker cannot read {str(paths[key])!r}, which this machine can: with "
            "--engine ray the photos must be at the same path on every node (a shared file "
            "system)"
        )
    else:
        unread[key] = error


_UNREADABLE = "cannot be read now (No such file"


def _decode_chunk(
    chunk: dict[str, Any], *, max_pixels: int | None, allow_truncated: bool, decode: str
) -> dict[str, Any]:
    """One batch decoded on a worker, as the local engine's DataLoader workers decode it."""
    stamps = [tuple(stamp) for stamp in json.loads(chunk["stamps"])]
    sources = [
        Source(path=Path(path), rel="", size=stamp[0], sha256="", stamp=stamp)
        for path, stamp in zip(chunk["paths"], stamps, strict=True)
    ]
    photos = PhotoDataset(
        sources, max_pixels=max_pixels, allow_truncated=allow_truncated, decode=decode
    )
    batch = collate([photos[i] for i in range(len(photos))])
    pixels = batch.pixels.numpy() if batch.pixels is not None else np.zeros((0, 224, 224, 3))
    return {
        "keys": list(chunk["keys"]),
        "indices": batch.indices,
        "pixels": pixels.astype(np.uint8).tobytes(),
        "shape": list(pixels.shape),
        "sizes": json.dumps(batch.sizes),
        "crops": batch.crops,
        "failures": json.dumps([[f.index, f.reason, f.lasting] for f in batch.failures]),
    }


class ModelActor:
    """The model on one worker: loaded once from the object store, then run batch after batch
    exactly as the local engine runs it (:func:`~reportgen.inference.pipeline.run_batches`)."""

    def __init__(
        self,
        state: list[Any],
        weights: WeightsSpec,
        categories: tuple[str, ...],
        layers: tuple[str, ...],
        normalize: str,
        output_shapes: dict[str, tuple[int, ...]],
        gpu: bool,
    ) -> None:
        import ray

        model = model_from_state(ray.get(state[0]))
        self.loaded = LoadedModel(model, preprocessing(), categories, weights)
        self.categories = categories
        self.kinds = ("input", *layers)
        self.normalize = normalize
        self.grids = layer_grids(layers, output_shapes)
        self.device = torch.device("cuda" if gpu else "cpu")

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            name: [] for name in ("key", "record", "error", "lasting", "codes", *self.kinds)
        }
        for i in range(len(batch["keys"])):
            decoded, keys = self._decoded(batch, i)
            for output, _ in run_batches(
                self.loaded, [decoded], self.device, self.grids, normalize=self.normalize
            ):
                if output is not None:
                    chosen = [keys[j] for j in output.indices]
                    for result in encode_batch(chosen, output, self.categories):
                        self._add(out, result.key, result=result)
            for failure in decoded.failures:
                self._add(out, keys[failure.index], failure=failure)
        return out

    def _decoded(self, batch: Mapping[str, np.ndarray], i: int) -> tuple[DecodedBatch, list[str]]:
        shape = tuple(int(n) for n in batch["shape"][i])
        pixels = np.frombuffer(bytes(batch["pixels"][i]), dtype=np.uint8).reshape(shape)
        failures = [DecodeFailure(int(j), str(r), bool(t)) for j, r, t in json.loads(
            str(batch["failures"][i]))]  # fmt: skip
        decoded = DecodedBatch(
            indices=[int(j) for j in batch["indices"][i]],
            pixels=torch.from_numpy(pixels.copy()) if shape[0] else None,
            sizes=[tuple(size) for size in json.loads(str(batch["sizes"][i]))],
            crops=[bytes(crop) for crop in batch["crops"][i]],
            failures=failures,
        )
        return decoded, [str(key) for key in batch["keys"][i]]

    def _add(
        self,
        out: dict[str, list[Any]],
        key: str,
        *,
        result: PhotoResult | None = None,
        failure: DecodeFailure | None = None,
    ) -> None:
        out["key"].append(key)
        record = json.dumps(entry_fields(result.record, result.heat_maps)) if result else ""
        out["record"].append(record)
        out["error"].append(failure.reason if failure else "")
        out["lasting"].append(bool(failure and failure.lasting))
        out["codes"].append(result.codes if result else b"")
        for kind in self.kinds:
            out[kind].append(result.pictures[kind] if result else b"")
