#!/usr/bin/env bash
# One short GPU session: the CUDA code generation tests, then CUDA runs checked against the
# reference interpreter and GPU timings of CUBA (1 trial, 64 trials, N up to ~1M), as one table.
# Needs an NVIDIA GPU, nvcc/NVRTC and the project installed (pip install -e .).  About 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export NSPEC_CACHE_DIR="${NSPEC_CACHE_DIR:-$(mktemp -d)}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python -m pytest tests/test_tvm_lowering.py -q -x -k "cuda or export"
python bench/cuba.py --gpu --reps 3 --batch 64 --gpu-max-n "${GPU_MAX_N:-1024000}"
