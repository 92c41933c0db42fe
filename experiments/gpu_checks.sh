#!/usr/bin/env bash
# Every GPU figure in README, in one command (about 7-8 minutes on an H100/H200; needs torch, timm, numba, pytest):
#   bash experiments/gpu_checks.sh <out dir>
# CUDA unit tests (predictors, softmax log-partition, Triton kernels incl. the center lookup, GPU JPEG decoding),
# the Triton kernels' timings, the label-prediction and loss benchmarks, the GPU variants of predict_speed,
# memory_vs_classes and train_speed_vs_classes (eager with the prepared input path's rate, and torch.compile), the
# data-path rows (decode=gpu) and the headline command end to end on prepared JPEG chunks (its data-wait share).
# Each step runs even if an earlier one failed; logs and results land in <out dir>, tarred after every step.
# Packages the machine lacks travel as wheels in .whl/ (`make gpu-wheels` here): installed into /tmp/site first.
set -u
OUT=${1:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 WANDB_MODE=offline
step() { local name=$1; shift; echo "== $name"; local t0=$SECONDS
  timeout "${STEP_TIMEOUT:-240}" "$@" > "$OUT/$name.log" 2>&1 && echo "   ok ($((SECONDS - t0)) s)" || echo "   FAILED rc=$? ($((SECONDS - t0)) s)"
  tail -n 25 "$OUT/$name.log"
  if [ -n "${TAR_TO:-}" ]; then tar czf "$TAR_TO/gpu_results.tgz" "$OUT" 2>/dev/null; fi; }
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi -L; python3 -c "import torch, timm, numba; print('torch', torch.__version__, 'timm', timm.__version__)"
step cuda_tests python3 -m pytest tests/test_predictors.py tests/test_partition.py tests/test_triton.py \
  tests/test_streaming.py -m gpu -q -p no:cacheprovider
step triton_check python3 -m lsc.bench.triton_check
step bench_loss python3 -m lsc.bench.loss --device cuda --out "$OUT"
step bench_predict python3 -m lsc.bench.predict --device cuda --queries 4194304 --batch-size 262144 \
  --mem-budget-gb 64 --time-budget-s 8 --repeat 3 --json "$OUT/bench_predict_cuda.json"
step predict_speed python3 experiments/predict_speed/run.py --device cuda --batches 4 --cossim-queries 1024 --out "$OUT"
step memory_vs_classes python3 experiments/memory_vs_classes/run.py --device cuda --out "$OUT"
step train_speed python3 experiments/train_speed_vs_classes/run.py --device cuda --data prepared --out "$OUT"
step train_speed_compiled python3 experiments/train_speed_vs_classes/run.py --device cuda --compile --classes 1e3 1e5 1e6 \
  --out "$OUT"
step bench_data python3 -m lsc.bench.data --device cuda --n 4000 --images 2000 --sizes 224 --workers 8 --out "$OUT"
step data_end_to_end python3 -m lsc.bench.data --device cuda --end-to-end --n 4000 --sizes 224 --workers 8 --batch 256 \
  --e2e-steps 120 --out "$OUT"
