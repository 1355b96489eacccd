"""Nearest photos and the map, over the fc7 codes of a site already built. Prints figures.

    python benchmarks/bench_similar.py SITE_DIR        # e.g. bench_build.py --scale's site
    python benchmarks/bench_similar.py SITE_DIR --stage --times 5 --workdir DIR

Times, on the same codes: the exact search (every pair), faiss's HNSW graph (what builds use past
reportgen.similar.EXACT_LIMIT photos) and its recall against the exact search, an update after
10 photos are added, the map (t-SNE of the landmarks, the rest placed among them), and the peak
memory each adds to the codes (float16, 8 KB a photo).

``--stage`` times what a cold build's neighbour stage does (the graph search and the map) with the
codes held in memory, as builds did, and read from the site's pack as they are needed, as builds
do: each in a fresh interpreter, with its peak memory above where it began. ``--times K`` makes
the folder K times larger first: each further copy of a code is 0.7 of it and 0.3 of another
photo's, written with its own key to a pack in ``--workdir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reportgen import code_pack, folder_map, similar
from reportgen.heap import hand_back
from reportgen.site.output import OutputFolder


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith(field))


def peak_above_now():  # type: ignore[no-untyped-def]
    """Resets the peak RSS (Linux: /proc/self/clear_refs) and returns a function that tells how
    many MB above the RSS of now the peak has been since."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    base = _status("VmRSS:")
    return lambda: _status("VmHWM:") - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="a site built by reportgen (its state is read)")
    parser.add_argument("--stage", action="store_true", help="time the build's stage (see above)")
    parser.add_argument("--times", type=int, default=1, help="with --stage: the folder K times")
    parser.add_argument("--workdir", type=Path, help="with --times: where the larger pack goes")
    parser.add_argument("--variant", choices=("held", "pack"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return stage_variant(args.site, args.variant)
    if args.stage:
        return stage(args)
    state = OutputFolder(args.site).state
    saved = similar.load(state / "similar.npz")
    if saved is None:
        raise SystemExit(f"no nearest photos saved for {args.site}: build it first")
    found, _ = saved
    cache = state / "cache" / "codes"
    t = time.perf_counter()
    codes = np.stack(
        [np.fromfile(cache / k[:2] / f"{k}.f16", dtype=np.float16) for k in found.keys]
    )
    n = len(codes)
    print(f"{n} photos; reading their codes: {time.perf_counter() - t:.2f} s")

    names = list(found.sources)
    timings = {}
    results = {}
    for method, limit in (("exact", n), ("faiss-hnsw", 0)):
        similar.EXACT_LIMIT = limit
        peak = peak_above_now()
        t = time.perf_counter()
        results[method] = similar.find(names, list(found.keys), codes)
        timings[method] = time.perf_counter() - t
        print(f"{method:10s} {timings[method]:7.2f} s, peak {peak()} MB above the codes")
    exact, graph = results["exact"].nearest, results["faiss-hnsw"].nearest
    recall = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(graph, exact, strict=True)])
    same = np.mean(np.all(graph == exact, axis=1))
    print(f"HNSW recall of the 6 exact nearest: {recall:.4f}; lists identical: {same:.4f}")

    # 10 photos added: the first 10 taken out (searched exactly, so that the update can be
    # compared with the exact search of all), then put back.
    similar.EXACT_LIMIT = n
    rest = list(range(10, n))
    before = similar.find([names[i] for i in rest], [found.keys[i] for i in rest], codes[rest])
    t = time.perf_counter()
    after = similar.find(names, list(found.keys), codes, before)
    print(f"update after 10 added ({after.method}): {time.perf_counter() - t:.2f} s")
    assert np.array_equal(after.nearest, exact), "the update differs from the exact search"

    peak = peak_above_now()
    t = time.perf_counter()
    places = folder_map.layout(codes, results["exact"])
    print(
        f"map of {n} ({min(n, folder_map.LANDMARKS)} by t-SNE): {time.perf_counter() - t:.2f} s,"
        f" peak {peak()} MB above"
    )
    t = time.perf_counter()
    folder_map.layout(codes, after, (before, places[10:]))
    print(f"map after 10 added: {time.perf_counter() - t:.3f} s")


def stage(args: argparse.Namespace) -> None:
    """Both variants of the neighbour stage, each in a fresh interpreter, on the same pack."""
    pack = OutputFolder(args.site).state / "codes.pack"
    if args.times > 1:
        if args.workdir is None:
            raise SystemExit("--times needs --workdir (where the larger pack is written)")
        pack = grown_pack(pack, args.times, args.workdir)
    for variant in ("held", "pack", "held", "pack"):
        child = [sys.executable, __file__, str(pack), "--variant", variant]
        figures = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
        print(
            f"codes {variant:4s}: {figures['n']} photos; search {figures['search']:6.2f} s, "
            f"map {figures['map']:6.2f} s; peak {figures['peak']:5.0f} MB above the start "
            f"({figures['start']:.0f} MB)"
        )


def grown_pack(pack: Path, times: int, workdir: Path) -> Path:
    """A pack of the codes in ``pack`` and ``times - 1`` further copies of each, mixed."""
    base = np.fromfile(pack, dtype=code_pack.RECORD)["code"]
    out = workdir / f"codes-x{times}.pack"
    if out.is_file() and out.stat().st_size == times * len(base) * code_pack.RECORD.itemsize:
        return out
    rng = np.random.default_rng(0)
    workdir.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:
        for copy in range(times):
            records = np.empty(len(base), dtype=code_pack.RECORD)
            records["key"] = [_key(copy, i) for i in range(len(base))]
            records["code"] = 0.7 * base + 0.3 * base[rng.permutation(len(base))] if copy else base
            records.tofile(fh)
    return out


def _key(copy: int, i: int) -> bytes:
    return hashlib.sha256(f"{copy}/{i}".encode()).hexdigest().encode("ascii")


def stage_variant(pack: Path, variant: str) -> None:
    """One variant of the stage over every code in ``pack``; prints its figures as JSON."""
    import torch  # noqa: F401  # as in a cold build, which ran the model: codes widen by torch

    start = _status("VmRSS:")
    keys = [k.decode("ascii") for k in np.fromfile(pack, dtype=code_pack.RECORD)["key"]]
    names = [f"photo-{i:06d}.jpg" for i in range(len(keys))]
    peak = peak_above_now()
    t = time.perf_counter()
    # The pack holds every code: no cache is needed.
    read = code_pack.read if variant == "held" else code_pack.load
    codes = read(pack, keys, cache=None)  # type: ignore[arg-type]
    found = similar.find(names, keys, codes)
    hand_back()
    searched = time.perf_counter()
    folder_map.layout(codes, found)
    mapped = time.perf_counter()
    figures = {"n": len(keys), "search": searched - t, "map": mapped - searched}
    print(json.dumps({**figures, "peak": peak(), "start": start}))


if __name__ == "__main__":
    main()
