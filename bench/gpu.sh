#!/usr/bin/env bash
# The GPU check, as run on the lent GPU machine (torch, numpy, scipy; no network, no anndata):
#   bash bench/gpu.sh            # writes $OUT/gpu.json (or bench/results/gpu.json) and prints a table
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}/gpu.json"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=. timeout 540 python bench/gpu.py --out "$out" "$@"
