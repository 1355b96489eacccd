"""What AlexNet thinks is alike: each photo's nearest photos by fc7 code, and near-duplicates.

A photo's fc7 code is the 4096 outputs of AlexNet's second fully connected layer after its ReLU;
the AlexNet paper (Figure 4, right) shows that photos whose codes are close in Euclidean distance
look alike to the network, pixels apart. Here every photo gets its :data:`NEIGHBOURS` nearest
other photos of the folder, nearest first.

How they are found:

- up to :data:`EXACT_LIMIT` photos, exactly (every pair, by matrix products over blocks of rows);
- past that, with faiss's HNSW graph over the codes quantised to 8 bits a number
  (``IndexHNSWSQ``, 4 KB a photo), which finds 99.8 % of the exact neighbours at 20,000 photos in
  under half the time (see the README); float16 in the graph found no more, at twice the memory;
- after a build, only what changed: photos added are compared with every photo (exactly), and a
  photo whose list named a photo that is gone is searched again. So adding 10 photos to 20,000
  costs 10 rows, not 20,000.

Candidates are found through ``|a|² + |b|² - 2 a·b``, which loses the small distances to rounding;
every distance kept is then computed again directly, from ``a - b`` (float32 differences of the
float16 codes, squares summed in float64), so that a copy of a photo is at 0 and the order of near
ties does not depend on how the candidates were found.

The result is kept in the site's state (:func:`save` and :func:`load`) as one ``.npz``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, overload

import numpy as np

from .config import usable_cores
from .progress import bar

log = logging.getLogger("reportgen")

NEIGHBOURS = 6
"""Nearest photos listed on each photo page."""
EXACT_LIMIT = 5000
"""Folders up to this size are searched exactly (every pair): about 2 s at 5,000 photos on two
cores; the cost grows with the square of the folder."""
CANDIDATES = NEIGHBOURS + 6
"""Candidates per photo taken from the fast distances, then measured exactly."""
BLOCK = 1024
"""Rows of the distance matrix computed at once (BLOCK x N float32)."""
REFINE_BLOCK = 64
"""Rows whose candidates are measured exactly at once (64 x CANDIDATES x 4096 float32: 12 MB)."""
INCREMENTAL_SHARE = 0.1
"""A build that adds or must search again more than this share of the folder searches it all."""
DUPLICATE_DISTANCE = 0.08
"""Two photos are near-duplicates when the distance of their codes is below this share of the
codes' mean length (see :func:`near_duplicates` for how it was chosen)."""
FORMAT = 1


class CodeRows(Protocol):
    """A folder's fc7 codes, (N, 4096) float16 in source order, as the search reads them: a NumPy
    array, or :class:`reportgen.code_pack.Codes`, which reads rows from the site's pack as they are
    asked for (so a build never holds them all)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __len__(self) -> int: ...

    def __getitem__(self, rows: slice | np.ndarray, /) -> np.ndarray: ...

    def take(self, rows: np.ndarray, axis: int = 0, out: np.ndarray | None = None) -> np.ndarray:
        """The codes at positions ``rows`` (as ``ndarray.take``)."""


@dataclass(frozen=True)
class Neighbours:
    """Each photo's nearest photos, as positions in the folder's source order."""

    sources: tuple[str, ...]
    keys: tuple[str, ...]
    """Each photo's cache key (what its code was computed from)."""
    nearest: np.ndarray
    """(N, k) int32 positions, nearest first; -1 where a folder has fewer than k + 1 photos."""
    distances: np.ndarray
    """(N, k) float64 Euclidean distances of the fc7 codes; inf where ``nearest`` is -1."""
    norms: np.ndarray
    """(N,) float64 length of each photo's code."""
    method: str
    """'exact', 'faiss-hnsw' or 'incremental' (how this build found them)."""

    def of(self, position: int) -> list[tuple[int, float]]:
        """The nearest photos of the photo at ``position``: (position, distance), nearest first."""
        row, dist = self.nearest[position], self.distances[position]
        return [(int(j), float(d)) for j, d in zip(row, dist, strict=True) if j >= 0]


def find(
    sources: Sequence[str],
    keys: Sequence[str],
    codes: CodeRows,
    previous: Neighbours | None = None,
    *,
    progress: bool = False,
) -> Neighbours:
    """Every photo's nearest photos, from their ``codes`` ((N, 4096) float16, in source order),
    updating ``previous`` (the last build's) where it can. ``progress``: a bar over a search of
    the whole folder (an update takes a second)."""
    n = len(sources)
    squares = _squares(codes)
    norms = np.sqrt(squares.astype(np.float64))
    k = min(NEIGHBOURS, max(0, n - 1))
    plan = _changes(previous, sources, keys) if previous is not None else None
    if plan is not None:
        kept, far, redo, added = plan
        if len(redo) <= max(64, INCREMENTAL_SHARE * n):
            nearest, distances = _update(codes, squares, kept, far, redo, added, k)
            return Neighbours(tuple(sources), tuple(keys), nearest, distances, norms, "incremental")
    exact = n <= EXACT_LIMIT
    # Each photo's row is passed over twice (candidates, then their exact distances); three
    # times with the graph, which takes each photo in before any is searched.
    passes = 2 if exact else 3
    with bar("nearest photos", progress=progress, total=n * passes, counted=False) as shown:
        count = min(CANDIDATES, n - 1)
        if exact:
            candidates = _exact_candidates(codes, squares, np.arange(n), count, shown.update)
        else:
            candidates = _hnsw_candidates(codes, count, shown.update)
        nearest, distances = _refine(codes, np.arange(n), candidates, k, shown.update)
    method = "exact" if exact else "faiss-hnsw"
    return Neighbours(tuple(sources), tuple(keys), nearest, distances, norms, method)


def widen(codes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float16 codes as float32 (into ``out``, if given): by
    :func:`reportgen.inference.halves.widen` where torch is imported (20,000 codes in 0.025 s
    here; a build that ran the model has it, in its own process or beside the copy that ran it),
    else by NumPy (0.12 s alone, far slower beside other work), not worth torch's import (1.2 s)
    when the model did not run at all. Both conversions are exact."""
    if "torch" in sys.modules:
        from .inference.halves import widen as widen_with_torch

        return widen_with_torch(codes, out)
    if out is None:
        return codes.astype(np.float32)
    np.copyto(out, codes)
    return out


def _blocks(codes: CodeRows, rows: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    """(start, float32 block) over ``codes`` (or over the codes at ``rows``), BLOCK rows at a
    time, widened into one buffer reused (a fresh array of this size costs more in page faults
    than the arithmetic done in it). Each block is overwritten by the next."""
    count = len(codes) if rows is None else len(rows)
    buffer = np.empty((min(BLOCK, max(count, 1)), codes.shape[1]), dtype=np.float32)
    for start in range(0, count, BLOCK):
        part = codes[start : start + BLOCK] if rows is None else codes[rows[start : start + BLOCK]]
        yield start, widen(part, buffer[: len(part)])


def _squares(codes: CodeRows) -> np.ndarray:
    """Each row's squared length, float32."""
    out = np.empty(len(codes), dtype=np.float32)
    for start, block in _blocks(codes):
        out[start : start + len(block)] = np.einsum("ij,ij->i", block, block)
    return out


def _untold(rows: int) -> None:
    """Where no progress bar is told how many rows are done."""


def _exact_candidates(
    codes: CodeRows,
    squares: np.ndarray,
    rows: np.ndarray,
    count: int,
    done: Callable[[int], object] = _untold,
) -> np.ndarray:
    """For each of ``rows``, the ``count`` other photos nearest to it by the fast distance
    (``squares``: each code's squared length), (len(rows), count) positions (unordered); -1 fills
    a folder too small. ``done`` is told how many rows each block finished."""
    n = len(codes)
    out = np.full((len(rows), max(count, 0)), -1, dtype=np.int64)
    if count <= 0:
        return out
    for start in range(0, len(rows), BLOCK):
        chosen = rows[start : start + BLOCK]
        block = widen(codes[chosen])
        dist = np.empty((len(chosen), n), dtype=np.float32)
        for c, column in _blocks(codes):
            np.matmul(block, column.T, out=dist[:, c : c + len(column)])
        dist *= -2.0
        dist += squares
        dist[np.arange(len(chosen)), chosen] = np.inf  # not its own neighbour
        part = np.argpartition(dist, count - 1, axis=1)[:, :count]
        out[start : start + len(chosen)] = part
        done(len(chosen))
    return out


def _hnsw_candidates(
    codes: CodeRows, count: int, done: Callable[[int], object] = _untold
) -> np.ndarray:
    """Candidates from faiss's HNSW graph over 8-bit codes (an approximate search); ``done`` is
    told how many rows each block added, then searched."""
    import faiss  # only for large folders: importing it takes a while

    faiss.omp_set_num_threads(usable_cores())
    index = faiss.IndexHNSWSQ(codes.shape[1], faiss.ScalarQuantizer.QT_8bit, 16)
    index.hnsw.efConstruction = 64
    index.train(widen(codes[:BLOCK]))
    for _, block in _blocks(codes):
        index.add(block)
        done(len(block))
    index.hnsw.efSearch = 64
    out = np.empty((len(codes), count), dtype=np.int64)
    for start, block in _blocks(codes):
        _, found = index.search(block, count + 1)
        for i, row in enumerate(found):
            others = [j for j in row.tolist() if j != start + i and j >= 0][:count]
            out[start + i] = others + [-1] * (count - len(others))
        done(len(block))
    return out


def _refine(
    codes: CodeRows,
    rows: np.ndarray,
    candidates: np.ndarray,
    k: int,
    done: Callable[[int], object] = _untold,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of each row's candidates by the exact distance, nearest first (ties by
    position, so by source); -1 candidates, repeats and the row itself are left out. ``done`` is
    told how many rows each block finished."""
    nearest = np.full((len(rows), NEIGHBOURS), -1, dtype=np.int32)
    distances = np.full((len(rows), NEIGHBOURS), np.inf)
    if not len(rows) or not candidates.shape[1]:
        return nearest, distances
    found = np.sort(candidates, axis=1)
    bad = (found < 0) | (found == rows[:, None])
    bad[:, 1:] |= found[:, 1:] == found[:, :-1]
    # Buffers reused block after block: a fresh array of this size costs more in page faults
    # than the arithmetic done in it.
    width = found.shape[1]
    gathered = np.empty((REFINE_BLOCK, width, codes.shape[1]), dtype=codes.dtype)
    diff = np.empty(gathered.shape, dtype=np.float32)
    for start in range(0, len(rows), REFINE_BLOCK):
        chosen, skip = found[start : start + REFINE_BLOCK], bad[start : start + REFINE_BLOCK]
        m = len(chosen)
        codes.take(np.where(skip, 0, chosen), axis=0, out=gathered[:m])
        widen(gathered[:m], diff[:m])
        diff[:m] -= widen(codes[rows[start : start + m]])[:, None, :]
        np.square(diff[:m], out=diff[:m])
        dist = np.sqrt(diff[:m].sum(axis=2, dtype=np.float64))
        dist[skip] = np.inf
        # Nearest first; ties by position (the candidates are sorted, and the sort is stable).
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        picked = np.take_along_axis(chosen, order, axis=1)
        measured = np.take_along_axis(dist, order, axis=1)
        real = np.isfinite(measured)
        nearest[start : start + m, : order.shape[1]] = np.where(real, picked, -1)
        distances[start : start + m, : order.shape[1]] = measured
        done(m)
    return nearest, distances


def _changes(
    previous: Neighbours, sources: Sequence[str], keys: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """How the folder changed since ``previous``: each photo's list as it was, in new positions
    (-1 for a photo gone), and its distances; the photos to search again in full (new
    ones, changed ones, and those whose list named a photo that is gone); and the new ones. None
    when nothing can be reused."""
    if previous.nearest.shape[1:] != (NEIGHBOURS,) or not len(previous.sources):
        return None
    was = positions_before(previous, sources, keys)
    now = np.full(len(previous.sources) + 1, -1, dtype=np.int64)  # old position -> new; -1: gone
    now[was[was >= 0]] = np.flatnonzero(was >= 0)
    added = np.flatnonzero(was < 0)
    moved = np.where(previous.nearest >= 0, now[previous.nearest], -2)  # -2: never was one
    lost = np.any(moved == -1, axis=1)
    short = np.any(moved == -2, axis=1)  # a list that was short may now fill up: search it again
    redo_old = np.flatnonzero(lost | short)
    redo = np.union1d(added, now[redo_old[now[redo_old] >= 0]])
    kept = np.full((len(sources), NEIGHBOURS), -1, dtype=np.int64)
    kept[was >= 0] = moved[was[was >= 0]]
    far = np.full((len(sources), NEIGHBOURS), np.inf)
    far[was >= 0] = previous.distances[was[was >= 0]]
    return kept, far, redo, added


def positions_before(
    previous: Neighbours, sources: Sequence[str], keys: Sequence[str]
) -> np.ndarray:
    """Each photo's position in ``previous`` (the last build's folder), -1 for a photo that is new
    or whose bytes changed (its source or its key differs)."""
    before = {sk: i for i, sk in enumerate(zip(previous.sources, previous.keys, strict=True))}
    return np.array([before.get(sk, -1) for sk in zip(sources, keys, strict=True)], dtype=np.int64)


def _update(
    codes: CodeRows,
    squares: np.ndarray,
    kept: np.ndarray,
    far: np.ndarray,
    redo: np.ndarray,
    added: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The lists after a small change: rows in ``redo`` searched in full; the others keep their
    lists and distances (``kept``, ``far``), unless an added photo may be nearer than their last:
    those are measured again among their old list and the added photos."""
    n = len(codes)
    nearest = np.full((n, NEIGHBOURS), -1, dtype=np.int32)
    distances = np.full((n, NEIGHBOURS), np.inf)
    rest = np.setdiff1d(np.arange(n), redo)
    nearest[rest], distances[rest] = kept[rest], far[rest]
    if len(redo):
        candidates = _exact_candidates(codes, squares, redo, min(CANDIDATES, n - 1))
        nearest[redo], distances[redo] = _refine(codes, redo, candidates, k)
    if len(rest) and len(added):
        touched, near = _near_added(codes, squares, added, rest, far[rest, -1])
        if len(touched):
            candidates = np.concatenate([kept[touched], near], axis=1)
            nearest[touched], distances[touched] = _refine(codes, touched, candidates, k)
    return nearest, distances


def _near_added(
    codes: CodeRows, squares: np.ndarray, added: np.ndarray, rows: np.ndarray, far: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The rows that an added photo may be nearer to than their last neighbour (at ``far``),
    and for each the added photos that may be (-1 elsewhere).

    The fast float32 distance is off by at most a few float32 roundings of |a|² + |b|²; the margin
    allows a hundred times that, and whatever passes is measured exactly."""
    new = widen(codes[added])
    new_squares = squares[added]
    touched, near = [], []
    for start, block in _blocks(codes, rows):
        block_rows = rows[start : start + BLOCK]
        both = squares[block_rows][:, None] + new_squares[None, :]
        d2 = both - 2 * (block @ new.T)
        margin = 1e-5 * both
        limit = far[start : start + BLOCK, None] ** 2
        hit = d2 <= limit + margin
        some = np.flatnonzero(hit.any(axis=1))
        touched.append(block_rows[some])
        near.append(np.where(hit[some], added[None, :], -1))
    return np.concatenate(touched), np.concatenate(near)


# --- near-duplicates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Duplicate:
    """Two photos whose codes are nearly the same."""

    first: int
    """Position of one photo (the one that sorts first)."""
    second: int
    distance: float
    relative: float
    """``distance`` over the mean length of the two codes."""


class Duplicates(Sequence[Duplicate]):
    """Near-duplicate pairs, closest first, kept as arrays: a :class:`Duplicate` is made only
    for a pair that is read (the summary lists 200 and counts the rest; a folder of random
    weights' codes has 325,000 pairs at 100,000 photos, 0.48 s to make as objects)."""

    def __init__(
        self, first: np.ndarray, second: np.ndarray, distance: np.ndarray, relative: np.ndarray
    ):
        self._columns = (first, second, distance, relative)

    def __len__(self) -> int:
        return len(self._columns[0])

    @overload
    def __getitem__(self, index: int) -> Duplicate: ...

    @overload
    def __getitem__(self, index: slice) -> list[Duplicate]: ...

    def __getitem__(self, index: int | slice) -> Duplicate | list[Duplicate]:
        if isinstance(index, slice):
            rows = zip(*(column[index].tolist() for column in self._columns), strict=True)
            return [Duplicate(*row) for row in rows]
        first, second, distance, relative = (column[index] for column in self._columns)
        return Duplicate(int(first), int(second), float(distance), float(relative))


def near_duplicates(found: Neighbours, threshold: float = DUPLICATE_DISTANCE) -> Duplicates:
    """Pairs of photos closer than ``threshold`` times their codes' mean length, closest first.

    A distance relative to the codes' length does not depend on the scale of the weights' fc7
    outputs. The threshold was set on 22 of scikit-image's photos, with copies, under two seeded
    random weights (the only weights this project can test with; the pretrained ones cannot be
    downloaded where it is built): exact copies are at 0; a copy saved again as JPEG 75 at 0.016,
    copies resized to half at 0.037 to 0.041; the nearest two different photos (grass and gravel,
    two textures) at 0.12 to 0.13. 0.08 lies between, twice the farthest copy. tests/test_similar.py
    checks the copies and the distinct photos on every run. Each photo's pairs come from its
    nearest list, so a photo with more than NEIGHBOURS copies shows only the nearest of them.
    """
    # Over every listed pair at once: a loop over them took 0.5 s at 20,000 photos.
    n, k = found.nearest.shape if found.nearest.ndim == 2 else (0, 0)
    first = np.repeat(np.arange(n), k)
    second = found.nearest.reshape(-1).astype(np.int64)
    distance = found.distances.reshape(-1)
    listed = second >= 0
    first, second, distance = first[listed], second[listed], distance[listed]
    scale = (found.norms[first] + found.norms[second]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(scale > 0, distance / scale, np.where(distance == 0, 0.0, np.inf))
    close = np.flatnonzero(relative < threshold)[::-1]  # a pair listed twice: the later listing
    low, high = np.minimum(first, second)[close], np.maximum(first, second)[close]
    _, once = np.unique(low * max(n, 1) + high, return_index=True)
    close, low, high = close[once], low[once], high[once]
    order = np.lexsort((high, low, relative[close]))  # closest first, then by position
    return Duplicates(low[order], high[order], distance[close][order], relative[close][order])


# --- keeping them between builds --------------------------------------------------------------


def save(path: Path, found: Neighbours, positions: np.ndarray | None) -> None:
    """Keep the neighbours (and the map's positions) for the next build, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            format=np.array(FORMAT),
            sources=np.array(found.sources, dtype=str),
            keys=np.array(found.keys, dtype=str),
            nearest=found.nearest,
            distances=found.distances,
            norms=found.norms,
            positions=positions if positions is not None else np.zeros((0, 2)),
        )
    os.replace(tmp, path)


def load(path: Path) -> tuple[Neighbours, np.ndarray | None] | None:
    """The last build's neighbours and map positions; None when there are none, or they cannot
    be used (then everything is found again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != FORMAT:
                return None
            sources = tuple(data["sources"].tolist())
            found = Neighbours(
                sources=sources,
                keys=tuple(data["keys"].tolist()),
                nearest=data["nearest"].astype(np.int32),
                distances=data["distances"],
                norms=data["norms"],
                method="saved",
            )
            positions = data["positions"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.info("the saved nearest photos cannot be used (%s); finding them again", exc)
        return None
    if found.nearest.shape != (len(sources), NEIGHBOURS):
        return None
    return found, positions if len(positions) == len(sources) else None
