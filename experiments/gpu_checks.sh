#!/usr/bin/env bash
# Every GPU figure in README, in one command (about 6 minutes on an H100/H200; needs torch, timm, numba, pytest):
#   bash experiments/gpu_checks.sh <out dir>
# CUDA unit tests (predictors, softmax log-partition, Triton kernels), the Triton kernels' timings, the
# label-prediction and loss benchmarks, and the GPU variants of predict_speed, memory_vs_classes and
# train_speed_vs_classes. Each step runs even if an earlier one failed; logs and results land in <out dir>.
set -u
OUT=${1:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 WANDB_MODE=offline
step() { local name=$1; shift; echo "== $name"; local t0=$SECONDS
  timeout "${STEP_TIMEOUT:-240}" "$@" > "$OUT/$name.log" 2>&1 && echo "   ok ($((SECONDS - t0)) s)" || echo "   FAILED rc=$? ($((SECONDS - t0)) s)"
  tail -n 25 "$OUT/$name.log"; }
nvidia-smi -L; python3 -c "import torch, timm, numba; print('torch', torch.__version__, 'timm', timm.__version__)"
step cuda_tests python3 -m pytest tests/test_predictors.py tests/test_partition.py tests/test_triton.py -m gpu -q \
  -p no:cacheprovider
step triton_check python3 -m lsc.bench.triton_check
step bench_loss python3 -m lsc.bench.loss --device cuda --out "$OUT"
step bench_predict python3 -m lsc.bench.predict --device cuda --queries 4194304 --batch-size 262144 \
  --mem-budget-gb 64 --time-budget-s 8 --repeat 3 --json "$OUT/bench_predict_cuda.json"
step predict_speed python3 experiments/predict_speed/run.py --device cuda --batches 4 --cossim-queries 1024 --out "$OUT"
step memory_vs_classes python3 experiments/memory_vs_classes/run.py --device cuda --out "$OUT"
step train_speed python3 experiments/train_speed_vs_classes/run.py --device cuda --out "$OUT"
