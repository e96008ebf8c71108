#!/usr/bin/env bash
# On a machine with a CUDA GPU: the demo on the GPU (whole and with model CPU offload), the tests
# marked gpu (a series on tiny SD1.5-layout models in float16, offload's device memory, Stage I
# training with bf16 autocast). Writes under OUT (default
# runs/gpu_check). Nothing else in the project needs a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SG="$PY -m serialgen.cli"
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
$SG demo --out "$OUT/demo" --device cuda
$SG demo --out "$OUT/demo-offload" --device cuda --offload
$PY -m pytest -q -m gpu tests/ 2>&1 | tee "$OUT/pytest-gpu.txt"
