"""On a GPU machine: torchvision's batched JPEG decoding on the GPU against Pillow's, on phone
photos. Prints figures; asserts nothing.

    python benchmarks/gpu_check.py --images 48 --photo-size 4032x3024

For the same JPEGs: (1) Pillow on the CPU, full and fast (--decode) decoding to the model's
224x224 input, across all cores; (2) ``torchvision.io.decode_jpeg(..., device="cuda")`` in batches,
then the same resize and centre crop on the GPU; and how far (2)'s input is from (1)'s exact one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import make_large_photos  # noqa: E402


def _pillow_crop(args: tuple[str, int | None]) -> np.ndarray:
    from reportgen.decoding.decode import open_rgb
    from reportgen.decoding.preprocess import crop_for_model

    path, reduce_to = args
    decoded = open_rgb(Path(path), reduce_to=reduce_to)
    return np.asarray(crop_for_model(decoded.image, decoded.turn))


def pillow(paths: list[Path], reduce_to: int | None, workers: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        crops = list(pool.map(_pillow_crop, [(str(p), reduce_to) for p in paths], chunksize=2))
    return np.stack(crops), len(paths) / (time.perf_counter() - start)


def gpu(paths: list[Path], batch: int) -> tuple[np.ndarray, float]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as F

    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    decode_jpeg(datas[:2], device="cuda", mode=ImageReadMode.RGB, apply_exif_orientation=True)
    torch.cuda.synchronize()
    start = time.perf_counter()
    crops = []
    for i in range(0, len(datas), batch):
        images = decode_jpeg(
            datas[i : i + batch], device="cuda", mode=ImageReadMode.RGB, apply_exif_orientation=True
        )
        for image in images:
            small = F.resize(image, [256], antialias=True)
            crops.append(F.center_crop(small, [224]))
    out = torch.stack(crops).permute(0, 2, 3, 1).cpu().numpy()
    torch.cuda.synchronize()
    return out, len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--photo-size", default="4032x3024")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/gpu"))
    args = parser.parse_args()
    import torch

    size = tuple(int(v) for v in args.photo_size.split("x"))
    paths = make_large_photos(args.workdir / f"phone-{args.photo_size}", args.images, size, 0)
    cores = os.cpu_count() or 1
    print(f"{len(paths)} JPEGs of {args.photo_size}; {cores} cores; torch {torch.__version__}")
    exact, rate_exact = pillow(paths, None, cores)
    fast, rate_fast = pillow(paths, 1024, cores)
    print(f"Pillow full decode -> model input, {cores} processes: {rate_exact:7.1f} photos/s")
    print(f"Pillow fast decode -> model input, {cores} processes: {rate_fast:7.1f} photos/s")
    if not torch.cuda.is_available():
        print("no CUDA device: GPU decoding not measured")
        return
    print(f"GPU: {torch.cuda.get_device_name()}")
    turned = np.array([i % 2 == 1 for i in range(len(paths))])  # EXIF orientation 6
    for batch in (8, 32):
        decoded, rate = gpu(paths, batch)
        diff = np.abs(decoded.astype(np.int16) - exact.astype(np.int16))
        print(
            f"torchvision decode_jpeg on cuda, batch {batch:2d}, + resize/crop on GPU:"
            f" {rate:7.1f} photos/s; against Pillow's exact input: upright photos max"
            f" {diff[~turned].max()} levels, mean {diff[~turned].mean():.3f}; EXIF-turned max"
            f" {diff[turned].max()}, mean {diff[turned].mean():.3f}"
        )
    fd = np.abs(fast.astype(np.int16) - exact.astype(np.int16))
    print(f"(Pillow fast against exact: max {fd.max()} levels, mean {fd.mean():.3f})")


if __name__ == "__main__":
    main()
