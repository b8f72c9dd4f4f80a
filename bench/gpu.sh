#!/usr/bin/env bash
# GPU check of losslab's CUDA path + surface/HVP throughput; prints one JSON object on stdout.
#
#   bash bench/gpu.sh                 # on a machine with a CUDA GPU (< 4 min on an H100; downloads nothing)
#   bash bench/gpu.sh --cpu-smoke     # anywhere: tests the script on the CPU in seconds
#   PYTHON=/path/to/python bash bench/gpu.sh --out gpu.json
#
# Exit status: 0 all correctness checks passed, 3 a check failed (see "checks"), 1 no CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export LOSSLAB_CACHE="${LOSSLAB_CACHE:-${TMPDIR:-/tmp}/losslab-gpu-check-cache}"  # generated MNIST-1D
export LOSSLAB_THREADS="${LOSSLAB_THREADS:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec timeout --signal=INT 235 "$PYTHON" bench/gpu_check.py "$@"
