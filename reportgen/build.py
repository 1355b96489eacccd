"""The build, in three stages: gather → analyse → write.

- **gather**: find the photos, take each one's record from the cache, and run the model over the
  ones it lacks (:mod:`reportgen.inference`, imported only then: a rebuild with nothing new never
  imports torch);
- **analyse**: what the folder says as a whole: true classes, summary statistics, charts;
- **write**: render every page into a staging folder and swap it in (:mod:`reportgen.site`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import code_pack, folder_map, forked, freshness, record_pack, similar
from .cache import ResultCache, Unusable, fingerprint
from .classes import classes
from .config import Config
from .discover import IMAGE_EXTENSIONS, discover, passed_over
from .errors import BuildError, InputError, Interrupted, UsageError, os_error_message
from .files import write_atomic
from .heap import collector_paused, collector_resumed, hand_back, small_pages
from .records import ModelEntry, ModelSummary, PhotoRecord, Skipped, Source
from .similar import Neighbours
from .site import charts as site_charts
from .site import naming, paging
from .site.folder import FolderSummary, ground_truth, kernel_views, summarize_folder
from .site.output import OutputFolder, Staging
from .site.pages import SiteContent, write_site
from .site.states import CACHE_DIR
from .stat_index import StatIndex
from .weights import WeightsSpec, resolve_weights

log = logging.getLogger("reportgen")

STAT_INDEX = "stat-index.sqlite"
SIMILAR = "similar.npz"
CODES = "codes.pack"
RECORDS = "records.pack"
RAY_MISSING = "--engine ray needs the ray extra: pip install 'reportgen[ray]'"
PAGES_LIMIT = 1_000_000_000
"""GitHub Pages' limit on a published site, in bytes."""


@dataclass(frozen=True)
class BuildResult:
    """What a build produced."""

    out_dir: Path
    photos: Sequence[PhotoRecord]
    """Every photo reported, in source order (read from the cache when first used, if the build
    found the site up to date)."""
    skipped: tuple[Skipped, ...]
    computed: int
    """Photos reported that this build ran through the model."""
    reused: int
    """Photos reported whose results came from the cache."""
    device: str | None
    """Where the model ran; None when it was not needed."""
    site_bytes: int = 0
    """The site's size: what publishing it uploads."""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds spent in each stage: discover, import torch, load model, inference, summary,
    pages, commit (import, load and inference only when the model ran)."""


@dataclass(frozen=True)
class Gathered:
    """Every photo's record, and what it took to get them."""

    photos: list[PhotoRecord]
    skipped: list[Skipped]
    model: ModelEntry
    weights: WeightsSpec
    cache: ResultCache
    keys: frozenset[str]
    """The cache key of every photo found, usable or not."""
    computed: int
    """Photos reported that the model ran over in this build."""
    device: str | None
    settled: bool = True
    """Whether every photo found has a result or a lasting verdict (none was left out for now,
    unreadable or changed while the build ran: the next build must try those again)."""
    stamps: dict[str, bytes] = dataclasses.field(default_factory=dict)
    """:meth:`ResultCache.entry_stamp` of each photo's entry, by key, taken in this build."""


@dataclass(frozen=True)
class Analysed:
    """The photos with their true classes, and what the folder says as a whole."""

    photos: list[PhotoRecord]
    summary: FolderSummary
    charts: dict[str, Path]
    """Each summary chart's PNG in the cache, by name."""
    problems: tuple[str, ...] = ()
    """What was wrong with the true classes' sources (reported as warnings)."""
    similar: Neighbours | None = None
    """Each photo's nearest photos by fc7 code."""
    places: np.ndarray | None = None
    """Each photo's place on the map, (N, 2)."""


def build(config: Config, *, progress: bool = False) -> BuildResult:
    """Build the site described by ``config``.

    Args:
        config: a validated configuration (``input_dir`` must be set).
        progress: show progress bars on stderr.

    Raises:
        ReportgenError: for anything the user can fix; the previous site is left whole.
    """
    input_dir = _check_input(config.input_dir)
    if config.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError(RAY_MISSING)
    out = OutputFolder(config.out_dir)
    out.check(input_dir=input_dir, force=config.force)
    clock = _Stopwatch()
    try:
        with out.lock(wait=config.wait), small_pages():
            sources, unreadable = _find_photos(config, input_dir, out, progress=progress)
            weights = resolve_weights(config.weights, progress=progress)
            for warning in weights.warnings:
                log.warning("%s (%s)", warning, weights.path)
            kinds = ("input", *config.layers)
            cache = ResultCache(
                config.cache or out.state / CACHE_DIR, fingerprint(weights, config), kinds
            )
            described = None if config.full else cache.load_model()
            weights = dataclasses.replace(
                weights, categories=classes(weights, config.labels, described)
            )
            now = freshness.state(config, cache.fingerprint, sources, unreadable, input_dir)
            unchanged = None if config.full else _unchanged(config, out, now, sources, cache)
            if unchanged is not None:
                clock.lap("discover")
                return dataclasses.replace(unchanged, timings=clock.laps)
            found = (sources, unreadable, weights, cache, described)
            gathered = gather(config, input_dir, out, clock, found, progress=progress)
            analysed = _analysed(
                gathered, input_dir, out, clock, anew=config.full, progress=progress
            )
            site_bytes = write(config, out, gathered, analysed, clock, progress=progress)
            _remember(out, now, gathered, analysed)
    except OSError as exc:
        raise BuildError(f"{os_error_message(exc)} (the previous site is unchanged)") from exc
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted("interrupted; the previous site is unchanged") from None
    finally:
        collector_resumed()  # the records are the caller's now
    return BuildResult(
        out_dir=config.out_dir,
        photos=tuple(analysed.photos),
        skipped=tuple(gathered.skipped),
        computed=gathered.computed,
        reused=len(gathered.photos) - gathered.computed,
        device=gathered.device,
        site_bytes=site_bytes,
        timings=clock.laps,
    )


def gather(
    config: Config,
    input_dir: Path,
    out: OutputFolder,
    clock: _Stopwatch,
    found: tuple[list[Source], list[Skipped], WeightsSpec, ResultCache, ModelEntry | None],
    *,
    progress: bool,
) -> Gathered:
    """Every photo's record: from the cache, or from the model for those it lacks (``found``: the
    photos, the files that cannot be read, the weights, the cache, and the model's description
    from it, if any). Raises InputError when the folder holds no photo that could be read."""
    sources, unreadable, weights, cache, _ = found
    keys = {s.rel: cache.key(s.sha256, s.rel) for s in sources}
    pack = out.state / RECORDS
    stored, stamps, held, todo, (model, device, unread) = _records(
        config, found, keys, pack, clock, meanwhile=out.read_ahead, progress=progress
    )
    clock.lap("inference")
    with collector_paused(keep=True):
        photos, skipped = _placed(sources, keys, stored, unread)
    records = {keys[s.rel]: r for s in sources if isinstance(r := stored.get(s.rel), PhotoRecord)}
    _pack_records(pack, cache, records, stamps, held)
    computed_keys = {keys[s.rel] for s in todo}
    skipped = sorted([*unreadable, *skipped], key=lambda s: s.source)
    for item in skipped:
        log.warning("skipped %s: %s", item.source, item.reason)
    if not photos:
        raise InputError(f"none of the image files in {str(input_dir)!r} could be read")
    return Gathered(
        photos=photos,
        skipped=skipped,
        model=model,
        weights=weights,
        cache=cache,
        keys=frozenset(keys.values()),
        computed=sum(1 for p in photos if p.key in computed_keys),
        device=device,
        settled=all(isinstance(stored.get(s.rel), (PhotoRecord, Unusable)) for s in sources),
        stamps=stamps,
    )


def _records(
    config: Config,
    found: tuple[list[Source], list[Skipped], WeightsSpec, ResultCache, ModelEntry | None],
    keys: dict[str, str],
    pack: Path,
    clock: _Stopwatch,
    *,
    meanwhile: Callable[[], object],
    progress: bool,
) -> tuple[
    dict[str, PhotoRecord | Unusable | None],
    dict[str, bytes],
    int,
    list[Source],
    tuple[ModelEntry, str | None, dict[str, str]],
]:
    """Every photo's record or verdict, by relative path (from the record pack, the cache, or the
    model's run); the stamps of the entries taken from the pack, and how many copies it holds;
    the photos the model ran over; and the model's description, where it ran, and why each
    photo it could not use was left out."""
    sources, unreadable, weights, cache, model = found
    with collector_paused(keep=True):  # kept to the end of the build
        if config.full:
            copies, held, stored = {}, 0, dict.fromkeys((s.rel for s in sources), None)
        else:
            copies, held = record_pack.read_raw(pack, keys.values())
            # What the model must run over is known before the copies are taken.
            stored = _uncopied(sources, keys, cache, copies)
    ahead = _model_ahead(config, found, keys, stored, progress=progress)
    with ahead.helper if ahead is not None else contextlib.nullcontext():
        with collector_paused(keep=True):
            stamps = _take_copies(sources, keys, cache, copies, stored)
        todo = [s for s in sources if stored.get(s.rel) is None]
        clock.lap("discover")
        device, unread, done = None, {}, set()
        if ahead is not None:
            model, device, unread = _joined(ahead, clock, meanwhile)
            done = {s.rel for s in ahead.todo}
    rest = [s for s in todo if s.rel not in done]
    if rest or model is None:
        ran = (sources, unreadable, weights, cache, model)
        model, device, more = _run_model(config, ran, rest, keys, clock, progress=progress)
        unread = {**unread, **more}
    # Kept out of the collector's sight with torch's own objects, which every later full
    # collection would scan again (0.15 s each). What the model's run left for the collector is
    # kept too, till the build ends: measured, ten small objects (the model itself is freed as
    # it goes out of use); a full collection first would cost as much as it saves.
    with collector_paused(keep=True):
        stored.update((s.rel, cache.load(keys[s.rel])) for s in todo)
    return stored, stamps, held, todo, (model, device, unread)


def _run_model(
    config: Config,
    found: tuple[list[Source], list[Skipped], WeightsSpec, ResultCache, ModelEntry | None],
    todo: list[Source],
    keys: dict[str, str],
    clock: _Stopwatch,
    *,
    progress: bool,
) -> tuple[ModelEntry, str | None, dict[str, str]]:
    """Run the model over ``todo`` (once for copies of one photo), storing each photo's results in
    the cache: the model's description, where it ran, and why each photo it could not use was left
    out, by key."""
    _, _, weights, cache, model = found
    # Copies of one photo share a key: the model runs over the first, and all take its results.
    firsts: dict[str, Source] = {}
    for source in todo:
        firsts.setdefault(keys[source.rel], source)
    todo = list(firsts.values())
    # torch (and ray) are imported here, and only here.
    with collector_paused():
        if config.engine == "ray" and todo:
            from .inference.ray_engine import run_model_on_ray as run_model
        else:
            from .inference.stage import run_model

    clock.lap("import torch")
    try:
        run = run_model(weights, todo, keys, cache, config, progress=progress, described=model)
    except KeyboardInterrupt:
        raise Interrupted(_interrupted(cache.stored)) from None
    clock["load model"] = run.load_seconds
    if run.store_seconds:
        clock["store results"] = run.store_seconds
    return run.model, run.device, run.unread


def _take_copies(
    sources: list[Source],
    keys: dict[str, str],
    cache: ResultCache,
    copies: dict[str, tuple[bytes, object]],
    stored: dict[str, PhotoRecord | Unusable | None],
) -> dict[str, bytes]:
    """Fill in ``stored`` (each photo's record or verdict, by relative path) for the photos the
    site's record pack holds a copy of (``copies``, as :func:`record_pack.read_raw` gives them):
    the copy where the cache's entry is as it was when copied (same stamp), else the cache's
    (None where it has none). The stamps of the entries whose copies were taken, by key."""
    stamps: dict[str, bytes] = {}
    for source in sources:
        key = keys[source.rel]
        if key not in copies or source.rel in stored:
            continue
        stamp, copy = copies[key]
        record = None
        if cache.entry_stamp(key) == stamp:
            try:
                record = record_pack.typed(copy)
            except ValueError as exc:
                log.info("record pack's copy of %s is damaged (%s)", source.rel, exc)
        if record is not None:
            stored[source.rel] = record
            stamps[key] = stamp
        else:
            stored[source.rel] = cache.load(key)
    return stamps


def _stored(
    sources: list[Source], keys: dict[str, str], cache: ResultCache, pack: Path
) -> dict[str, PhotoRecord | Unusable | None]:
    """Each photo's record or verdict, by relative path, as :func:`gather` takes them."""
    copies, _ = record_pack.read_raw(pack, keys.values())
    stored = _uncopied(sources, keys, cache, copies)
    _take_copies(sources, keys, cache, copies, stored)
    return stored


def _uncopied(
    sources: list[Source],
    keys: dict[str, str],
    cache: ResultCache,
    copies: dict[str, tuple[bytes, object]],
) -> dict[str, PhotoRecord | Unusable | None]:
    """The cache's record or verdict, by relative path, of each photo the record pack has no
    copy of, or whose entry left the cache since it was copied (pruned): the rest are for
    :func:`_take_copies`."""
    return {
        s.rel: cache.load(keys[s.rel])
        for s in sources
        if keys[s.rel] not in copies or not cache.has_entry(keys[s.rel])
    }


AHEAD_FROM = 2000
"""Photos from which a build that has only a few to run the model over (AHEAD_SHARE of the folder
at most) runs it in a forked copy of itself, while it reads the others' records."""
AHEAD_SHARE = 0.1


@dataclass(frozen=True)
class _Ahead:
    """The model's run in a forked copy of the build, over ``todo``."""

    helper: forked.Forked
    todo: list[Source]


def _model_ahead(
    config: Config,
    found: tuple[list[Source], list[Skipped], WeightsSpec, ResultCache, ModelEntry | None],
    keys: dict[str, str],
    stored: dict[str, PhotoRecord | Unusable | None],
    *,
    progress: bool,
) -> _Ahead | None:
    """The model's run over the photos with neither a copy in the record pack nor an entry in
    the cache (those None in ``stored``), started in a forked copy of this process, where the
    folder is large and they are few: torch's import and the model's load (2.5 s) then go on
    beside the reading of every other photo's record. None where the build runs the model itself
    (a cold build keeps it in its own process, its memory and progress as they were)."""
    sources, model = found[0], found[4]
    todo = [s for s in sources if s.rel in stored and stored[s.rel] is None]
    worth = len(sources) >= AHEAD_FROM and len(todo) <= AHEAD_SHARE * len(sources)
    if not (todo or model is None) or not worth or config.engine != "local":
        return None
    if not forked.available() or "torch" in sys.modules:  # a copy after torch's threads: no
        return None

    def run() -> tuple[ModelEntry, str | None, dict[str, str], dict[str, float]]:
        clock = _Stopwatch()
        model, device, unread = _run_model(config, found, todo, keys, clock, progress=progress)
        return model, device, unread, clock.laps

    return _Ahead(forked.Forked(run), todo)


def _joined(
    ahead: _Ahead, clock: _Stopwatch, meanwhile: Callable[[], object]
) -> tuple[ModelEntry, str | None, dict[str, str]]:
    """What the model's run in the copy gave: the model's description, where it ran, and why each
    photo it could not use was left out, by key. Its stages' times join ``clock``'s (they ran
    beside this process's). ``meanwhile`` is done first, while the copy runs."""
    try:
        # While the copy runs the model, torch is imported here too, for the nearest photos'
        # widening of the codes (NumPy's took 1.4 s more at 20,000 photos than torch's), and
        # matplotlib for the summary's charts, which photos added change; then ``meanwhile``
        # (the site's manifest read, 0.13 s at 20,000 photos). The copy keeps one core busy, and
        # this process would only wait: traced at 20,000 photos, the copy took 2.7 s, and this
        # process had 0.9 s of records to make before these 1.7 s.
        with collector_paused():
            import reportgen.inference.halves  # noqa: F401

            site_charts.figure_class()
            meanwhile()
        model, device, unread, laps = ahead.helper.result()
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; the previous site is unchanged, and the photos finished so far are "
            "cached: the next build starts from there"
        ) from None
    clock.laps.update(laps)
    return model, device, unread


def _pack_records(
    pack: Path,
    cache: ResultCache,
    records: dict[str, PhotoRecord],
    stamps: dict[str, bytes],
    held: int,
) -> None:
    """Copy into the site's record pack (which holds ``held`` copies) the ``records`` whose copies
    were not taken from it (those not in ``stamps``), each with its entry's stamp, which is added
    to ``stamps``."""
    taken = set(stamps)
    for key in records.keys() - taken:
        stamp = cache.entry_stamp(key)
        if stamp is not None:
            stamps[key] = stamp
    copies = {key: (stamps[key], record) for key, record in records.items() if key in stamps}
    record_pack.save(pack, copies, (key for key in copies if key not in taken), held)


def _remember(out: OutputFolder, now: str, gathered: Gathered, analysed: Analysed) -> None:
    """Record what this build was made from, for the next one to tell whether it has work; or
    forget it, when photos were left out for now (the next build must try them again)."""
    keys = (p.key for p in gathered.photos)
    stamps = gathered.cache.stamps(keys, gathered.stamps) if gathered.settled else None
    last = stamps and freshness.LastBuild(now, stamps, tuple(gathered.skipped), analysed.problems)
    freshness.record(out.state / freshness.LAST_BUILD, last or None)


def _unchanged(
    config: Config, out: OutputFolder, now: str, sources: list[Source], cache: ResultCache
) -> BuildResult | None:
    """The result of a build that has nothing to do: the last one was made from the same state,
    its files are all as it left them, and the cache still holds every photo's entry. None when
    there is work."""
    last = freshness.read(out.state / freshness.LAST_BUILD)
    if last is None or last.state != now:
        return None
    site_bytes = out.intact()
    if site_bytes is None:
        return None
    left_out = {item.source for item in last.skipped}
    photos = [s for s in sources if s.rel not in left_out]
    keys = {s.rel: cache.key(s.sha256, s.rel) for s in photos}
    if not photos or cache.stamps(keys[s.rel] for s in photos) != last.cache:
        return None
    out.discard_staging()  # what an interrupted build left; the site itself is whole
    for item in last.skipped:
        log.warning("skipped %s: %s", item.source, item.reason)
    for problem in last.problems:
        log.warning("%s", problem)
    _warn_if_too_large(site_bytes)
    return BuildResult(
        out_dir=config.out_dir,
        photos=_CachedPhotos(photos, keys, cache, config.input_dir, out.state / RECORDS),
        skipped=last.skipped,
        computed=0,
        reused=len(photos),
        device=None,
        site_bytes=site_bytes,
    )


class _CachedPhotos(Sequence[PhotoRecord]):
    """The photos of a site found up to date: counted at once, read from the cache only when
    first looked at (a build that needs nothing else never reads them)."""

    def __init__(
        self,
        sources: list[Source],
        keys: dict[str, str],
        cache: ResultCache,
        input_dir: Path,
        pack: Path,
    ) -> None:
        self._sources, self._keys, self._cache, self._input = sources, keys, cache, input_dir
        self._pack = pack
        self._records: list[PhotoRecord] | None = None

    def __len__(self) -> int:
        return len(self._sources)

    def __getitem__(self, index):  # type: ignore[override]
        return self._loaded()[index]

    def __iter__(self) -> Iterator[PhotoRecord]:
        return iter(self._loaded())

    def _loaded(self) -> list[PhotoRecord]:
        if self._records is None:
            model = self._cache.load_model()
            with collector_paused():
                stored = _stored(self._sources, self._keys, self._cache, self._pack)
            entries = [stored[s.rel] for s in self._sources]
            if model is None or not all(isinstance(e, PhotoRecord) for e in entries):
                raise BuildError("the cache changed after the build; build again")
            rels = [s.rel for s in self._sources]
            truth, _ = ground_truth(self._input, rels, model.categories)
            self._records = [
                dataclasses.replace(e.placed(s, self._keys[s.rel]), truth=truth.get(s.rel))
                for e, s in zip(entries, self._sources, strict=True)
            ]
        return self._records


def _interrupted(finished: int) -> str:
    """What an interrupted inference leaves behind."""
    if not finished:
        return "interrupted before any photo was finished; the previous site is unchanged"
    photos = "1 photo" if finished == 1 else f"{finished} photos"
    return (
        f"interrupted; the previous site is unchanged, and the {photos} finished so far are "
        "cached: the next build starts from there"
    )


def _find_photos(
    config: Config, input_dir: Path, out: OutputFolder, *, progress: bool
) -> tuple[list[Source], list[Skipped]]:
    """The photos in the folder, each with its hash: read and hashed only where its stamp
    changed since the last build (every one with --full); and the files that cannot be read.

    Raises:
        InputError: the folder holds no image file at all.
    """
    index = StatIndex(out.state / STAT_INDEX)
    started = time.time_ns()
    known = None if config.full else index.lookup
    sources, unreadable = discover(
        input_dir, exclude=config.out_dir, leave_out=config.exclude, known=known, progress=progress
    )
    if not sources and not unreadable:
        raise InputError(_no_images(input_dir, config))
    index.record(sources, hashed_at_ns=started)
    return sources, unreadable


def _no_images(input_dir: Path, config: Config) -> str:
    """Why a folder gave no photo: what it holds instead, and the names that are read."""
    said = f"no images found in {str(input_dir)!r}"
    if config.exclude:
        said += " (besides what --exclude leaves out)"
    others = passed_over(input_dir, exclude=config.out_dir, leave_out=config.exclude)
    if not others:
        return said
    count = sum(others.values())
    common = sorted(others.items(), key=lambda item: (-item[1], item[0]))[:3]
    kinds = [f"{n} {ext or 'without an extension'}" for ext, n in common]
    if len(others) > 3:
        kinds.append("…")
    files, none = ("1 file", "not") if count == 1 else (f"{count} files", "none")
    return (
        f"{said}: it holds {files} ({', '.join(kinds)}), {none} named as an image "
        f"({' '.join(sorted(IMAGE_EXTENSIONS))}, any case)"
    )


def _placed(
    sources: list[Source],
    keys: dict[str, str],
    stored: dict[str, PhotoRecord | Unusable | None],
    unread: dict[str, str],
) -> tuple[list[PhotoRecord], list[Skipped]]:
    """Every usable photo's record, placed in the folder, in source order; and the rest."""
    photos: list[PhotoRecord] = []
    skipped: list[Skipped] = []
    for source in sources:
        entry = stored.get(source.rel)
        if entry is None:
            key = keys[source.rel]
            # Absent from unread only if the cache folder was changed under us.
            reason = unread.get(key, "its result went missing from the cache")
            skipped.append(Skipped(source.rel, reason))
        elif isinstance(entry, Unusable):
            skipped.append(Skipped(source.rel, entry.reason))
        else:
            photos.append(entry.placed(source, keys[source.rel]))
    return photos, skipped


def _analysed(
    gathered: Gathered,
    input_dir: Path,
    out: OutputFolder,
    clock: _Stopwatch,
    *,
    anew: bool,
    progress: bool,
) -> Analysed:
    """What the folder says as a whole, and of each photo beside the others: :func:`analyse`,
    then :func:`alike` while the summary's charts are drawn."""
    analysed, charts = analyse(gathered, input_dir)
    clock.lap("summary")
    with charts:
        analysed = alike(gathered, analysed, out.state, clock, anew=anew, progress=progress)
        return dataclasses.replace(analysed, charts=charts.result())


def analyse(gathered: Gathered, input_dir: Path) -> tuple[Analysed, _Charts]:
    """True classes from the folder and the summary's statistics; its charts, being drawn
    (``charts`` is filled in from them)."""
    photos = gathered.photos
    truth, problems = ground_truth(input_dir, [p.source for p in photos], gathered.model.categories)
    for problem in problems:
        log.warning("%s", problem)
    if truth:
        photos = [dataclasses.replace(p, truth=truth.get(p.source)) for p in photos]
    summary = summarize_folder(photos)
    charts = _Charts(photos, summary, gathered.cache)
    return Analysed(photos, summary, {}, tuple(problems)), charts


def alike(
    gathered: Gathered,
    analysed: Analysed,
    state: Path,
    clock: _Stopwatch,
    *,
    anew: bool = False,
    progress: bool = False,
) -> Analysed:
    """Each photo's nearest photos and its place on the map, from their fc7 codes: updated from
    what the last build found (kept in the site's ``state`` folder) where the folder changed
    little, unless ``anew`` (--full); ``progress``: bars for a search or map made anew."""
    photos = analysed.photos
    keys = [p.key for p in photos]
    sources = [p.source for p in photos]

    # Read from the pack as they are needed, never all held (float16, 8 KB a photo).
    saved = state / SIMILAR
    previous = None if anew else similar.load(saved)
    with code_pack.load(state / CODES, keys, gathered.cache) as codes:
        found = similar.find(
            sources, keys, codes, previous[0] if previous else None, progress=progress
        )
        hand_back()  # the search's graph and buffers: the map and the pages come next
        clock.lap("similar")
        places = folder_map.layout(codes, found, previous, progress=progress)
    hand_back()
    clock.lap("map")
    similar.save(saved, found, places)
    return dataclasses.replace(analysed, similar=found, places=places)


CHARTS_APART_FROM = 2000
"""Photos from which the summary's charts are drawn in a forked copy of the build, beside the
search for the nearest photos (0.3 s of drawing, with matplotlib's import 0.6 s); below, that
search takes a fraction of a second, and the charts are drawn in the build's own process."""


class _Charts:
    """The summary's charts, drawn into the cache only when what they show has changed (else
    taken from it): at once, or in a forked copy of the build in a large folder. A context
    manager: leaving the block before :meth:`result` stops the copy."""

    def __init__(self, photos: list[PhotoRecord], summary: FolderSummary, cache: ResultCache):
        key = site_charts.chart_key(photos, summary)
        self.paths = {name: cache.chart(key, name) for name in site_charts.CHART_NAMES}
        self._drawn: dict[str, bytes] = {}
        self._helper: forked.Forked | None = None
        if all(path.is_file() for path in self.paths.values()):
            return
        if len(photos) >= CHARTS_APART_FROM and forked.available():
            self._helper = forked.Forked(lambda: site_charts.draw(photos, summary))
        else:
            self._drawn = site_charts.draw(photos, summary)

    def result(self) -> dict[str, Path]:
        """Each chart's PNG in the cache, by name, once drawn."""
        if self._helper is not None:
            self._drawn, self._helper = self._helper.result(), None
        for name, png in self._drawn.items():
            write_atomic(self.paths[name], png)
        self._drawn = {}
        return self.paths

    def __enter__(self) -> _Charts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._helper is not None:
            self._helper.cancel()


def write(
    config: Config,
    out: OutputFolder,
    gathered: Gathered,
    analysed: Analysed,
    clock: _Stopwatch,
    *,
    progress: bool,
) -> int:
    """Write the site aside, swap it in, and drop from the build's own cache what it no longer
    uses; the site's size in bytes."""
    sources = [p.source for p in analysed.photos]
    site = SiteContent(
        photos=analysed.photos,
        skipped=gathered.skipped,
        model=_describe_weights(gathered.model.summary, gathered.weights),
        per_page=config.per_page,
        index_starts=paging.lay_out(sources, config.per_page, out.state, anew=config.full),
        kernels=kernel_views(analysed.photos, gathered.model.summary.kernel_shape[0]),
        layers=config.layers,
        normalize=config.normalize,
        decode=config.decode,
        lean=config.lean,
        summary=analysed.summary,
        charts={name: naming.summary_chart(name) for name in analysed.charts},
        chart_sizes={name: _png_size(path) for name, path in analysed.charts.items()},
        similar=analysed.similar,
        duplicates=similar.near_duplicates(analysed.similar) if analysed.similar else (),
        places=analysed.places,
        heat_maps=functools.partial(_page_heat_maps, gathered.cache),
    )
    staging = out.begin()
    try:
        _stage_pictures(analysed, gathered.cache, staging)
        write_site(site, staging, progress=progress)
        clock.lap("pages")
        site_bytes = staging.commit(
            force=config.force,
            first=(naming.PICTURES_DIR + "/",),
            last=("index.html",),
            progress=progress,
        )
    except KeyboardInterrupt:
        out.discard_staging()
        raise Interrupted(
            "interrupted while writing the site; the previous site is unchanged, and every "
            "photo is cached: the next build only writes the pages"
        ) from None
    except BaseException:
        out.discard_staging()  # a full disk gets its space back at once
        raise
    if config.cache is None:
        gathered.cache.prune(set(gathered.keys), charts=set(analysed.charts.values()))
    clock.lap("commit")
    _warn_if_too_large(site_bytes)
    return site_bytes


def _warn_if_too_large(site_bytes: int) -> None:
    """Warn when a site of ``site_bytes`` cannot be published on GitHub Pages, and say what to do
    (each build says it, as it repeats what it skipped, till the site fits)."""
    if site_bytes > PAGES_LIMIT:
        log.warning(
            "the site is %.2f GB, over GitHub Pages' 1 GB limit: build it with --lean (and no "
            "--layers), publish fewer photos, or use a static host without that limit",
            site_bytes / 1e9,
        )


def _page_heat_maps(cache: ResultCache, photo: PhotoRecord) -> tuple[str, ...]:
    """A photo's Grad-CAM heat maps, read from its cache entry for its page.

    Raises:
        BuildError: the entry went missing or was damaged since the build read it.
    """
    heat_maps = cache.heat_maps(photo.key)
    if heat_maps is None or len(heat_maps) != len(photo.top5):
        raise BuildError(
            f"the cached results of {photo.source!r} went missing or changed while the site was "
            "written; the previous site is unchanged: build again"
        )
    return heat_maps


def _check_input(input_dir: Path | None) -> Path:
    """The input folder, which must exist."""
    if input_dir is None:
        raise UsageError("no input folder given (reportgen build INPUT_DIR)")
    if not input_dir.exists():
        raise UsageError(f"input folder {str(input_dir)!r} does not exist")
    if not input_dir.is_dir():
        raise UsageError(f"input {str(input_dir)!r} is not a folder")
    return input_dir


def _describe_weights(summary: ModelSummary, weights: WeightsSpec) -> ModelSummary:
    """The model summary, naming the weights as this build was asked for them."""
    return dataclasses.replace(
        summary,
        weights=weights.label,
        sha256=weights.sha256,
        untrained=weights.untrained,
        warnings=weights.warnings,
    )


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (no image library needed)."""
    with open(path, "rb") as fh:
        header = fh.read(24)
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def _stage_pictures(analysed: Analysed, cache: ResultCache, staging: Staging) -> None:
    """Link each photo's pictures from the cache into the new site (copies where links cannot be
    made): their names say what they show, so one in place is kept. The kernels' picture and the
    summary's charts keep one name whatever they show: they are written by their bytes, so each
    is replaced when it changes (linked and kept by name, they stayed as first drawn)."""
    staging.write(naming.KERNELS_PICTURE, cache.kernels_picture.read_bytes())
    for name, path in analysed.charts.items():
        staging.write(naming.summary_chart(name), path.read_bytes())
    for photo in analysed.photos:
        for kind in cache.kinds:
            staging.link(photo.picture(kind), cache.picture_name(photo.key, kind))


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
