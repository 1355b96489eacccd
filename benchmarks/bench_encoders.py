"""Where the model's stage encodes the pictures: a thread, or forked processes? Prints figures.

    python benchmarks/bench_encoders.py --device cuda --images 3000 --variants 0,4

Cold builds of the same photos (bench_build's), alternating between the variants, each in a fresh
process with a fresh REPORTGEN_HOME; a variant is the number of processes that encode (0: one
thread of the build, as on the CPU), set in place of the build's own choice. Beside them, the
model-only bound (decode + preprocess + forward, bench_build's ``model_only``). For each build:
the model stage's rate (photos over its ``inference`` time), the whole build's wall time, the CPU
time of it and its children, and the main process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_build  # noqa: E402
from bench_build import CHILD, make_photos, model_only  # noqa: E402

# bench_build's child, with the processes that encode set from the environment.
VARIANT = """
import os
from reportgen.inference import stage
count = int(os.environ["BENCH_ENCODERS"])
stage.encoder_processes = lambda device, workers: count
"""


def build(args: argparse.Namespace, folder: Path, variant: int, name: str, work: Path) -> dict:
    """A cold build encoding in ``variant`` processes: what an earlier run at its site and
    REPORTGEN_HOME left is removed first."""
    out, home = work / f"site-{name}", work / f"home-{name}"
    for old in (out, home):
        shutil.rmtree(old, ignore_errors=True)
    env = {"BENCH_ENCODERS": str(variant), "REPORTGEN_HOME": str(home)}
    return bench_build.build(folder, out, args, child=VARIANT + CHILD, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--weights", default="random", help="as for reportgen build")
    parser.add_argument("--variants", default="0,4", help="processes that encode, comma-separated")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-encoders-"))
    folder = work / f"photos-{args.images}"
    if not folder.exists():
        make_photos(folder, args.images, seed=0)
    variants = [int(v) for v in args.variants.split(",")]
    print(f"{args.images} photos, device {args.device}, {os.cpu_count()} cores", flush=True)
    bounds = []
    rates: dict[int, list[float]] = {v: [] for v in variants}
    for run in range(args.repeat):
        bounds.append(model_only(folder, args.device, args.weights))
        print(f"bound run {run}: {bounds[-1]:.1f} photos/s", flush=True)
        for variant in variants:
            got = build(args, folder, variant, f"{variant}-{run}", work)
            inference = got["timings"]["inference"]
            rates[variant].append(args.images / inference)
            print(
                f"encoders {variant} run {run}: model stage {rates[variant][-1]:.1f} photos/s"
                f" ({inference:.2f} s); build {got['seconds']:.2f} s,"
                f" cpu {got['cpu_seconds']:.1f} s, rss {got['maxrss_kb'] / 1024:.0f} MB",
                flush=True,
            )
    bound = statistics.median(bounds)
    print(f"\nmodel-only bound: median {bound:.1f} photos/s")
    for variant in variants:
        rate = statistics.median(rates[variant])
        label = "a thread" if variant == 0 else f"{variant} processes"
        print(f"encoders {label:>12}: model stage {rate:.1f} photos/s = {rate / bound:.2f} x")


if __name__ == "__main__":
    main()
