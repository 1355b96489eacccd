"""Where a photo's CPU time goes in a cold build's model stage, part by part. Prints figures only.

    python benchmarks/bench_parts.py --images 256

On one thread, one part at a time (the least of three runs), over N photos made as
``bench_build.py`` makes them (random weights): the parts the model-only bound does (decoding a
photo to its crop, the forward pass), and those only the build does (the crop's JPEG, conv1's
grey levels, the Grad-CAM maps, the grid and its JPEG, the record with its heat maps, the cache
entry written). The last line is the most a build's steady rate can be against the bound's where
the bound already keeps every core busy: bound / (bound + extras), before the stages that follow
the model (nearest photos, map, pages, commit), which ``bench_build.py --scale`` times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import make_photos  # noqa: E402

BATCH = 64


class Parts:
    """CPU seconds of each part, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, part: str, work: Callable[..., Any], *args: Any) -> Any:
        start = time.process_time()
        result = work(*args)
        self.seconds[part] = self.seconds.get(part, 0.0) + time.process_time() - start
        return result


def decoding(parts: Parts, sources: list[Any]) -> list[np.ndarray]:
    """The workers' parts: each photo decoded to its crop (the bound's), and the crop's JPEG."""
    from reportgen.decoding import preprocess
    from reportgen.inference import pictures
    from reportgen.inference.pipeline import open_rgb

    def crop(path: Path) -> np.ndarray:
        decoded = open_rgb(path)
        return np.asarray(preprocess.crop_for_model(decoded.image, decoded.turn))

    crops = [parts.time("decode to the crop [bound]", crop, s.path) for s in sources]
    for pixels in crops:
        parts.time("crop's JPEG", pictures.encode_jpeg, pixels, pictures.CROP_QUALITY)
    return crops


def model(parts: Parts, crops: list[np.ndarray], loaded: Any) -> None:
    """The forward pass (the bound's), and what the build computes beside it."""
    import torch

    from reportgen.inference import pictures
    from reportgen.inference.cam import CamRecorder
    from reportgen.inference.pipeline import model_inputs, prepare
    from reportgen.layout import layer_grid

    cpu = torch.device("cpu")
    net = prepare(loaded.model, cpu)
    with torch.inference_mode(), CamRecorder(net) as cam:
        for start in range(0, len(crops), BATCH):
            pixels = torch.from_numpy(np.stack(crops[start : start + BATCH]))
            x = model_inputs(pixels, loaded.transforms, cpu)
            logits = parts.time("forward pass [bound]", net, x)
            top = torch.softmax(logits, dim=1).topk(5, dim=1).indices
            conv1 = net.features[0](x)
            levels = parts.time("conv1's grey levels and means", _levels, pictures, conv1)
            grid = layer_grid("conv1", tuple(conv1.shape[1:]))
            parts.time("conv1 grid tiled", pictures.grey_grids, levels, grid)
            parts.time("Grad-CAM, top-5", cam.cams, top)


def _levels(pictures: Any, conv1: Any) -> Any:
    conv1.mean(dim=(2, 3))
    return pictures.activations(conv1, normalize="map").levels


def results(parts: Parts, sources: list[Any], loaded: Any) -> None:
    """The encoder thread's parts, on the build's own batches: grid, record, cache entry."""
    import torch

    from reportgen.cache import ResultCache
    from reportgen.inference import pictures, stage
    from reportgen.inference.pipeline import Decoding, PhotoDataset, run_batches
    from reportgen.layout import layer_grids

    with tempfile.TemporaryDirectory() as tmp:
        cache = ResultCache(Path(tmp), "bench", ("input", "conv1"))
        entry = stage.describe(loaded, cache)
        grids = layer_grids(("conv1",), entry.summary.output_shapes)
        photos = PhotoDataset(sources, max_pixels=None, allow_truncated=False)
        with Decoding(photos, batch_size=BATCH, workers=0, pin=False) as decoded:
            batches = [out for out, _ in run_batches(loaded, decoded, torch.device("cpu"), grids)]
        for number, out in enumerate(batches):
            for grid in out.grids["conv1"]:
                parts.time("conv1 grid's JPEG", pictures.encode_jpeg, grid, pictures.GRID_QUALITY)
            records = stage._records(out, entry.categories)
            parts.time("records and heat maps", list, records)
            keys = [f"{number:08x}{i:056x}" for i in out.indices]
            done = list(stage.encode_batch(keys, out, entry.categories))
            for result in done:
                parts.time("cache entry written (4 files)", stage.store_result, cache, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="runs; each part's least is kept")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    import torch

    from reportgen.discover import discover
    from reportgen.inference.model import load_model
    from reportgen.weights import resolve_weights

    torch.set_num_threads(1)
    folder = args.workdir / f"parts-{args.images}"
    if len(list(folder.glob("*.jpg"))) != args.images:
        make_photos(folder, args.images, seed=0)
    sources, _ = discover(folder)
    loaded = load_model(resolve_weights("random"))
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        parts = Parts()
        crops = decoding(parts, sources)
        model(parts, crops, loaded)
        results(parts, sources, loaded)
        for part, seconds in parts.seconds.items():
            best[part] = min(seconds, best.get(part, seconds))
    n = len(sources)
    print(
        f"CPU time a photo, one thread, {n} photos, the least of {args.repeat} runs"
        f" (torch {torch.__version__}):"
    )
    bound = extras = 0.0
    for part, seconds in best.items():
        ms = 1000 * seconds / n
        print(f"  {part:34s} {ms:6.2f} ms")
        if part.endswith("[bound]"):
            bound += ms
        else:
            extras += ms
    print(f"  the bound's parts {bound:.2f} ms; the build's extras {extras:.2f} ms")
    print(
        f"  most steady rate against the bound's, every core busy: {bound / (bound + extras):.2f} x"
        " (before nearest photos, map, pages and commit)"
    )


if __name__ == "__main__":
    main()
