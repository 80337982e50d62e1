#!/usr/bin/env bash
# comp's CUDA paths checked in one go on a machine with one GPU and no internet, in under 8 minutes:
#   1. wheels       install the wheels in .whl/ (benchmarks/gpu_wheels.sh, run beforehand where PyPI is reachable)
#   2. environment  nvidia-smi, torch and CUDA, `comp env` (before all: no CUDA GPU, exit 2)
#   3. cuda tests   pytest -m cuda (tests/test_cuda.py: fp16 + scaler, bf16, channels_last, compile, pinned
#                   copies, exact resume)
#   4. jpeg decode  images/s of the disk cache's build from 512 px JPEGs, data.decode cpu against device (nvJPEG),
#                   and how far nvJPEG's pixels are from OpenCV's (benchmarks/jpeg_decode.py)
#   5. resnet18     images/s of comp train against the model alone: 32 px JPEGs, bf16, channels_last
#   6. resnet50     the same at 224 px (256 px JPEGs resized), with the decoded cache and without it
# Run from the repository root (comp runs from the checkout: PYTHONPATH=$PWD, no install):
#
#     benchmarks/gpu_check.sh                       # on the GPU machine; the device run carries .whl
#     COMP_GPU_CHECK_CPU=1 benchmarks/gpu_check.sh  # here: the same stages on the CPU at a tiny size (a dry run)
#
# Every stage has a time limit and the whole script a deadline (COMP_GPU_CHECK_SECONDS, default 480), so a
# hang cannot eat the device's time; a failed stage is reported and the next one still runs. Exit status:
# 0 all stages passed, 1 some failed, 2 no CUDA GPU (outside the dry run). With OUT set, everything printed
# also goes to $OUT/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=${COMP_GPU_CHECK_CPU:-0}
deadline=${COMP_GPU_CHECK_SECONDS:-480}
python=${PYTHON:-python3}
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu_check.log") 2>&1
fi
export PYTHONUNBUFFERED=1
failed=()

# stage NAME LIMIT COMMAND...: run COMMAND within LIMIT seconds (less if the deadline is nearer), print its time.
stage() {
    local name=$1 limit=$2 begin=$SECONDS status
    shift 2
    local left=$((deadline - SECONDS - 15)) # 15 s: timeout's kill grace, and the summary
    ((limit > left)) && limit=$left
    echo
    if ((limit <= 0)); then
        echo "=== $name: not run, the deadline (${deadline}s) is reached"
        failed+=("$name (not run)")
        return
    fi
    echo "=== $name (limit ${limit}s) at $(date +%T)"
    if timeout --kill-after=10 "$limit" "$@"; then
        status=ok
    else
        local rc=$?
        status="FAILED (exit $rc)"
        ((rc == 124 || rc == 137)) && status+=" at its time limit"
        failed+=("$name")
    fi
    echo "=== $name: $status in $((SECONDS - begin))s (${SECONDS}s so far)"
}

finish() {
    echo
    if ((${#failed[@]})); then
        echo "gpu_check: ${#failed[@]} stage(s) failed (${SECONDS}s):"
        printf '  %s\n' "${failed[@]}"
        exit 1
    fi
    echo "gpu_check: all stages passed (${SECONDS}s)"
}

echo "gpu_check on ${HOSTNAME:-?} at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

if ! ((cpu)) && ! timeout 60 "$python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: $python's torch sees no CUDA GPU here; for the CPU dry run set COMP_GPU_CHECK_CPU=1"
    exit 2
fi

# ----------------------------------------------------------------------------- 1. wheels
wheels=(.whl/*.whl)
[[ -e ${wheels[0]} ]] || {
    echo "no wheels in .whl/: run benchmarks/gpu_wheels.sh where PyPI is reachable, and carry .whl"
    exit 1
}
install=(-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
if ((cpu)); then
    # This Python is not the GPU machine's 3.12: install the same wheels for CPython 3.12 on manylinux into a
    # folder of their own, which shows they form one installable set, and import comp's own environment.
    site=$(mktemp -d)
    trap 'rm -rf "$site"' EXIT
    install+=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    export PYTHONPATH=$PWD
else
    site=${COMP_GPU_CHECK_SITE:-/tmp/site}
    export PYTHONPATH=$PWD:$site
fi
stage wheels 60 "$python" "${install[@]}" --target "$site" "${wheels[@]}"
[[ ${#failed[@]} == 0 ]] || finish

# ----------------------------------------------------------------------------- 2. environment
environment() {
    if ! ((cpu)); then nvidia-smi || echo "(no nvidia-smi)"; fi
    "$python" - <<'EOF'
import albumentations, pydantic, timm, torch, torchvision

print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
      f"albumentations {albumentations.__version__}, pydantic {pydantic.VERSION}")
if torch.cuda.is_available():
    device = torch.cuda.get_device_properties(0)
    print(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.device_count()} GPU(s): "
          f"{device.name}, compute capability {device.major}.{device.minor}, {device.total_memory / 2**30:.0f} GiB, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
else:
    print("no CUDA device visible to torch")
EOF
    "$python" -m comp env
}
export -f environment
export cpu python
stage environment 90 bash -c environment
[[ ${#failed[@]} == 0 ]] || finish

# ----------------------------------------------------------------------------- 3. the CUDA-marked tests
# tests/test_cuda.py alone: collecting the whole suite would import what only the dev extras provide.
# CUBLAS_WORKSPACE_CONFIG: deterministic cuBLAS for the exact-resume tests (test_cuda.py sets it too).
stage "cuda tests" 180 env CUBLAS_WORKSPACE_CONFIG=:4096:8 "$python" -m pytest tests/test_cuda.py -m cuda -q -rs

# ----------------------------------------------------------------------------- 4. JPEG decoding, cpu against device
# Before the training stages: it takes seconds, and says whether data.decode: device is worth it there.
if ((cpu)); then # torchvision's decoder on the CPU: the same path, tiny
    stage "jpeg decode" 60 "$python" benchmarks/jpeg_decode.py --images 64 --size 128 --set data.image_size=32 --rounds 1
else
    stage "jpeg decode" 60 "$python" benchmarks/jpeg_decode.py --images 2000 --size 512 --set data.image_size=224
fi

# ----------------------------------------------------------------------------- 5-6. images/s, comp against the model alone
bench=("$python" benchmarks/train_speed.py --format jpg --set train.amp=true --set train.channels_last=true)
if ((cpu)); then # the same cases, tiny: this shows the stages work, its figures mean nothing
    stage "resnet18 32 px" 120 "${bench[@]}" --images 80 --size 32 --epochs 1 --rounds 1 \
        --set train.batch_size=16 --set predict.batch_size=16
    stage "resnet50 224 px" 180 "${bench[@]}" --images 60 --size 40 --epochs 1 --rounds 1 \
        --set model.name=resnet50 --set data.image_size=32 --set train.batch_size=8 --set predict.batch_size=8 \
        --variant data.cache=off
else
    stage "resnet18 32 px" 120 "${bench[@]}" --images 20000 --size 32 --epochs 3 --rounds 3
    stage "resnet50 224 px" 180 "${bench[@]}" --images 5000 --size 256 --epochs 2 --rounds 3 \
        --set model.name=resnet50 --set data.image_size=224 --variant data.cache=off
fi
finish
