#!/usr/bin/env bash
# Every GPU check in one call on a lent GPU machine (its python3 holds torch, torchvision, Pillow,
# Jinja2, tqdm, PyYAML, scikit-learn and pytest; a build also needs openTSNE and faiss-cpu, carried
# there as wheels and put on PYTHONPATH, which is kept). Most important first; each step has its own
# time limit, so a slow one cannot starve the next. Figures go to stdout and to $OUT.
#   LARGE=0    leaves out the phone photos' benchmark and the GPU-decoding check
#   SMALL=0    leaves out the small photos' benchmark
#   ENCODERS=N where the model's stage encodes the pictures, a thread or processes, at N photos
#   SUITE=1    runs the rest of the test suite after step 1's, the builds on the GPU
#              (about 4.5 minutes on an H100; SUITE_LIMIT=seconds, 330 unless given)
#   SCALE=N    the scale benchmark at N photos on CUDA (from 2,000 the pages' and the model's
#              forked copies run beside CUDA; 3,000 took about 3 minutes)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=PASSIVE
out="${OUT:-bench-out/device}"
mkdir -p "$out"
# The package's templates are installed as reportgen.templates; run from the tree, link them.
[ -e reportgen/templates ] || ln -s ../templates reportgen/templates
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, torchvision, PIL; print(sys.version.split()[0], torch.__version__, torchvision.__version__, PIL.__version__, torch.cuda.get_device_name())"
step() { local limit=$1 name=$2; shift 2; echo "=== $name"; timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"; }
cuda_tests="tests/test_predictions.py tests/test_cam.py tests/test_decode_fast.py tests/test_forked.py tests/test_heif.py"
# 1. The CUDA path against torchvision's CPU reference (the tests' device is 'auto': the GPU).
#    test_forked's builds encode their pictures in forked processes there, as a GPU build does.
step 180 tests python3 -m pytest -q -p no:cacheprovider $cuda_tests
# 1b. Optional: the rest of the suite, with the GPU as the tests' device. It runs apart from step 1
#     (pytest orders files given together), so that a suite cut short by its limit has run those.
[ "${SUITE:-0}" = 1 ] && step "${SUITE_LIMIT:-330}" suite python3 -m pytest -q -p no:cacheprovider tests \
    $(printf -- "--ignore=%s " $cuda_tests)
# 2. Phone photos: the build on the GPU, each --decode mode, against the decode-only bounds.
[ "${LARGE:-1}" = 1 ] && step 170 bench-large python3 benchmarks/bench_build.py --device cuda --photo-size 4032x3024 --images 32 --repeat 1 --workdir bench-out/dev
# 3. torchvision's GPU JPEG decoding against Pillow's, on the same photos.
[ "${LARGE:-1}" = 1 ] && step 60 gpu-decode python3 benchmarks/gpu_check.py --images 32 --workdir bench-out/dev
# 2b. The pictures encoded by a thread or by processes, beside the model on the GPU.
[ "${ENCODERS:-0}" -gt 0 ] && step 300 encoders python3 benchmarks/bench_encoders.py --device cuda --images "$ENCODERS" --variants 0,4 --repeat 2 --workdir bench-out/dev-enc
# 4. Small photos: the first wave's benchmark, on the GPU.
[ "${SMALL:-1}" = 1 ] && step 170 bench-small python3 benchmarks/bench_build.py --device cuda --images 300 --repeat 1 --naive 5 --workdir bench-out/dev-small
# 5. Optional: a folder as it grows, on the GPU.
[ "${SCALE:-0}" -gt 0 ] && step 200 scale python3 benchmarks/bench_build.py --device cuda --scale "$SCALE" --repeat 1 --workdir bench-out/dev-scale
