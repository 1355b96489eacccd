"""Nearest photos and the map, over the fc7 codes of a site already built. Prints figures.

    python benchmarks/bench_similar.py SITE_DIR        # e.g. bench_build.py --scale's site

Times, on the same codes: the exact search (every pair), faiss's HNSW graph (what builds use past
reportgen.similar.EXACT_LIMIT photos) and its recall against the exact search, an update after
10 photos are added, the map (t-SNE of the landmarks, the rest placed among them), and the peak
memory each adds to the codes (float16, 8 KB a photo).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from reportgen import folder_map, similar
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
