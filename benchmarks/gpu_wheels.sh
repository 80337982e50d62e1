#!/usr/bin/env bash
# Download into .whl/ the wheels comp needs on the GPU machine and that its image lacks (it has torch,
# torchvision, timm, numpy, pandas, OpenCV, rich, typer, scikit-learn, scipy, safetensors, pyyaml, pytest;
# it has no internet). Run here, in the repository root, with comp's environment active and PyPI reachable:
#
#     source .venv/bin/activate && benchmarks/gpu_wheels.sh
#
# Then benchmarks/gpu_check.sh on the GPU machine installs them (the run's `carry` names .whl). The
# versions are the ones installed here, which the test suite passed on. Wheels for CPython 3.12 on
# manylinux x86-64 (the GPU machine's python3), no dependencies pulled: every missing one is named below.
# Left out on purpose: kaggle and kagglesdk (comp imports them only to reach Kaggle, which that machine
# cannot), and the dev extras (wandb, mlflow, tensorboard, pydicom: the CUDA tests use none).
set -euo pipefail

PACKAGES=(
    albumentations albucore stringzilla simsimd           # the augmentations, with albucore's compiled helpers
    pydantic pydantic-core annotated-types typing-inspection
    typing-extensions                                      # pydantic needs a newer one than torch's image may have
    iterative-stratification                               # multi-label folds (comp.data.folds imports it)
)
LIMIT_MIB=64 # what a device run carries at most, the working tree included

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
pins=$("$python" - "${PACKAGES[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
except PackageNotFoundError as missing:
    sys.exit(f"{missing} is not installed in this environment: activate comp's environment (.venv) first")
EOF
)
rm -rf .whl
mkdir -p .whl
# pip matches each manylinux_2_N tag exactly: the usual ones for these packages' wheels.
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none "${platforms[@]}" -d .whl $pins # $pins unquoted: one argument per package
ls -1 .whl
total_kib=$(du -sk .whl | cut -f1)
wheels=(.whl/*.whl)
echo "total: $(awk "BEGIN {printf \"%.1f\", $total_kib / 1024}") MiB in ${#wheels[@]} wheels (a run carries at most ${LIMIT_MIB} MiB)"
if ((total_kib > LIMIT_MIB * 1024 / 2)); then
    echo "over half the carry limit: the working tree must fit beside it" >&2
    exit 1
fi
