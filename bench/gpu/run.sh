#!/usr/bin/env bash
# The GPU benchmark, one command on the device machine (no tensorflow there; jax with CUDA):
#   bash bench/gpu/run.sh                    # 60,000 images, the defaults of bench_gpu.py
#   PYTHON=.venv/bin/python bash bench/gpu/run.sh --samples 6000 --epochs 2   # CPU, here
# Installs the carried wheels (bench/gpu/prepare.sh) when keras or mlxtend is missing, then runs
# bench_gpu.py on JAX with XLA's deterministic GPU ops (set before JAX starts).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('keras') and u.find_spec('mlxtend')))"; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site bench/gpu/wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_deterministic_ops=true"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
exec "$PY" bench/gpu/bench_gpu.py "$@"
