"""The build: discover → infer → render pictures → write pages.

Inference and picture rendering live in :mod:`reportgen.compute`, imported only when some photo
is missing from the cache: a rebuild with nothing new never imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import naming
from .cache import ModelEntry, ResultCache, StoredResult, fingerprint
from .charts import CHART_NAMES, chart_key, draw
from .config import Config
from .discover import discover
from .errors import InputError, UsageError
from .folder import FolderSummary, ground_truth, kernel_views, summarize_folder
from .layout import CONV_LAYERS, columns_for, grid_size
from .output import OutputFolder, Staging, write_atomic
from .pages import PageWriter, SiteContent, predictions_csv, predictions_json, search_index
from .records import ImageRecord, LayerPicture, ModelSummary, Prediction, Skipped, Source
from .weights import WeightsSpec, resolve_weights

log = logging.getLogger("reportgen")


@dataclass(frozen=True)
class BuildResult:
    """What a build produced."""

    out_dir: Path
    photos: tuple[ImageRecord, ...]
    skipped: tuple[Skipped, ...]
    computed: int
    """Photos run through the model by this build (the rest came from the cache)."""
    reused: int
    device: str | None
    """Where the model ran; None when it was not needed."""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds spent in each stage: discover, import torch, load model, inference, summary,
    pages, commit (import, load and inference only when the model ran)."""


def build(config: Config, *, progress: bool = False) -> BuildResult:
    """Build the site described by ``config``.

    Args:
        config: a validated configuration (``input_dir`` must be set).
        progress: show progress bars on stderr.

    Raises:
        ReportgenError: for anything the user can fix; the previous site is left whole.
    """
    input_dir = _check_input(config.input_dir)
    out = OutputFolder(config.out_dir)
    out.check(input_dir=input_dir, force=config.force)
    clock = _Stopwatch()

    # First gather everything about every photo: from the cache, or from the model.
    sources, unreadable = discover(input_dir, exclude=config.out_dir)
    if not sources and not unreadable:
        raise InputError(f"no images found in {str(input_dir)!r}")
    weights = resolve_weights(config.weights, progress=progress)
    for warning in weights.warnings:
        log.warning("%s", warning)
    kinds = ("input", *config.layers)
    cache = ResultCache(config.cache or out.state / "cache", _fingerprint(weights, config), kinds)
    keys = {s.rel: cache.key(s.sha256) for s in sources}
    stored = {} if config.full else {s.rel: cache.load(keys[s.rel]) for s in sources}
    todo = [s for s in sources if stored.get(s.rel) is None]
    model = None if config.full else cache.load_model()
    device = None
    clock.lap("discover")
    if todo or model is None:
        from .compute import compute  # torch is imported here, and only here

        clock.lap("import torch")
        computed = compute(weights, todo, keys, cache, config, progress=progress, described=model)
        model, device = computed.model, computed.device
        clock["load model"] = computed.load_seconds
        stored.update((s.rel, cache.load(keys[s.rel])) for s in todo)
    clock.lap("inference")
    photos, skipped = _collect(sources, keys, stored, model)
    skipped = sorted([*unreadable, *skipped], key=lambda s: s.source)
    for item in skipped:
        log.warning("skipped %s: %s", item.source, item.reason)
    if not photos:
        raise InputError(f"none of the image files in {str(input_dir)!r} could be read")
    truth, problems = ground_truth(input_dir, [p.source for p in photos], model.categories)
    for problem in problems:
        log.warning("%s", problem)
    if truth:
        photos = [dataclasses.replace(p, truth=truth.get(p.source)) for p in photos]
    summary = summarize_folder(photos)
    charts = _charts(photos, summary, cache)
    clock.lap("summary")

    # Then write every page, and swap the new site in.
    site = SiteContent(
        photos=photos,
        skipped=skipped,
        model=_describe_weights(model, weights),
        kernels_size=model.kernels_size,
        grid_size=model.grid_size,
        kernel_scale=model.kernel_scale,
        per_page=config.per_page,
        kernels=kernel_views(photos),
        normalize=config.normalize,
        summary=summary,
        charts={name: f"{naming.PICTURES_DIR}/summary-{name}.png" for name in charts},
        chart_sizes={name: _png_size(path) for name, path in charts.items()},
    )
    staging = out.begin()
    _stage_pictures(photos, keys, cache, charts, staging)
    _write_pages(site, staging, progress)
    clock.lap("pages")
    staging.commit(force=config.force, first=(naming.PICTURES_DIR + "/",), last=("index.html",))
    if config.cache is None:
        cache.prune(set(keys.values()), charts=set(charts.values()))
    clock.lap("commit")
    return BuildResult(
        out_dir=config.out_dir,
        photos=tuple(photos),
        skipped=tuple(skipped),
        computed=len(todo),
        reused=len(sources) - len(todo),
        device=device,
        timings=clock.laps,
    )


class _Stopwatch:
    """Seconds between successive laps, by name."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()
        self._manual = 0.0

    def lap(self, name: str) -> None:
        """Record the time since the last lap, less what was recorded by hand meanwhile."""
        now = time.perf_counter()
        self.laps[name] = now - self._last - self._manual
        self._last, self._manual = now, 0.0

    def __setitem__(self, name: str, seconds: float) -> None:
        self.laps[name] = seconds
        self._manual += seconds


def _check_input(input_dir: Path | None) -> Path:
    """The input folder, which must exist."""
    if input_dir is None:
        raise UsageError("no input folder given (reportgen build INPUT_DIR)")
    if not input_dir.exists():
        raise UsageError(f"input folder {str(input_dir)!r} does not exist")
    if not input_dir.is_dir():
        raise UsageError(f"input {str(input_dir)!r} is not a folder")
    return input_dir


def _fingerprint(weights: WeightsSpec, config: Config) -> str:
    return fingerprint(
        weights,
        max_pixels=config.max_pixels,
        allow_truncated=config.allow_truncated,
        layers=config.layers,
        normalize=config.normalize,
    )


def _collect(
    sources: list[Source],
    keys: dict[str, str],
    stored: dict[str, StoredResult | None],
    model: ModelEntry,
) -> tuple[list[ImageRecord], list[Skipped]]:
    """Every photo's record, in source order, and the files that could not be used."""
    photos: list[ImageRecord] = []
    skipped: list[Skipped] = []
    layouts = _layer_layouts(model)
    for source in sources:
        result = stored.get(source.rel)
        if result is None:  # only if the cache folder was changed under us
            skipped.append(Skipped(source.rel, "its result went missing from the cache"))
        elif result.error is not None:
            skipped.append(Skipped(source.rel, result.error))
        else:
            photos.append(_record(source, keys[source.rel], result, model.categories, layouts))
    return photos, skipped


def _layer_layouts(model: ModelEntry) -> dict[str, tuple[tuple[int, ...], tuple[int, int], int]]:
    """Each conv layer's output shape, grid picture size and maps per row: the same for every
    photo, so worked out once per build."""
    shapes = {layer.name: layer.output_shape for layer in model.summary.layers}
    layouts = {}
    for name, module in CONV_LAYERS.items():
        shape, columns = shapes[module], columns_for(name)
        layouts[name] = (shape, grid_size(shape[0], shape[1:], columns), columns)
    return layouts


def _record(
    source: Source,
    key: str,
    stored: StoredResult,
    categories: tuple[str, ...],
    layouts: dict[str, tuple[tuple[int, ...], tuple[int, int], int]],
) -> ImageRecord:
    layers = tuple(
        LayerPicture(
            name=name,
            url=naming.photo_picture(key, name),
            shape=layouts[name][0],
            size=layouts[name][1],
            columns=layouts[name][2],
            low=low,
            high=high,
        )
        for name, (low, high) in stored.ranges.items()
        if name != "conv1"
    )
    return ImageRecord(
        source=source.rel,
        file_size=source.size,
        width=stored.width,
        height=stored.height,
        frames=stored.frames,
        top5=tuple(Prediction(i, categories[i], p) for i, p in stored.top5),
        page=naming.photo_page(source.rel),
        crop=naming.photo_picture(key, "input"),
        conv1=naming.photo_picture(key, "conv1"),
        layers=layers,
        conv1_range=stored.ranges.get("conv1", (0.0, 0.0)),
        cams=stored.cams,
        conv1_mean=stored.conv1_mean,
        conv1_max=stored.conv1_max,
    )


def _describe_weights(model: ModelEntry, weights: WeightsSpec) -> ModelSummary:
    """The model summary, naming the weights as this build was asked for them."""
    return dataclasses.replace(
        model.summary,
        weights=weights.label,
        sha256=weights.sha256,
        untrained=weights.untrained,
        warnings=weights.warnings,
    )


def _charts(
    photos: list[ImageRecord], summary: FolderSummary, cache: ResultCache
) -> dict[str, Path]:
    """The summary charts in the cache, drawn only when what they show has changed."""
    key = chart_key(photos, summary)
    paths = {name: cache.chart(key, name) for name in CHART_NAMES}
    if not all(path.is_file() for path in paths.values()):
        for name, png in draw(photos, summary).items():
            write_atomic(paths[name], png)
    return paths


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (no image library needed)."""
    with open(path, "rb") as fh:
        header = fh.read(24)
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def _stage_pictures(
    photos: list[ImageRecord],
    keys: dict[str, str],
    cache: ResultCache,
    charts: dict[str, Path],
    staging: Staging,
) -> None:
    """Link each picture from the cache into the new site (copies where links cannot be made)."""
    staging.link(naming.KERNELS_PICTURE, cache.kernels_picture)
    for name, path in charts.items():
        staging.link(f"{naming.PICTURES_DIR}/summary-{name}.png", path)
    for photo in photos:
        key = keys[photo.source]
        staging.link(photo.crop, cache.picture(key, "input"))
        staging.link(photo.conv1, cache.picture(key, "conv1"))
        for layer in photo.layers:
            staging.link(layer.url, cache.picture(key, layer.name))


def _write_pages(site: SiteContent, staging: Staging, progress: bool) -> None:
    """Every HTML page, the assets and predictions.json."""
    writer = PageWriter(site, staging.write)
    writer.assets()
    writer.page("kernels.html", "kernels.html", kernels=site.kernels, photos_count=len(site.photos))
    total_params = sum(layer.parameters for layer in site.model.layers)
    writer.page("model.html", "model.html", total_parameters=total_params)
    writer.summary_page()
    for position in tqdm(range(len(site.photos)), desc="pages", unit="page", disable=not progress):
        writer.photo_page(position)
    writer.index_pages()
    staging.write("predictions.json", predictions_json(site))
    staging.write("predictions.csv", predictions_csv(site))
    staging.write("search-index.js", search_index(site))
    # For publishing from a branch: no Jekyll processing, so every file is served as written.
    staging.write(".nojekyll", b"")
