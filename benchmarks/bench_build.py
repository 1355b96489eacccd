"""How fast is a build, and how does it scale? Prints figures; asserts nothing.

    python benchmarks/bench_build.py --images 300            # CPU, random weights
    python benchmarks/bench_build.py --images 300 --device cuda
    python benchmarks/bench_build.py --scale 20000 --repeat 3  # a large folder; see scale()
    python benchmarks/bench_build.py --engine ray             # on a local Ray; see ray_overhead()

In one run, on the same distinct photos (random crops and resizes of inputs/, so no two are alike):

(a) the model-only bound: decode + preprocess + forward with the build's DataLoader settings;
(b) full cold ``reportgen build`` runs at N and 4N photos, each in a fresh process, giving the
    steady rate 3N / (t(4N) - t(N)), the fixed start-up cost, peak RSS and bytes per photo;
(c) a naive reference, as a person following the study notes would write it: one photo at a time,
    matplotlib subplots for the 64 maps and a matplotlib bar chart for the top-5 (timed on a sample
    of --naive photos, since it runs at about a photo a second);
(d) incremental rebuilds: unchanged, and with 10 photos added.

(a) and (b) are run --repeat times (default 3), interleaved, and their medians reported with every
run's figure beside them: on a shared 2-core machine one run can be 10% off the next.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "inputs").glob("*.jpg"))

# Runs one build in a fresh interpreter and reports its own wall time and peak memory.
CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()

def peak_rss_kb():
    # VmHWM is this process's own peak: ru_maxrss survives execve, so a child started by a parent
    # holding torch would report the parent's size.
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

import reportgen.api
from reportgen.cli import main
results = []
library_build = reportgen.api.build
reportgen.api.build = lambda *a, **k: results.append(library_build(*a, **k)) or results[-1]
code = main(sys.argv[1:])
elapsed = time.perf_counter() - t0
print(json.dumps({
    "code": code,
    "seconds": elapsed,
    "timings": results[-1].timings,
    "maxrss_kb": peak_rss_kb(),
    "cpu_seconds": sum(
        resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    ),
    "workers_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}))
"""


# Stages whose cost does not depend on the number of photos.
FIXED_STAGES = ("import torch", "load model")


def make_photos(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` distinct JPEGs: random crops of the samples, resized to 300-800 px wide."""
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in SAMPLES]
    paths = []
    for i in range(count):
        img = sources[i % len(sources)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = rng.randrange(0, w - cw + 1), rng.randrange(0, h - ch + 1)
        width = rng.randrange(300, 801)
        crop = img.crop((x, y, x + cw, y + ch))
        crop = crop.resize((width, max(1, round(width * ch / cw))), Image.Resampling.BILINEAR)
        path = folder / f"photo-{i:05d}.jpg"
        crop.save(path, quality=90)
        paths.append(path)
    return paths


def make_large_photos(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    """``count`` phone-like JPEGs of ``size``: the samples upscaled with sensor-like noise (about
    3 MB each at 12 MP, as phones write them), saved at quality 92; every other one stored turned,
    with EXIF orientation 6. Made on every core; kept for the next run in the same folder."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"phone-{i:05d}.jpg" for i in range(count)]
    missing = [(i, str(p), size, seed) for i, p in enumerate(paths) if not p.exists()]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_make_large_photo, missing))
    return paths


def _make_large_photo(job: tuple[int, str, tuple[int, int], int]) -> None:
    import numpy as np
    from PIL import Image

    i, path, size, seed = job
    rng = np.random.default_rng((seed, i))
    img = Image.open(SAMPLES[i % len(SAMPLES)]).convert("RGB")
    w, h = img.size
    left, top = int(rng.integers(0, w // 8 + 1)), int(rng.integers(0, h // 8 + 1))
    crop = img.crop((left, top, left + w * 7 // 8, top + h * 7 // 8))
    big = np.asarray(crop.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    big += rng.normal(0.0, 6.0, big.shape).astype(np.float32)
    out = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if i % 2:
        exif[0x0112] = 6  # stored landscape, shown portrait
    out.save(path + ".tmp", format="JPEG", quality=92, exif=exif.tobytes())
    os.replace(path + ".tmp", path)


def link_subset(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        os.link(p, folder / p.name)
    return folder


def model_only(
    folder: Path,
    device_name: str,
    weights: str,
    *,
    with_cam: bool = False,
    decode: str = "exact",
    workers: int | None = None,
) -> float:
    """Photos/s of decode + preprocess + forward, with the build's DataLoader settings
    (``with_cam``: plus the Grad-CAM of each photo's top-5, as the build computes it; ``decode``:
    as ``--decode``; ``workers``: instead of the build's default)."""
    import numpy as np
    import torch

    from reportgen.config import load_config
    from reportgen.decoding import preprocess
    from reportgen.discover import discover
    from reportgen.inference import pipeline as infer
    from reportgen.inference.cam import CamRecorder
    from reportgen.inference.memory import WarmHeap
    from reportgen.inference.model import load_model, pick_device
    from reportgen.inference.stage import defaults
    from reportgen.weights import resolve_weights

    class CropsOnly(infer.PhotoDataset):
        """The build's decoding without the crop's JPEG, which only the pages need."""

        def __getitem__(self, index: int) -> infer.DecodedPhoto:
            decoded = infer.open_rgb(self.paths[index], reduce_to=self.reduce_to)
            pixels = np.asarray(preprocess.crop_for_model(decoded.image, decoded.turn))
            return infer.DecodedPhoto(index, pixels, b"", decoded.width, decoded.height)

    options = {"input_dir": str(folder), "device": device_name, "decode": decode}
    config = load_config({**options, "workers": workers})
    device = pick_device(config.device)
    sources, _ = discover(folder)
    batch_size, workers = defaults(config, device, sources)
    loaded = load_model(resolve_weights(weights))
    model = infer.prepare(loaded.model, device)
    # The same heap settings as the build's inference (see reportgen/inference/memory.py).
    with torch.inference_mode(), CamRecorder(model) as cam, WarmHeap():
        model(torch.zeros(1, 3, 224, 224, device=device))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        photos = CropsOnly(sources, max_pixels=None, allow_truncated=False, decode=decode)
        with infer.Decoding(
            photos, batch_size=batch_size, workers=workers, pin=device.type == "cuda"
        ) as decoding:
            for batch in decoding:
                logits = model(infer.model_inputs(batch.pixels, loaded.transforms, device))
                top = logits.softmax(dim=1).topk(5)[1]
                if with_cam:
                    cam.cams(top).cpu()
                top.cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(sources) / (time.perf_counter() - start)


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (user and system)."""
    import resource

    return sum(
        resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def naive(paths: list[Path], out: Path, weights: str) -> float:
    """Photos/s of the notes' way: one photo at a time, matplotlib for every picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image

    from reportgen.inference.model import load_model
    from reportgen.weights import resolve_weights

    loaded = load_model(resolve_weights(weights))
    model, transform, labels = loaded.model, loaded.transforms, loaded.categories
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, path in enumerate(paths):
        x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
        kept: dict[str, torch.Tensor] = {}

        def keep(module, args, output, kept=kept):
            kept["conv1"] = output.detach().clone()

        handle = model.features[0].register_forward_hook(keep)
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0]
        handle.remove()
        p, idx = probs.topk(5)
        fig, axes = plt.subplots(8, 8, figsize=(8, 8))
        for k, ax in enumerate(axes.flat):
            ax.imshow(kept["conv1"][0, k].numpy(), cmap="gray")
            ax.axis("off")
        fig.savefig(out / f"{i}-conv1.png")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.barh([labels[j] for j in idx.tolist()][::-1], p.tolist()[::-1])
        fig.savefig(out / f"{i}-top5.png")
        plt.close(fig)
        Image.open(path).convert("RGB").resize((224, 224)).save(out / f"{i}.jpg")
        (out / f"{i}.html").write_text(
            f"<img src='{i}.jpg'><img src='{i}-conv1.png'><img src='{i}-top5.png'>"
        )
    return len(paths) / (time.perf_counter() - start)


def build(
    folder: Path,
    out: Path,
    args: argparse.Namespace,
    *extra: str,
    child: str = CHILD,
    env: dict[str, str] | None = None,
) -> dict:
    """A build in a fresh process (``child``: the code it runs, CHILD or CHILD with something
    set first), its figures as CHILD prints them; ``env``: variables set for it."""
    cmd = [sys.executable, "-c", child, "build", str(folder), "--out", str(out)]
    cmd += ["--weights", args.weights, "--device", args.device, "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"build failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (its stage timings and memory come with it)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def spread(values: list[float], fmt: str) -> str:
    return ", ".join(format(v, fmt) for v in values)


def site_bytes(out: Path) -> int:
    return sum(
        p.stat().st_size
        for p in out.rglob("*")
        if p.is_file() and ".reportgen" not in p.relative_to(out).parts
    )


def large_photos(args: argparse.Namespace, work: Path) -> None:
    """``--photo-size``: phone photos, where decoding sets the pace. Side by side in one run: the
    model-only bound with full and with fast decoding, and the build in each --decode mode."""
    size = tuple(int(v) for v in args.photo_size.split("x"))
    n = args.images
    photos = make_large_photos(work / f"phone-{args.photo_size}", 4 * n, size, seed=0)
    small = link_subset(photos[:n], work / "large-n")
    mb = sum(p.stat().st_size for p in photos) / len(photos) / 2**20
    print(
        f"large photos: {4 * n} JPEGs of {args.photo_size}, {mb:.1f} MB each, half turned by EXIF"
    )
    full, fast, builds = [], [], {"exact": ([], []), "fast": ([], [])}
    for i in range(args.repeat):
        full.append(model_only(small, args.device, args.weights, decode="exact"))
        fast.append(model_only(small, args.device, args.weights, decode="fast"))
        for mode, (runs_n, runs_4n) in builds.items():
            extra = ("--decode", mode)
            runs_n.append(build(small, work / f"large-{mode}-n-{i}", args, *extra))
            runs_4n.append(build(work / f"phone-{args.photo_size}", work / f"large-{mode}-4n-{i}",
                                 args, *extra))  # fmt: skip
    bound_full, bound_fast = statistics.median(full), statistics.median(fast)
    print(
        f"(a) model-only bound, full decode (the build's workers): {bound_full:6.1f} photos/s"
        f" (runs: {spread(full, '.1f')})"
    )
    print(
        f"    model-only bound, fast decode (the build's workers): {bound_fast:6.1f} photos/s"
        f" (runs: {spread(fast, '.1f')}) = {bound_fast / bound_full:.2f} x full"
    )
    targets = {"fast": 1.6, "exact": 0.9}
    for mode, (runs_n, runs_4n) in builds.items():
        t_n, t_4n = median_run(runs_n)["seconds"], median_run(runs_4n)["seconds"]
        steady = 3 * n / (t_4n - t_n)
        verdict = "met" if steady / bound_full >= targets[mode] else "MISSED"
        print(
            f"(b) build --decode {mode:5s}: N {t_n:6.2f} s, 4N {t_4n:6.2f} s; steady"
            f" {steady:5.1f} photos/s = {steady / bound_full:.2f} x the full-decode bound"
            f" (target >= {targets[mode]}: {verdict})"
        )


def page_weight(site: Path, name: str) -> int:
    """Bytes a page loads before any picture: itself, its stylesheets and its scripts."""
    import re

    html = (site / name).read_text(encoding="utf-8")
    linked = re.findall(r'<(?:link[^>]*rel="stylesheet"[^>]*href|script[^>]*src)="([^"]+)"', html)
    return len(html.encode()) + sum((site / url).stat().st_size for url in linked)


def load_weight(site: Path) -> tuple[int, int]:
    """Bytes the heaviest index page loads before its lazy thumbnails (the page, its stylesheets
    and scripts: pages hold up to twice --per-page photos as the folder grows), and the most that
    typing in the label filter then fetches (the shard list and the largest shard)."""
    page = max(page_weight(site, p.name) for p in site.glob("index*.html"))
    shards = [p.stat().st_size for p in (site / "search").glob("*.js") if p.name != "keys.js"]
    return page, (site / "search" / "keys.js").stat().st_size + max(shards)


def scale(args: argparse.Namespace, work: Path) -> None:
    """``--scale N``: a folder of N photos as it grows for years. Cold builds of 300 and of N (the
    steady rate between them against the model-only bound, and peak memory), rebuilds with nothing
    changed and with 10 photos added (against a cold build of those 10 alone), bytes per photo,
    and the index page's load weight."""
    n = args.scale
    folder = work / f"scale-{n}"
    if len(list(folder.glob("*.jpg"))) != n:  # made once, kept for the next run (minutes at 20k)
        make_photos(folder, n, seed=0)
    photos = sorted(folder.glob("*.jpg"))
    small = link_subset(photos[:300], work / "scale-300")
    extra = make_photos(work / "scale-extra", 10, seed=1)
    larger = link_subset(photos[:1200], work / "scale-1200")
    # The bound's own steady rate, its start-up left out, as the build's is below; and its CPU
    # time per photo the same way (this process's and its decoding workers'), once torch and
    # torchvision are imported (the first run would count their import).
    import torchvision  # noqa: F401

    model_only(small, args.device, args.weights)
    spent = [cpu_seconds()]
    first = model_only(small, args.device, args.weights)
    spent.append(cpu_seconds())
    more = model_only(larger, args.device, args.weights)
    spent.append(cpu_seconds())
    bound = 900 / (1200 / more - 300 / first)
    bound_cpu = ((spent[2] - spent[1]) - (spent[1] - spent[0])) / 900
    cold_small = build(small, work / "site-300", args)
    cold = build(folder, work / f"site-{n}", args)
    steady = (n - 300) / (cold["seconds"] - cold_small["seconds"])
    print(
        f"(a) model-only bound (decode+preprocess+forward): 300 photos {first:.1f} photos/s,"
        f" 1200 {more:.1f}; its steady rate {bound:.1f} photos/s"
    )
    print(
        f"(b) cold build of 300: {cold_small['seconds']:7.2f} s; of {n}: {cold['seconds']:7.2f} s;"
        f" steady {steady:5.1f} photos/s = {steady / bound:.2f} x the bound"
        f" (target >= 0.9: {'met' if steady / bound >= 0.9 else 'MISSED'})"
    )
    for stage, seconds in cold["timings"].items():
        print(f"      {stage:13s} {seconds:7.2f} s")
    build_cpu = (cold["cpu_seconds"] - cold_small["cpu_seconds"]) / (n - 300)
    print(
        f"    CPU time per photo, steady: the bound {1000 * bound_cpu:.1f} ms"
        f" ({bound * bound_cpu:.2f} cores busy), the build {1000 * build_cpu:.1f} ms"
        f" ({steady * build_cpu:.2f} cores busy): {build_cpu / bound_cpu:.2f} x the bound's work"
        " a photo"
    )
    rss_small, rss = cold_small["maxrss_kb"] / 1024, cold["maxrss_kb"] / 1024
    flat = "met" if rss <= 1.15 * rss_small else "MISSED"
    print(
        f"    peak RSS (main process): 300 {rss_small:.0f} MB, {n} {rss:.0f} MB"
        f" ({rss / rss_small:.3f} x; target <= 1.15: {flat})"
    )
    unchanged = [build(folder, work / f"site-{n}", args) for _ in range(args.repeat)]
    still = median_run(unchanged)
    print(
        f"(c) rebuild, nothing changed: {still['seconds']:.2f} s"
        f" (runs: {spread([r['seconds'] for r in unchanged], '.2f')} s;"
        f" target <= 2: {'met' if still['seconds'] <= 2 else 'MISSED'});"
        f" peak RSS {still['maxrss_kb'] / 1024:.0f} MB"
    )
    for stage, seconds in still["timings"].items():
        print(f"      {stage:13s} {seconds:7.2f} s")
    # Medians of --repeat runs: a single one moves by about 0.3 s here. Each cold build of the
    # 10 alone has a site (and state) of its own.
    alones = [
        build(work / "scale-extra", work / f"site-extra-{i}", args) for i in range(args.repeat)
    ]
    alone = median_run(alones)
    alone_runs = spread([r["seconds"] for r in alones], ".2f")
    # Named to sort first (ahead of every index page), then last (as a camera's next photos do);
    # the folder is built back as it was after each.
    for where, prefix in (("first", "0-added-"), ("last", "~added-")):
        runs = [_grown(folder, work / f"site-{n}", extra, prefix, args) for _ in range(args.repeat)]
        grown = median_run(runs)
        more = grown["seconds"] - alone["seconds"]
        print(
            f"(d) rebuild with 10 photos added, sorting {where}: {grown['seconds']:.2f} s"
            f" (runs: {spread([r['seconds'] for r in runs], '.2f')}); a cold build of those 10"
            f" alone: {alone['seconds']:.2f} s (runs: {alone_runs});"
            f" {more:+.2f} s (target <= +2: {'met' if more <= 2 else 'MISSED'})"
        )
        for stage, seconds in grown["timings"].items():
            print(f"      {stage:13s} {seconds:7.2f} s")
    size = site_bytes(work / f"site-{n}")
    page, typing = load_weight(work / f"site-{n}")
    print(
        f"(e) site: {size / 1e6:.0f} MB, {size / n / 1024:.1f} KB per photo (target <= 70);"
        f" the heaviest index page loads {page / 1024:.0f} KB before thumbnails, the filter at most"
        f" {typing / 1024:.0f} KB more (targets <= 300 each); map.html loads"
        f" {page_weight(work / f'site-{n}', 'map.html') / 1e6:.2f} MB before thumbnails"
        " (target <= 2 MB at 20,000)"
    )


def _grown(folder: Path, out: Path, extra: list[Path], prefix: str, args: argparse.Namespace):
    """A rebuild of ``folder`` with the ``extra`` photos linked in under ``prefix``; the folder
    (and the site) is then built back as it was."""
    added = [folder / f"{prefix}{p.name}" for p in extra]
    for source, target in zip(extra, added, strict=True):
        os.link(source, target)
    try:
        grown = build(folder, out, args)
    finally:
        for target in added:
            target.unlink()
    build(folder, out, args)
    return grown


DRIVER_STAGES = ("store results", "summary", "pages", "commit")


def ray_overhead(args: argparse.Namespace, work: Path) -> None:
    """``--engine ray``: cold builds of the same 4N photos with the local engine and on a local
    Ray (started by each build, as a user without a cluster would), and the driver's own cost per
    photo: what stays on one machine however large the cluster."""
    n = 4 * args.images
    folder = work / "photos-4n"
    make_photos(folder, n, seed=0)
    local, on_ray = [], []
    for i in range(args.repeat):
        local.append(build(folder, work / f"site-local-{i}", args))
        on_ray.append(build(folder, work / f"site-ray-{i}", args, "--engine", "ray"))
    t_local, t_ray = median_run(local)["seconds"], median_run(on_ray)["seconds"]
    print(
        f"cold build of {n} photos: local {t_local:6.2f} s (runs: "
        f"{spread([r['seconds'] for r in local], '.2f')}), on a local Ray {t_ray:6.2f} s (runs: "
        f"{spread([r['seconds'] for r in on_ray], '.2f')}): {t_ray / t_local:.2f} x"
    )
    timings = median_run(on_ray)["timings"]
    for stage, seconds in timings.items():
        print(f"      {stage:13s} {seconds:7.2f} s")
    driver = sum(timings.get(stage, 0.0) for stage in DRIVER_STAGES) / n
    print(
        f"driver's work per photo (storing results, summary, pages, swap): {1000 * driver:.2f} ms"
        f": the driver is the bottleneck past about {1 / driver:.0f} photos/s"
    )


def main() -> None:
    # As the reportgen command does, before torch is imported (see reportgen/cli.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="N (the large build uses 4N)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    parser.add_argument("--weights", default="random", help="as for reportgen build")
    parser.add_argument("--naive", type=int, default=20, help="photos for the naive reference")
    parser.add_argument("--workdir", type=Path, help="keep the photos and sites here")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of (a) and (b) whose median is reported"
    )
    parser.add_argument(
        "--photo-size",
        metavar="WxH",
        help="phone-sized photos instead (e.g. 4032x3024): decode-bound figures only",
    )
    parser.add_argument(
        "--scale",
        type=int,
        metavar="N",
        help="a folder of N photos (e.g. 20000): cold, unchanged and +10 rebuilds, memory, size",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="ray: cold 4N builds on a local Ray beside the local engine, and the driver's cost",
    )
    args = parser.parse_args()

    n = args.images
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reportgen-bench-"))
    for old in sorted(work.glob("*")) if work.exists() else []:
        # Phone photos and large folders take a while to make: kept for the next run with the
        # same --workdir.
        kept = old.name.startswith(("phone-", "scale-"))
        if not kept or old.name in ("scale-300", "scale-1200"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    import torch

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}",
        end="",
    )
    if args.device == "cuda":
        print(f" ({torch.cuda.get_device_name()})", end="")
    print(f"; weights {args.weights}; N = {n}")
    # reportgen's state and caches for the benchmark's sites, in its own folder.
    os.environ["REPORTGEN_HOME"] = str(work / "reportgen-home")
    if args.scale:
        scale(args, work)
        return
    if args.engine == "ray":
        ray_overhead(args, work)
        return
    if args.photo_size:
        large_photos(args, work)
        return

    all_photos = make_photos(work / "photos-4n", 4 * n, seed=0)
    small = link_subset(all_photos[:n], work / "photos-n")
    extra = make_photos(work / "extra", 10, seed=1)

    # Each figure is the median of --repeat runs, interleaved so that a machine's drift spreads
    # over all of them alike.
    bounds, bounds_4n, with_cams, runs_n, runs_4n = [], [], [], [], []
    for i in range(args.repeat):
        bounds.append(model_only(small, args.device, args.weights))
        bounds_4n.append(model_only(work / "photos-4n", args.device, args.weights))
        with_cams.append(model_only(small, args.device, args.weights, with_cam=True))
        runs_n.append(build(small, work / f"site-n-{i}", args))
        runs_4n.append(build(work / "photos-4n", work / f"site-4n-{i}", args))
    bound, with_cam = statistics.median(bounds), statistics.median(with_cams)
    # The bound's own fixed cost (starting the worker, decoding the first batch) left out, as the
    # build's steady rate leaves out the build's.
    bound_steady = 3 * n / (statistics.median(4 * n / r for r in bounds_4n) - n / bound)
    print(
        f"(a) model-only bound (decode+preprocess+forward): {bound:8.1f} photos/s"
        f" (runs: {spread(bounds, '.1f')})"
    )
    print(
        f"    its own steady rate, as (b) computes the build's: {bound_steady:6.1f} photos/s"
        f" (over 4N: {spread(bounds_4n, '.1f')})"
    )
    print(
        f"    the same plus Grad-CAM of the top-5:        {with_cam:8.1f} photos/s"
        f" (Grad-CAM costs {1000 / with_cam - 1000 / bound:.2f} ms per photo)"
    )

    cold_n, cold_4n = median_run(runs_n), median_run(runs_4n)
    t_n, t_4n = cold_n["seconds"], cold_4n["seconds"]
    steady = 3 * n / (t_4n - t_n)
    startup = t_n - n / steady
    print(
        f"(b) cold build, N  = {n:5d}: {t_n:7.2f} s  ({n / t_n:6.1f} photos/s overall)"
        f" (runs: {spread([r['seconds'] for r in runs_n], '.2f')} s)"
    )
    print(
        f"    cold build, 4N = {4 * n:5d}: {t_4n:7.2f} s  ({4 * n / t_4n:6.1f} photos/s overall)"
        f" (runs: {spread([r['seconds'] for r in runs_4n], '.2f')} s)"
    )
    print(
        f"    steady rate 3N/(t(4N)-t(N)): {steady:8.1f} photos/s"
        f" = {steady / bound:.2f} x model-only bound (target >= 0.80),"
        f" {steady / bound_steady:.2f} x its steady rate"
    )
    print(f"    fixed start-up cost: {startup:6.2f} s")
    per_n, per_4n = t_n / n, t_4n / (4 * n)
    print(
        f"    whole-build time per photo: N {1000 * per_n:.2f} ms, 4N {1000 * per_4n:.2f} ms"
        " (the start-up cost spread over more photos)"
    )
    work_n, work_4n = (
        sum(t for stage, t in b["timings"].items() if stage not in FIXED_STAGES) / count
        for b, count in ((cold_n, n), (cold_4n, 4 * n))
    )
    print(
        f"    per-photo time of the stages but import and model load: N {1000 * work_n:.2f} ms,"
        f" 4N {1000 * work_4n:.2f} ms (4N/N = {work_4n / work_n:.2f}, target within 15%)"
    )
    for stage, seconds in cold_4n["timings"].items():
        print(f"      {stage:11s} N {cold_n['timings'][stage]:6.2f} s   4N {seconds:6.2f} s")
    rss_n, rss_4n = cold_n["maxrss_kb"] / 1024, cold_4n["maxrss_kb"] / 1024
    print(
        f"    peak RSS (main process): N {rss_n:.0f} MB, 4N {rss_4n:.0f} MB"
        f" (4N/N = {rss_4n / rss_n:.3f}, target <= 1.15)"
    )
    print(
        f"    peak RSS (largest worker): N {cold_n['workers_maxrss_kb'] / 1024:.0f} MB,"
        f" 4N {cold_4n['workers_maxrss_kb'] / 1024:.0f} MB"
    )
    per_photo = site_bytes(work / "site-4n-0") / (4 * n)
    print(f"    site size: {per_photo / 1024:.1f} KB per photo (target <= 120)")

    deep = build(small, work / "site-n-layers", args, "--layers", "conv1,conv2,conv3,conv4,conv5")
    print(
        f"(e) cold build of N with --layers conv1..conv5: {deep['seconds']:7.2f} s"
        f" (+{deep['seconds'] - t_n:.2f} s); site"
        f" {site_bytes(work / 'site-n-layers') / n / 1024:.1f} KB per photo"
    )
    print(f"    summary page (statistics and charts) at 4N: {cold_4n['timings']['summary']:.2f} s")
    rate_naive = naive(all_photos[: args.naive], work / "naive", args.weights)
    overall = 4 * n / t_4n
    print(
        f"(c) naive reference ({args.naive} photos): {rate_naive:8.2f} photos/s;"
        f" cold 4N build is {overall / rate_naive:.0f}x faster (target >= 50)"
    )

    again = build(work / "photos-4n", work / "site-4n-0", args)
    print(
        f"(d) rebuild of 4N, nothing changed: {again['seconds']:7.2f} s"
        f" ({again['seconds'] / t_4n:.1%} of cold)"
    )
    for p in extra:
        shutil.copy(p, work / "photos-4n" / f"added-{p.name}")
    added = build(work / "photos-4n", work / "site-4n-0", args)
    print(f"    rebuild of 4N + 10 new photos: {added['seconds']:7.2f} s")
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
