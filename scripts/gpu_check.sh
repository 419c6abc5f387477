#!/usr/bin/env bash
# What only a GPU shows, in one run of under ten minutes on one GPU: the CUDA-only tests (every loss
# term among them), then the training-step benchmark (ResNet-20, batch 128) in fp32 eager and in bf16 +
# channels_last + compile, and the wide student resnet8x4 (batch 64) likewise. Prints every figure with the GPU's name and
# writes the benchmark JSONs to OUT_DIR (default: gpu_check/), for docs/PERFORMANCE.md.
#
#   scripts/gpu_check.sh [OUT_DIR]
#
# Needs a CUDA GPU and the requirements installed (PYTHON selects the interpreter, default python).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
out=${1:-gpu_check}
mkdir -p "$out"
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA GPU visible to PyTorch; this script checks what only a GPU shows" >&2
    exit 2
fi
"$python" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== CUDA-only tests (and every registered loss term: CUDA fp32 against the CPU, finite in bf16)"
"$python" -m pytest -q tests/test_cuda.py tests/test_registry_walk.py -k "cuda"

bench() {  # NAME ARGS...: one benchmark, its table printed, its JSON kept
    local name=$1
    shift
    echo "== benchmark $name: $*"
    "$python" scripts/benchmark.py --device cuda --methods ce,tffd,tffd_released,kd,kd_tffd --rounds 41 \
        --steps 5 --loader-images 20000 "$@" --json "$out/$name.json"
}
bench resnet20_fp32 --model resnet20 --batch-size 128
bench resnet20_bf16_compiled --model resnet20 --batch-size 128 --amp bf16 --channels-last --compile
bench resnet8x4_fp32 --model resnet8x4 --batch-size 64 --teacher resnet32x4 --loader-images 0
bench resnet8x4_bf16_compiled --model resnet8x4 --batch-size 64 --teacher resnet32x4 --loader-images 0 \
    --amp bf16 --channels-last --compile
echo "== done: $out/*.json"
