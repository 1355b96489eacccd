"""A map of the folder: every photo's fc7 code embedded in two dimensions with t-SNE.

t-SNE (openTSNE, Barnes-Hut, seeded: it gives the same map bit for bit on every run, on any
number of cores) runs over the codes reduced to 50 dimensions by PCA (scikit-learn, seeded). Past
:data:`LANDMARKS` photos it runs over that many, spread evenly through the folder's source order,
and every other photo is placed among the landmarks nearest to it (a weighted mean of their
places): t-SNE's cost grows faster than the folder, and a map of 20,000 thumbnails shows its
clusters all the same.

Between builds the map is kept, as the neighbours are (:mod:`reportgen.similar`): a photo keeps
its place, and a new one is placed among its nearest photos. So the map a user has learnt does
not reshuffle when ten photos are added; a build that adds more than a tenth of the folder (or
``--full``) draws it anew.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import interrupts
from .config import usable_cores
from .progress import bar
from .similar import INCREMENTAL_SHARE, CodeRows, Neighbours, positions_before, widen

LANDMARKS = 2000
"""Photos t-SNE itself places; about 4 s on one core, 2.5 s on two."""
PCA_DIMENSIONS = 50
TSNE_FROM = 8
"""Photos from which the map is t-SNE's; fewer lie along their codes' two main directions."""
PLACED_FROM = 5
"""Landmarks a photo that is not one is placed among."""
PLACE_BLOCK = 256
"""Photos placed among the landmarks at a time. A block's widened codes, distances and their
order take about 50 KB a photo: on 20,000 synthetic codes, blocks of 1,024 rose 52 MB above what
t-SNE left, past the PCA's peak (so the map's highest point), and blocks of 256 rose 5 MB; the
whole map took 9.6 to 9.8 s either way (9.1 to 10.7 s with 1,024)."""
SEED = 0
EARLY_ITERATIONS, TSNE_ITERATIONS = 250, 350
"""t-SNE's iterations with early exaggeration (openTSNE's default), then after it."""
TOLD_EVERY = 25
"""t-SNE's iterations between two steps of the map's bar: 2,000 landmarks take about 4 s of
iterations on one core, silent before, and openTSNE's telling (which also works out the map's
error) costs about 1 % of them."""


def layout(
    codes: CodeRows,
    found: Neighbours,
    previous: tuple[Neighbours, np.ndarray] | None = None,
    *,
    progress: bool = False,
) -> np.ndarray:
    """Each photo's place on the map, (N, 2) in [0, 1], in the folder's source order, from their
    ``codes`` ((N, 4096) float16).

    ``previous`` is the last build's neighbours and places: photos still there keep theirs.
    ``progress``: a bar over the photos placed on a map drawn anew."""
    n = len(found.sources)
    kept = _kept(found, previous) if previous is not None else None
    if kept is not None:
        places, new = kept
        if len(new) <= max(64, INCREMENTAL_SHARE * n):
            placed = _place_new(places, new, found)
            if placed is not None:
                return placed
    with bar("map", progress=progress, total=n) as shown:
        return _normalised(_embed(codes, shown.update))


def _kept(
    found: Neighbours, previous: tuple[Neighbours, np.ndarray]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Places of the photos the last map had (NaN for the new ones), and the new ones."""
    before, positions = previous
    if positions is None or len(positions) != len(before.sources):
        return None
    was = positions_before(before, found.sources, found.keys)
    if not np.any(was >= 0):
        return None
    places = np.full((len(was), 2), np.nan)
    places[was >= 0] = positions[was[was >= 0]]
    return places, np.flatnonzero(was < 0)


def _place_new(places: np.ndarray, new: np.ndarray, found: Neighbours) -> np.ndarray | None:
    """``places`` with each new photo put among its nearest photos that have a place; None if one
    has none (then the map is drawn anew)."""
    out = places.copy()
    for i in new.tolist():
        near = [(j, d) for j, d in found.of(i) if not np.isnan(places[j, 0])]
        if not near:
            return None
        chosen, dist = zip(*near, strict=True)
        out[i] = _weighted(places[list(chosen)][None], np.array([dist]))[0]
    return out


def _weighted(points: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Each row's mean of its ``points`` (rows, k, 2) weighted by closeness, ``distances``
    (rows, k): the inverse square, so a point at distance 0 wins outright."""
    weights = 1.0 / np.maximum(distances, 1e-9) ** 2
    return np.einsum("ij,ijk->ik", weights, points) / weights.sum(1)[:, None]


def _embed(all_codes: CodeRows, done: Callable[[int], object]) -> np.ndarray:
    """A fresh map: t-SNE of the landmarks, the other photos placed among them (``done`` is told
    how many photos each step placed)."""
    n = len(all_codes)
    if n == 1:
        return np.zeros((1, 2))
    landmarks = np.unique(np.linspace(0, n - 1, min(n, LANDMARKS)).round().astype(np.int64))
    codes = widen(all_codes[landmarks])
    if not np.any(codes != codes[0]):  # all alike (copies, or a head that outputs nothing)
        return np.zeros((n, 2))
    if n < TSNE_FROM:  # every photo a landmark, too few for t-SNE's neighbourhoods
        done(n)
        return _main_directions(codes)
    reduced, project = _pca(codes)
    places = _tsne(reduced, done)
    out = np.zeros((n, 2))
    out[landmarks] = places
    others = np.setdiff1d(np.arange(n), landmarks)
    squares = np.einsum("ij,ij->i", reduced, reduced)
    for start in range(0, len(others), PLACE_BLOCK):
        rows = others[start : start + PLACE_BLOCK]
        points = project(widen(all_codes[rows]))
        d2 = np.einsum("ij,ij->i", points, points)[:, None] + squares - 2 * (points @ reduced.T)
        nearest = np.argsort(d2, axis=1, kind="stable")[:, :PLACED_FROM]
        dist = np.sqrt(np.maximum(np.take_along_axis(d2, nearest, axis=1), 0))
        out[rows] = _weighted(places[nearest], dist)
        done(len(rows))
    return out


def _main_directions(codes: np.ndarray) -> np.ndarray:
    """Each code's place along the codes' two main directions: a PCA's first two components,
    signed as scikit-learn signs them, worked out with NumPy alone (importing scikit-learn took
    a second of the four and a half a build of the five sample photos took)."""
    centred = codes.astype(np.float64) - codes.mean(0, dtype=np.float64)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = min(2, len(codes) - 1)
    signs = np.sign(vt[np.arange(axes), np.abs(vt[:axes]).argmax(1)])
    places = np.zeros((len(codes), 2))
    places[:, :axes] = u[:, :axes] * (s[:axes] * signs)
    return places


def _pca(codes: np.ndarray):  # type: ignore[no-untyped-def]
    """The codes reduced to at most PCA_DIMENSIONS, and the projection for other codes."""
    from sklearn.decomposition import PCA

    dimensions = max(1, min(PCA_DIMENSIONS, len(codes) - 1, codes.shape[1]))
    pca = PCA(
        dimensions, svd_solver="randomized" if len(codes) > 200 else "full", random_state=SEED
    )
    reduced = pca.fit_transform(codes).astype(np.float64)
    return reduced, lambda more: pca.transform(more).astype(np.float64)


def _tsne(points: np.ndarray, done: Callable[[int], object]) -> np.ndarray:
    """t-SNE's places for ``points``; ``done`` is told of them in parts as its iterations go by.

    Each point's neighbourhood is found on one thread, as openTSNE finds it with one: how many
    threads build Annoy's trees changes the trees. The iterations, most of t-SNE's time, run on
    every core: openTSNE sums each point's forces on its own and their total in order, so the
    places are those of one thread bit for bit (``test_similar`` holds it to that).

    Ctrl-C and SIGTERM are held back meanwhile and handled at the next callback, between two
    iterations: raised inside openTSNE's extension, Ctrl-C was seen to crash the build."""
    with interrupts.held() as holding:
        return _tsne_held(points, done, holding)


def _tsne_held(
    points: np.ndarray, done: Callable[[int], object], holding: interrupts.Held
) -> np.ndarray:
    from openTSNE import TSNE
    from openTSNE.affinity import MultiscaleMixture

    perplexity = min(30.0, (len(points) - 1) / 3)
    calls = EARLY_ITERATIONS // TOLD_EVERY + TSNE_ITERATIONS // TOLD_EVERY
    told = _Parts(len(points), calls, done, holding.deliver)
    tsne = TSNE(
        perplexity=perplexity,
        early_exaggeration_iter=EARLY_ITERATIONS,
        n_iter=TSNE_ITERATIONS,
        negative_gradient_method="bh",
        n_jobs=usable_cores(),
        random_state=SEED,
        verbose=False,
        callbacks=[told],
        callbacks_every_iters=TOLD_EVERY,
    )
    neighbourhoods = MultiscaleMixture(
        points,
        perplexity,
        method=tsne.neighbors,
        metric=tsne.metric,
        metric_params=tsne.metric_params,
        n_jobs=1,
        random_state=SEED,
        verbose=False,
        knn_kwargs=tsne.knn_kwargs,
    )
    places = np.asarray(tsne.fit(points, affinities=neighbourhoods), dtype=np.float64)
    told.rest()
    return places


class _Parts:
    """Tells ``done`` of ``whole`` in ``calls`` near-equal parts, one at each call (openTSNE calls
    a callback with its iteration, the map's error and its places; a true answer would stop it).
    ``between`` is called first each time: where a Ctrl-C held back is raised."""

    def __init__(
        self,
        whole: int,
        calls: int,
        done: Callable[[int], object],
        between: Callable[[], None],
    ) -> None:
        self.whole, self.calls, self.done, self.between = whole, max(1, calls), done, between
        self.called = self.told = 0

    def __call__(self, *_: object) -> bool:
        self.between()
        self.called += 1
        self._tell(min(self.whole, self.whole * self.called // self.calls))
        return False

    def rest(self) -> None:
        self._tell(self.whole)

    def _tell(self, upto: int) -> None:
        if upto > self.told:
            self.done(upto - self.told)
            self.told = upto


def _normalised(places: np.ndarray) -> np.ndarray:
    """``places`` moved and scaled into [0, 1] on their longer side, centred on the other."""
    low, high = places.min(0), places.max(0)
    span = float((high - low).max())
    if span <= 0:
        return np.full_like(places, 0.5)
    out = (places - low) / span
    return out + (1 - (high - low) / span) / 2
