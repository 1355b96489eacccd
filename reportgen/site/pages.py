"""Writing the site's files: HTML pages, assets, and the exports (predictions.json and .csv, the
filter's search index). Knows nothing of torch: it reads records only."""

from __future__ import annotations

import bisect
import csv
import dataclasses
import functools
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, runtime_checkable

import jinja2
import markupsafe

from .. import __version__, forked
from ..layout import CONV_LAYERS, KERNEL_SCALE, kernel_grid, layer_grids
from ..progress import bar
from ..records import KernelView, ModelSummary, PhotoRecord, Skipped
from ..similar import DUPLICATE_DISTANCE, Duplicate, Neighbours
from . import naming, paging
from .folder import NEAR_MISS_MARGIN, FolderSummary

EXPORTS = ("predictions.json", "predictions.csv", "search/")
"""The files made from the whole folder at once (:meth:`PageWriter.exports`)."""
STATIC_FILES = ("style.css", "favicon.svg", "filter.js", "scroll.js", "kernel-map.js", "map.js")
ASSETS_DIR = "assets"


class Output(Protocol):
    """Where the site's files go (:class:`~reportgen.site.output.Staging`)."""

    def write(self, rel: str, data: bytes, key: str = "") -> None:
        """Take the site-relative file ``rel``, made from input hashing to ``key``."""

    def keep(self, rel: str, key: str) -> bool:
        """Keep ``rel`` as the last build made it, if that was from ``key``; whether it did."""

    def keep_all(self, prefixes: tuple[str, ...], key: str) -> bool:
        """Keep every file the last build made from ``key`` under these path prefixes, if all of
        them are as it left them; whether it did."""


@dataclass(frozen=True)
class SiteContent:
    """Everything the pages show."""

    photos: Sequence[PhotoRecord]
    skipped: Sequence[Skipped]
    model: ModelSummary
    per_page: int
    index_starts: Sequence[int] = ()
    """Where each index page begins, by position (:func:`~reportgen.site.paging.lay_out`);
    empty: pages of ``per_page`` photos."""
    kernels: Sequence[KernelView] = ()
    layers: Sequence[str] = ("conv1",)
    """The layers drawn for each photo, conv1 first."""
    normalize: str = "map"
    """How maps were scaled to grey: 'map' or 'layer'."""
    decode: str = "exact"
    """How JPEGs were decoded: 'fast' or 'exact'."""
    lean: bool = False
    """Show the Grad-CAM of the top-1 class only (--lean)."""
    summary: FolderSummary | None = None
    charts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Site-relative URL of each summary chart, by name."""
    chart_sizes: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    similar: Neighbours | None = None
    """Each photo's nearest photos by fc7 code."""
    duplicates: Sequence[Duplicate] = ()
    places: Any = None
    """Each photo's place on the map, (N, 2) in [0, 1]; None draws no map."""
    title: str = "How AlexNet sees these photos"
    heat_maps: Callable[[PhotoRecord], Sequence[str]] = lambda photo: ()
    """A photo's Grad-CAM heat maps (data: URIs, one for each of its top classes), read only when
    its page is written: records do not hold them. None shown by default."""


def rel(target: str, page: str) -> str:
    """The URL of site-relative ``target`` as seen from the page at site-relative ``page``.

    Every link is relative, so the site works from file://, from /REPO/ and from a domain root.
    Both are normalised site paths (no '.', '..' or leading '/'), so dropping their common folders
    is enough; ``posixpath.relpath`` gives the same answers at several times the cost.
    """
    folders = page.split("/")[:-1]
    parts = target.split("/")
    common = 0
    while common < min(len(folders), len(parts) - 1) and folders[common] == parts[common]:
        common += 1
    return "../" * (len(folders) - common) + "/".join(parts[common:])


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


def _filesize(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_SEPARATORS = re.compile(r"([/_.\-])")


def _breakable(name: str) -> markupsafe.Markup:
    """A file name that may wrap after its separators (/ _ . -) rather than mid-word: escaped,
    with a <wbr> after each. Escaping never makes a separator (its entities are made of & # ; and
    letters and digits), so they are found in the escaped name: 5 us a name, against 29 us for
    escaping each part apart, on every index page's every photo."""
    escaped = str(markupsafe.escape(_visible(name)))
    return markupsafe.Markup(_SEPARATORS.sub(r"\1<wbr>", escaped))


_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""The control characters HTML does not allow in a page, tab and line breaks aside."""


def _visible(value: Any) -> Any:
    """A string for a page with each control character HTML does not allow (a photo's name may
    hold one: an escape sequence, a bell) written as its escape, as the terminal shows it; any
    other value as it is. Every ``{{ … }}`` goes through it (Jinja's ``finalize``): the names
    are the user's files' to choose. A printable string, nearly all of them, costs one check."""
    if type(value) is str and not value.isprintable():
        return _FORBIDDEN.sub(lambda found: repr(found.group())[1:-1], value)
    return value


def environment() -> jinja2.Environment:
    """The Jinja environment over the templates shipped inside the package. Each template is read
    once: by default Jinja stats its file (and each it extends or includes) at every render, to
    reload it if it changed, and the package's templates do not change during a build."""
    folder = resources.files("reportgen.templates")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        auto_reload=False,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_visible,
    )
    env.filters["shape"] = _shape
    env.filters["filesize"] = _filesize
    env.filters["breakable"] = _breakable
    return env


def write_site(site: SiteContent, out: Output, *, progress: bool = False) -> None:
    """Every file of the site: assets, pages, exports.

    Photo and index pages (all but a few of the files) are rendered only when what they show has
    changed since the last build: each has an input key, a hash of everything it shows, and a page
    that ``out`` still holds as made from that key is kept. So are the exports and the filter's
    shards, as a whole, under a key of the whole folder.

    Args:
        out: takes each site-relative path and its bytes.
        progress: show a progress bar for the photo pages.
    """
    writer = PageWriter(site, out)
    if len(site.photos) >= SPLIT_FROM and forked.available() and isinstance(out, Shared):
        _write_split(writer, out, progress=progress)
    else:
        writer.common_pages()
        positions = range(len(site.photos))
        shown = bar("pages", progress=progress, unit="page", iterable=positions, at_once=True)
        for position in shown:
            writer.photo_page(position)
        writer.index_pages()
        writer.map_page()
        writer.exports()
    # For publishing from a branch: no Jekyll processing, so every file is served as written.
    out.write(".nojekyll", b"")


SPLIT_FROM = 2000
"""Photos from which the pages are written by two processes, where the system can fork (see
:func:`_write_split`). Measured at 20,000 photos on 2 cores, adding 10 that sort last: the pages
took 1.24 s instead of 1.55 s; sorting first, 2.43 s instead of 3.17 s. Below this the pages take
well under a second, and the fork (15 ms for a build holding torch) is not worth its risks."""


@runtime_checkable
class Shared(Output, Protocol):
    """An output a forked copy of the writer can write to as well (see :class:`Staging`)."""

    def mark(self) -> Any: ...

    def since(self, mark: Any) -> Any: ...

    def merge(self, taken: Any) -> None: ...


def _write_split(writer: PageWriter, out: Shared, *, progress: bool) -> None:
    """:func:`write_site`'s pages, by this process and a forked copy of it: the copy writes the
    map and the exports while this one writes the assets and the summary pages, then both take
    index and photo pages, a block at a time, until none is left."""
    writer.identities, writer._conv1_map  # noqa: B018 (worked out once, for both processes)
    count = writer.index_count + len(writer.site.photos)
    blocks = forked.Blocks(count)
    shown = bar("pages", progress=progress, total=count, unit="page", at_once=True)
    try:
        with forked.Forked(lambda: _second_share(writer, out, blocks)) as helper:
            writer.common_pages()
            for job in blocks:
                writer.page_job(job)
                if job % blocks.size == 0:  # a block begun: how far both have got
                    shown.update(min(blocks.taken(), count) - shown.n)
            out.merge(helper.result())
        shown.update(count - shown.n)
    finally:
        shown.close()
        blocks.close()


def _second_share(writer: PageWriter, out: Shared, blocks: Iterable[int]) -> Any:
    """The forked copy's share of :func:`_write_split`; what it staged."""
    mark = out.mark()
    writer.map_page()
    writer.exports()
    for job in blocks:
        writer.page_job(job)
    return out.since(mark)


class PageWriter:
    """Renders templates to site-relative paths into an :class:`Output`, skipping those it still
    holds as made from the same input."""

    def __init__(self, site: SiteContent, out: Output) -> None:
        self.site = site
        self.out = out
        self.write = out.write
        self.env = environment()
        self.grids = layer_grids(site.layers, site.model.output_shapes)
        self.kernel_grid = kernel_grid(site.model.kernel_shape)
        self.starts = list(site.index_starts) or paging.cut(len(site.photos), site.per_page)

    def page(self, template: str, path: str, **context: Any) -> None:
        self.write(path, self.render(template, path, **context).encode("utf-8"))

    def keyed_page(
        self,
        template: str,
        path: str,
        key: str,
        more: Callable[[], Mapping[str, Any]] = dict,
        **context: Any,
    ) -> None:
        """Render the page only if the output lacks it as made from ``key``; ``more`` gives the
        context that costs something to get, called only then."""
        key = self.input_key(key)
        if not self.out.keep(path, key):
            html = self.render(template, path, **context, **more())
            self.out.write(path, html.encode("utf-8"), key)

    def input_key(self, shown: str) -> str:
        """The input key of a file that shows ``shown`` (a description of its own content) on a
        page of this site."""
        return hashlib.sha256(f"{self.site_key}\n{shown}".encode()).hexdigest()

    @functools.cached_property
    def site_key(self) -> str:
        """A hash of what every page shows besides its own content: the templates, the model,
        the options, this version of reportgen."""
        site = self.site
        digest = hashlib.sha256(templates_digest().encode())
        shown = (site.model, tuple(site.layers), site.normalize, site.decode, site.lean)
        digest.update(repr((__version__, *shown, site.title, site.per_page)).encode())
        return digest.hexdigest()

    def render(self, template: str, path: str, **context: Any) -> str:
        return self.env.get_template(template).render(
            rel=lambda target: rel(target, path),
            site_title=self.site.title,
            version=__version__,
            model=self.site.model,
            kernels_url=naming.KERNELS_PICTURE,
            kernel_grid=self.kernel_grid,
            kernel_scale=KERNEL_SCALE,
            conv1_grid=self.grids["conv1"],
            layer_grids=self.grids,
            normalize=self.site.normalize,
            decode=self.site.decode,
            lean=self.site.lean,
            **context,
        )

    def exports(self) -> None:
        """predictions.json and .csv and the filter's shards: made only when some photo's place
        or result, or a skipped file, changed (they show every photo)."""
        identities = "\n".join(self.identities)
        key = self.input_key(f"exports\n{identities}\n{self.site.skipped!r}")
        if self.out.keep_all(EXPORTS, key):
            return
        self.out.write("predictions.json", predictions_json(self.site), key)
        self.out.write("predictions.csv", predictions_csv(self.site), key)
        for path, data in search_index(self.site).items():
            self.out.write(path, data, key)

    def common_pages(self) -> None:
        """The assets, and the pages that are not made one a photo or an index page."""
        site = self.site
        self.assets()
        self.page(
            "kernels.html", "kernels.html", kernels=site.kernels, photos_count=len(site.photos)
        )
        total_params = sum(layer.parameters for layer in site.model.layers)
        conv_names = {module: name for name, module in CONV_LAYERS.items()}
        self.page("model.html", "model.html", total_parameters=total_params, conv_names=conv_names)
        self.summary_page()

    def assets(self) -> None:
        folder = resources.files("reportgen.templates.static")
        for name in STATIC_FILES:
            self.write(f"{ASSETS_DIR}/{name}", folder.joinpath(name).read_bytes())

    @property
    def index_count(self) -> int:
        """How many index pages the folder takes."""
        return len(self.starts)

    def index_pages(self) -> None:
        for n in range(1, self.index_count + 1):
            self.index_page(n)

    def index_page(self, n: int) -> None:
        """The ``n``-th index page (from 1)."""
        photos, count = self.site.photos, self.index_count
        begin, end = self.starts[n - 1], self.starts[n] if n < count else len(photos)
        shown, identities = photos[begin:end], self.identities[begin:end]
        # Only the first page counts the folder and lists the skipped files: the others change
        # only with their own photos and the number of pages.
        front = f"{len(photos)}/{self.site.skipped!r}" if n == 1 else ""
        self.keyed_page(
            "index.html",
            naming.index_page(n),
            f"{n}/{count}/{front}/" + "/".join(identities),
            photos=shown,
            pages=pager(n, count),
            page_count=count,
            current=n,
            # What the key leaves out of the other pages is not given to them.
            total=len(photos) if n == 1 else None,
            skipped=self.site.skipped if n == 1 else (),
        )

    def page_job(self, job: int) -> None:
        """One of the jobs :func:`_write_split` shares out: the index pages first (each of them
        may be the longest to render), then the photo pages."""
        if job < self.index_count:
            self.index_page(job + 1)
        else:
            self.photo_page(job - self.index_count)

    def summary_page(self) -> None:
        self.page(
            "summary.html",
            "summary.html",
            summary=self.site.summary,
            charts=self.site.charts,
            chart_sizes=self.site.chart_sizes,
            photos_count=len(self.site.photos),
            near_miss_margin=NEAR_MISS_MARGIN,
            duplicates=[
                (self.site.photos[d.first], self.site.photos[d.second], d)
                for d in self.site.duplicates[:DUPLICATES_LISTED]
            ],
            duplicate_count=len(self.site.duplicates),
            duplicate_distance=DUPLICATE_DISTANCE,
        )

    def map_page(self) -> None:
        """map.html, and the map's data beside it (one script: it works from file:// too)."""
        data = map_data(self.site)
        self.page("map.html", "map.html", photos_count=len(self.site.photos), data=data)
        self.write(MAP_DATA, ("reportgenMap(" + _compact(data) + ");\n").encode("ascii"))

    @functools.cached_property
    def identities(self) -> list[str]:
        """Each photo's :func:`_identity`, by position: worked out once, as a photo shows on its
        own page, its neighbours' and nearest photos' pages, an index page and the exports."""
        return [_identity(p) for p in self.site.photos]

    @functools.cached_property
    def _conv1_map(self) -> markupsafe.Markup:
        """The image map linking each conv1 map to its kernel: the same on every photo page (all
        live in one folder), so rendered once."""
        html = self.render("_partials/conv1_map.html", naming.photo_page("any"))
        return markupsafe.Markup(html)

    def photo_page(self, position: int) -> None:
        photos = self.site.photos
        photo = photos[position]
        prev = photos[position - 1] if position > 0 else None
        next = photos[position + 1] if position + 1 < len(photos) else None
        index_url = naming.index_page(bisect.bisect_right(self.starts, position))
        neighbours = (prev.source if prev else "", next.source if next else "")
        listed = self.site.similar.of(position) if self.site.similar else ()
        alike = [(photos[j], distance) for j, distance in listed]
        identities = self.identities
        shown = "/".join(f"{identities[j]}:{distance:.3g}" for j, distance in listed)
        self.keyed_page(
            "photo.html",
            photo.page,
            f"{identities[position]}/{neighbours}/{index_url}/{shown}",
            lambda: {"cams": self.site.heat_maps(photo)},
            photo=photo,
            alike=alike,
            prev=prev,
            next=next,
            index_url=index_url,
            conv1_map=self._conv1_map,
        )


def _identity(photo: PhotoRecord) -> str:
    """All a page can show of a photo, in a short string: the cache key stands for everything the
    model made of its bytes, the rest is where it sits in the folder."""
    return repr((photo.key, photo.source, photo.file_size, photo.truth))


@functools.cache
def templates_digest() -> str:
    """A hash of every template and asset shipped with reportgen (read once a process)."""
    digest = hashlib.sha256()
    for item in _template_files(resources.files("reportgen.templates")):
        digest.update(item.name.encode() + b"\0" + item.read_bytes())
    return digest.hexdigest()


def _template_files(folder: Any) -> list[Any]:
    """Every file under the templates folder, in a stable order."""
    files = []
    for item in sorted(folder.iterdir(), key=lambda i: i.name):
        if item.is_dir():
            files += _template_files(item)
        elif not item.name.endswith((".pyc", ".py")):
            files.append(item)
    return files


NEARBY = 2


def pager(current: int, count: int) -> list[dict[str, Any]]:
    """The index pages a pager links: the first, the last, and the NEARBY on each side of the
    current one, with a gap (``None`` as the number) where pages are left out. However many pages
    there are, a pager has at most 2 * NEARBY + 5 entries."""
    shown = sorted(
        {1, count, *range(current - NEARBY, current + NEARBY + 1)} & set(range(1, count + 1))
    )
    entries: list[dict[str, Any]] = []
    for n in shown:
        if entries and n > entries[-1]["number"] + 1:
            entries.append({"number": None, "url": None})
        entries.append({"number": n, "url": naming.index_page(n)})
    return entries


DUPLICATES_LISTED = 200
"""Near-duplicate pairs the summary lists (closest first); it says how many there are."""
MAP_DATA = "map-data.js"
MAP_CLASSES = 11
"""Classes the map colours by name (the most frequent); the rest share one colour."""


def map_data(site: SiteContent) -> dict[str, Any]:
    """What map.js draws: each photo as [x, y, colour, page, picture], places as integers in
    0..MAP_SCALE, the page and picture by the parts of their names that differ (the data of
    20,000 photos is about 1.2 MB). Colours are the true class where the folder has any, else the
    top-1 class: the MAP_CLASSES most frequent by name, the others as one."""
    photos = site.photos
    truths = any(p.truth for p in photos)
    classes = [(p.truth or "unlabelled") if truths else p.top5[0].label for p in photos]
    counts = Counter(classes)
    named = sorted(counts, key=lambda c: (-counts[c], c))[:MAP_CLASSES]
    if len(counts) > MAP_CLASSES:
        others = sum(counts[c] for c in counts if c not in named)
        legend = [[c, counts[c]] for c in named] + [["other classes", others]]
    else:
        legend = [[c, counts[c]] for c in named]
    colour = {c: i for i, c in enumerate(named)}
    places = site.places
    points = []
    if places is not None:
        for p, label, (x, y) in zip(photos, classes, places.tolist(), strict=True):
            page = p.page.removeprefix(naming.PAGES_DIR + "/").removesuffix(".html")
            points.append(
                [
                    round(x * MAP_SCALE),
                    round(y * MAP_SCALE),
                    colour.get(label, len(named)),
                    page,
                    p.key[: naming.PICTURE_KEY],
                ]
            )
    return {
        "by": "true class" if truths else "predicted class",
        "classes": legend,
        "scale": MAP_SCALE,
        "pages": naming.PAGES_DIR + "/",
        "pictures": naming.PICTURES_DIR + "/",
        "picture": naming.picture_suffix("input"),
        "points": points,
    }


MAP_SCALE = 10000
PROBABILITY_DIGITS = 6


def exported(probability: float) -> float:
    """A probability as the exports give it: rounded once, to 6 decimals."""
    return round(probability, PROBABILITY_DIGITS)


SEARCH_DIR = "search"
SHARD_BYTES = 256 * 1024
"""A shard larger than this is split by one more letter (up to MAX_SHARD_LETTERS), so typing never
fetches more than about this much, however many photos share a label's first letters."""
MIN_SHARD_LETTERS = 2
MAX_SHARD_LETTERS = 4


def shard_key(text: str, letters: int = MIN_SHARD_LETTERS) -> str:
    """The shard of a filter query, or of a label word, starting with ``text``: its first
    ``letters`` characters, lower-cased, as hex code points (safe in a file name, in any
    language)."""
    return _hex_key(text[:letters].lower())


@functools.lru_cache(maxsize=65536)
def _hex_key(prefix: str) -> str:
    """A prefix as hex code points (a few hundred distinct ones, asked for 100,000 times)."""
    return "-".join(f"{ord(c):x}" for c in prefix)


@functools.lru_cache(maxsize=4096)
def _word_starts(label: str) -> tuple[str, ...]:
    """Each word of a label from its first letter on, lower-cased (a word starts after anything
    that is not a letter or digit). Labels repeat: a thousand classes over any number of photos."""
    lower = label.lower()
    return tuple(
        lower[i:]
        for i, c in enumerate(lower)
        if c.isalnum() and (i == 0 or not lower[i - 1].isalnum())
    )


FILTER_SHOWN = 120
"""The most photos the filter shows for one query (filter.js's LIMIT): a shard keeps this many of
each label, and how many there are."""


def search_index(site: SiteContent) -> dict[str, bytes]:
    """The filter's data, in shards by the first letters of each word of the top-1 label: typing
    loads only the shard its first letters name, however large the folder.

    A query matches a photo by its label alone, so a shard holds labels, each with its number of
    photos and the first FILTER_SHOWN of them (all the filter shows): a label predicted for 5,000
    photos costs no more than one predicted for 120. Shards are keyed by two letters, and a shard
    over SHARD_BYTES is split by a third (and so on). Each is a script that hands its labels, as
    [label, count, photos], each photo as [position, source, page, thumbnail, percent], to
    ``reportgenShard(key, labels)``; ``keys.js`` names the shards there are.
    """
    groups: dict[str, list[list[Any]]] = {}
    counts: dict[str, int] = {}
    for position, p in enumerate(site.photos):
        label = p.top5[0].label
        counts[label] = counts.get(label, 0) + 1
        shown = groups.setdefault(label, [])
        if len(shown) < FILTER_SHOWN:
            percent = f"{p.top5[0].probability * 100:.1f}%"
            shown.append([position, p.source, p.page, p.crop, percent])
    entries = [
        ([label, counts[label], shown], _word_starts(label)) for label, shown in groups.items()
    ]
    files: dict[str, bytes] = {}
    _shard(entries, MIN_SHARD_LETTERS, files)
    keys = sorted(k.removeprefix(f"{SEARCH_DIR}/").removesuffix(".js") for k in files)
    files[f"{SEARCH_DIR}/keys.js"] = f"reportgenShardKeys({_compact(keys)});\n".encode()
    return dict(sorted(files.items()))


def _shard(
    entries: Sequence[tuple[list[Any], Sequence[str]]], letters: int, files: dict[str, bytes]
) -> None:
    """Group ``entries`` by the first ``letters`` letters of their words into ``files``,
    splitting a group that is too large by one more letter."""
    groups: dict[str, list[tuple[list[Any], Sequence[str]]]] = {}
    for entry, words in entries:
        for key in sorted({_hex_key(w[:letters]) for w in words}):
            groups.setdefault(key, []).append((entry, words))
    for key, members in groups.items():
        data = f"reportgenShard({json.dumps(key)}, {_compact([e for e, _ in members])});\n"
        if len(data) > SHARD_BYTES and letters < MAX_SHARD_LETTERS:
            # Only the words that begin with this key decide the finer shards.
            prefix = "".join(chr(int(c, 16)) for c in key.split("-"))
            narrower = [
                (e, [w for w in ws if len(w) > letters and w.startswith(prefix)])
                for e, ws in members
            ]
            _shard(narrower, letters + 1, files)
        else:
            files[f"{SEARCH_DIR}/{key}.js"] = data.encode("ascii")


def _compact(data: Any) -> str:
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"))


def predictions_csv(site: SiteContent) -> bytes:
    """predictions.csv: one row per photo, sorted by source, with its top-5 side by side."""
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    ranks = range(1, 1 + max((len(p.top5) for p in site.photos), default=5))
    out.writerow(
        ["source", "page", "truth"]
        + [f"top{k}_{field}" for k in ranks for field in ("index", "label", "probability")]
    )
    out.writerows(
        [
            p.source,
            p.page,
            p.truth or "",
            *[v for t in p.top5 for v in (t.index, t.label, exported(t.probability))],
        ]
        for p in sorted(site.photos, key=lambda p: p.source)
    )
    return buffer.getvalue().encode("utf-8")


def predictions_json(site: SiteContent) -> bytes:
    """The machine-readable summary, images sorted by source; stable bytes for stable input.

    One image a line, each written by json's C encoder: ``indent=`` takes the pure-Python encoder,
    2.7 s for 20,000 photos."""
    model = site.model
    head = {"arch": model.arch, "weights": model.weights, "sha256": model.sha256}
    images = (image_line(p) for p in sorted(site.photos, key=lambda p: p.source))
    skipped = (
        {"source": s.source, "reason": s.reason}
        for s in sorted(site.skipped, key=lambda s: s.source)
    )
    parts = [
        '{\n"model": ' + _line({**head, "decode": site.decode}),
        ',\n"images": [' + ",".join("\n" + image for image in images) + "\n]",
        ',\n"skipped": [' + ",".join("\n" + _line(item) for item in skipped) + "\n]",
        "\n}\n",
    ]
    return "".join(parts).encode("utf-8")


def _line(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def image_line(p: PhotoRecord) -> str:
    """One photo's line of predictions.json: the text :func:`_line` makes of
    ``{"source": …, "page": …, "top5": [{"index": …, "label": …, "probability": …}, …]}``,
    put together here from each value's JSON (floats and integers by their repr, as json writes
    them; a label, one of a thousand, encoded once): 0.20 s for 20,000 photos, against 0.27 s
    through json.dumps and the 120,000 small dicts it needed."""
    top5 = ", ".join(
        f'{{"index": {t.index!r}, "label": {_label_json(t.label)}, '
        f'"probability": {exported(t.probability)!r}}}'
        for t in p.top5
    )
    return f'{{"source": {_line(p.source)}, "page": {_line(p.page)}, "top5": [{top5}]}}'


@functools.lru_cache(maxsize=4096)
def _label_json(label: str) -> str:
    return _line(label)
