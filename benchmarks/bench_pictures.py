"""Picture formats for the site, by size against encode time and fidelity. Prints figures only.

    python benchmarks/bench_pictures.py --images 60

For the conv1 grids (the site's largest pictures) and the crops of N photos made as a build makes
them (random weights): bytes per picture, encode time, and the mean and worst difference from the
exact picture, in grey levels, for JPEG (plain and with optimised Huffman tables), WebP, AVIF
and PNG at several qualities.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import make_photos  # noqa: E402

FORMATS = (
    [("JPEG", {"quality": q}) for q in (95, 85, 80, 75, 70, 60)]
    + [("JPEG", {"quality": q, "optimize": True}) for q in (85, 75, 70, 65)]
    + [("WEBP", {"quality": q, "method": 4}) for q in (90, 80, 70)]
    + [
        ("WEBP", {"lossless": True, "method": 4}),
    ]
    + [("AVIF", {"quality": q, "speed": 8}) for q in (70, 60, 50)]
    + [
        ("PNG", {"compress_level": 6}),
    ]
)


def pictures(folder: Path, weights: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The conv1 grids and crops of the photos in ``folder``, uncompressed."""
    import torch

    from reportgen.discover import discover
    from reportgen.inference import pictures as draw
    from reportgen.inference.model import load_model
    from reportgen.inference.pipeline import PhotoDataset, model_inputs
    from reportgen.layout import layer_grid
    from reportgen.weights import resolve_weights

    sources, _ = discover(folder)
    photos = PhotoDataset(sources, max_pixels=None, allow_truncated=False)
    crops = [photos[i].pixels for i in range(len(photos))]
    loaded = load_model(resolve_weights(weights))
    with torch.inference_mode():
        x = model_inputs(torch.from_numpy(np.stack(crops)), loaded.transforms, torch.device("cpu"))
        conv1 = loaded.model.features[0](x)
    levels = draw.activations(conv1).levels
    grids = draw.grey_grids(levels, layer_grid("conv1", tuple(conv1.shape[1:])))
    return list(grids), crops


def measure(images: list[np.ndarray], fmt: str, options: dict) -> tuple[float, float, float, int]:
    sizes, times, means, worst = [], [], [], 0
    for array in images:
        start = time.perf_counter()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt, **options)
        times.append(time.perf_counter() - start)
        sizes.append(buffer.tell())
        back = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(
            "L" if array.ndim == 2 else "RGB")).astype(np.int16)  # fmt: skip
        diff = np.abs(back - array.astype(np.int16))
        means.append(float(diff.mean()))
        worst = max(worst, int(diff.max()))
    return (
        statistics.mean(sizes) / 1024,
        1000 * statistics.median(times),
        statistics.mean(means),
        worst,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/pictures"))
    args = parser.parse_args()
    make_photos(args.workdir, args.images, seed=3)
    grids, crops = pictures(args.workdir, args.weights)
    for name, images in (("conv1 grid (454x454 grey)", grids), ("crop (224x224 RGB)", crops)):
        print(f"{name}, {len(images)} pictures:")
        print("  format                      KB    encode ms  mean diff  max diff")
        for fmt, options in FORMATS:
            kb, ms, mean, worst = measure(images, fmt, options)
            label = fmt + " " + ",".join(f"{k}={v}" for k, v in options.items())
            print(f"  {label:26s} {kb:6.1f}  {ms:9.2f}  {mean:9.2f}  {worst:8d}")


if __name__ == "__main__":
    main()
