"""How close is ``--decode fast`` to ``exact``, and how much faster? Prints figures only.

    python benchmarks/bench_decode.py --images 120 --photo-size 4032x3024

On phone-like JPEGs (the samples upscaled with mild noise, quality 92, every other one with EXIF
orientation 6), for each DCT margin (the reduced short side over the 256 px the resize needs):
the worst and mean difference of the model's 224x224 input from the full decode, in grey levels,
the time to decode and crop one photo on one core, and the largest change of any top-5
probability and of any logit between the two inputs (with the weights given: random by default,
since this machine cannot download the pretrained ones). ``--heif``: the same photos saved as HEIF
(what iPhones write), timed the same way, and their input against the JPEG's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import make_large_photos  # noqa: E402

MARGINS = (1.0, 2.0, 3.0, 4.0)


def crops(paths: list[Path], reduce_to: int | None) -> tuple[np.ndarray, float]:
    """Every photo's model input as uint8, and the median ms to decode and crop one."""
    from reportgen.decoding.decode import open_rgb
    from reportgen.decoding.preprocess import crop_for_model

    out, times = [], []
    for path in paths:
        data = path.read_bytes()
        start = time.perf_counter()
        decoded = open_rgb(data, reduce_to=reduce_to)
        out.append(np.asarray(crop_for_model(decoded.image, decoded.turn)))
        times.append(time.perf_counter() - start)
    return np.stack(out), 1000 * statistics.median(times)


HEIF_QUALITY = 50
"""pillow-heif's default; 12 MP HEIC files of about 1.5 MB, as an iPhone writes them."""


def heif_copies(paths: list[Path], folder: Path) -> list[Path]:
    """Each phone JPEG saved again as HEIF, turned the same way (as the file's rotation): what an
    iPhone writes. Kept for the next run in the same folder."""
    import pillow_heif
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        target = folder / f"{path.stem}.heic"
        if not target.exists():
            exif = Image.Exif()
            with Image.open(path) as img:
                exif[0x0112] = img.getexif().get(0x0112, 1)
                # The pixels alone: pillow-heif misses the orientation in the JPEG's own EXIF.
                pixels = Image.fromarray(np.asarray(img.convert("RGB")))
            heif = pillow_heif.from_pillow(pixels)
            heif.save(f"{target}.tmp", quality=HEIF_QUALITY, exif=exif.tobytes())
            Path(f"{target}.tmp").replace(target)
        out.append(target)
    return out


def outputs(pixels: np.ndarray, weights: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits and softmax probabilities of the model for a stack of crops."""
    import torch

    from reportgen.inference.model import load_model
    from reportgen.inference.pipeline import model_inputs
    from reportgen.weights import resolve_weights

    loaded = load_model(resolve_weights(weights))
    with torch.inference_mode():
        x = model_inputs(torch.from_numpy(pixels), loaded.transforms, torch.device("cpu"))
        logits = loaded.model(x).float()
    return logits.numpy(), torch.softmax(logits, dim=1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--photo-size", default="4032x3024")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/large"))
    parser.add_argument(
        "--heif", action="store_true", help="also time HEIF copies (needs reportgen[heif])"
    )
    args = parser.parse_args()
    size = tuple(int(v) for v in args.photo_size.split("x"))
    paths = make_large_photos(args.workdir / f"phone-{args.photo_size}", args.images, size, 0)
    mb = sum(p.stat().st_size for p in paths) / len(paths) / 2**20
    print(f"{len(paths)} JPEGs of {args.photo_size}, {mb:.1f} MB each; weights {args.weights}")

    exact, exact_ms = crops(paths, None)
    logits, probs = outputs(exact, args.weights)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    print(f"exact (full decode): {exact_ms:6.1f} ms per photo")
    print(
        "margin  reduced short side  max levels  mean levels  ms/photo  max dP(top-5)  max dlogit"
    )
    for margin in MARGINS:
        reduce_to = int(256 * margin)
        fast, fast_ms = crops(paths, reduce_to)
        diff = np.abs(fast.astype(np.int16) - exact.astype(np.int16))
        f_logits, f_probs = outputs(fast, args.weights)
        dp = np.abs(np.take_along_axis(f_probs, top5, 1) - np.take_along_axis(probs, top5, 1))
        short = min(size) // 2 ** int(np.floor(np.log2(min(size) / reduce_to)))
        print(
            f"{margin:5.1f}x  {short:>18d}  {diff.max():10d}  {diff.mean():11.3f}  {fast_ms:8.1f}"
            f"  {dp.max():13.2e}  {np.abs(f_logits - logits).max():10.4f}"
        )
    if args.heif:
        heif_paths = heif_copies(paths, args.workdir / f"phone-{args.photo_size}-heif")
        mb = sum(p.stat().st_size for p in heif_paths) / len(heif_paths) / 2**20
        heif_crops, heif_ms = crops(heif_paths, None)
        diff = np.abs(heif_crops.astype(np.int16) - exact.astype(np.int16))
        print(
            f"HEIF copies (pillow-heif, quality {HEIF_QUALITY}), {mb:.1f} MB each:"
            f" {heif_ms:6.1f} ms per photo; against the JPEG's exact input: max {diff.max()}"
            f" levels, mean {diff.mean():.3f}"
        )


if __name__ == "__main__":
    main()
