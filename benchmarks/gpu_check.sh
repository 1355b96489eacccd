#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the test suite with builds on the GPU (the device
# defaults to auto), then the scale benchmark on CUDA at a size past the thresholds where the
# pages are written by two processes and a few added photos run through the model in a forked
# copy (2,000 photos).
#
#   benchmarks/gpu_check.sh LOGDIR [PHOTOS]
#
# Logs go to LOGDIR (tests.txt, scale.txt). Run from the repository root, with reportgen
# importable (installed, or the root on PYTHONPATH with reportgen/templates linked to templates/).
set -u -o pipefail
logs=${1:?usage: benchmarks/gpu_check.sh LOGDIR [PHOTOS]}
photos=${2:-3000}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision",
torchvision.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name())'
timeout "${TESTS_TIMEOUT:-330}" python3 -m pytest -q -p no:cacheprovider tests 2>&1 \
    | tee "$logs/tests.txt" | tail -25
timeout "${BENCH_TIMEOUT:-200}" python3 benchmarks/bench_build.py --scale "$photos" --repeat 1 \
    --device cuda --workdir "${BENCH_DIR:-/tmp/reportgen-gpu-bench}" 2>&1 | tee "$logs/scale.txt"
