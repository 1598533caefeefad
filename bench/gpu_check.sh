#!/usr/bin/env bash
# One short GPU session (at most 10 minutes): the CUDA tests, then GPU runs checked against the reference
# interpreter and GPU timings, each step time-boxed so one slow part cannot take the others' time.
#
#   bash bench/gpu_check.sh [LOG_DIR]
#
# Needs an NVIDIA GPU, nvcc/NVRTC, and nspec importable with its dependencies (pip install -e .,
# or PYTHONPATH; a machine without network gets the wheels carried in, see bench/README.md).
#   1. tests: TVM CUDA code generation and export, the torch backend on CUDA (tests/*_lowering.py -k cuda)
#   2. bench/cuba.py --gpu: every op, the LOOP programs and a strict spiking network on TVM CUDA against
#      the reference interpreter (spike for spike), CUBA 4000 on the GPU (1 trial and 64 trials)
#   3. bench/gpu_anchors.py: CUBA at 4k, 100k and 1M neurons on TVM CUDA against eager PyTorch on the same
#      GPU, with the memory-bandwidth roofline; BDH, CTM, ELM forward passes against eager PyTorch on the GPU
#   4. bench/train_bench.py --device cuda: training steps (forward + backward) eager and torch.compile
#   5. which ONNX Runtime execution providers this machine's onnxruntime has
set -uo pipefail
cd "$(dirname "$0")/.."
LOG="${1:-${OUT:-/tmp}}"
mkdir -p "$LOG"
export NSPEC_CACHE_DIR="${NSPEC_CACHE_DIR:-$(mktemp -d)}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
status=0
STEPS=" ${GPU_STEPS:-tests cuba_gpu anchors_cuba anchors_seeds train onnxruntime} "  # a rerun may name fewer
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $LOG/NAME.log, remember a failure
  local name=$1 limit=$2; shift 2
  [[ "$STEPS" == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$LOG/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)"
step tests 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_tvm_lowering.py tests/test_torch_lowering.py \
  -k "cuda or export"
step cuba_gpu 90 "$PY" bench/cuba.py --gpu --reps 3 --batch 64 --gpu-max-n 4000
step anchors_cuba 200 "$PY" bench/gpu_anchors.py --reps "${GPU_CUBA_REPS:-3}" --skip-seeds --cuba-sizes "${GPU_CUBA_SIZES:-4000,100000,1000000}"
step anchors_seeds 100 "$PY" bench/gpu_anchors.py --reps 3 --skip-cuba
step train 120 "$PY" bench/train_bench.py --device cuda --reps 3 --workloads bdh,ctm,elm
step onnxruntime 10 "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
exit $status
