#!/usr/bin/env bash
# The whole CPU benchmark suite, one command (`make bench` runs it inside its own venv with scvi-tools):
#
#   bash bench/run_cpu.sh            # python = $PYTHON or `python`; results in bench/results/
#
# Bound: every step runs under `timeout`; along the longest path the caps add up to 280 min (lane A 160, lane B
# 210 with mcv and readable, 70 for the timing steps). Measured on the 2-core AMD EPYC
# (no GPU) on 2026-11-27: see bench/README.md ("One command") for the wall time of each step.
# Two lanes run side by side where only accuracy is measured (one torch thread each); the timing steps
# (speed, throughput, workflow) run alone afterwards so their seconds are not shared with another job.
# A step that fails or hits its cap is reported and the others still run; the exit code is non-zero then.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
R=bench/results
LOGS="${BENCH_LOGS:-bench/logs}"
mkdir -p "$R" "$LOGS"
CORES=$(nproc)  # before OMP_NUM_THREADS is set: nproc honours it
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1  # 2 cores: more threads are slower under load
status=0
step() {  # step NAME CAP_MINUTES CMD...: run with a time cap, log to $LOGS/NAME.log, report
    local name=$1 cap=$2; shift 2
    local t0=$SECONDS
    timeout "$((cap * 60))" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    printf '[bench] %-14s %s in %d s (cap %d min; log %s)\n' "$name" \
        "$([ $rc -eq 0 ] && echo ok || ([ $rc -eq 124 ] && echo 'HIT ITS CAP' || echo "FAILED ($rc)"))" \
        "$((SECONDS - t0))" "$cap" "$LOGS/$name.log"
    return $rc
}
"$PY" -c "import scvi" 2>/dev/null || { echo "[bench] scvi-tools is missing: run 'make bench' (it installs it)" >&2; exit 2; }
echo "[bench] $(date -u +%FT%TZ) on $CORES cores; python: $(command -v "$PY")"
t_all=$SECONDS

# lane A: embeddings (6 datasets x 6 methods x 3 seeds), the tuning comparison, then integration (batches, scib-metrics);
# lane B: denoising, then genodae's other presets on the same datasets and seeds, then molecular cross-validation,
# then readable gene weights (planted programs and bulk pathway coverage)
( step baselines 60 "$PY" bench/baselines.py --out $R/baselines || exit 1
  step quality 30 "$PY" bench/quality.py --threads 1 --out $R/quality; rc=$?
  step integration 70 "$PY" bench/integration.py --seeds 0 1 2 --out $R/integration && exit $rc ) & a=$!
( step denoise 50 "$PY" bench/denoise.py --out $R/denoise || exit 1
  step presets 40 "$PY" bench/baselines.py --methods genodae_signatures,genodae_adage --out $R/baselines_presets; rc=$?
  step mcv 75 "$PY" bench/mcv.py --out $R/mcv; rc2=$?
  step readable 45 bash -c "'$PY' bench/readable.py synthetic --seeds 3 && '$PY' bench/readable.py bulk --seeds 3 \
      && '$PY' bench/readable.py report" && [ $rc -eq 0 ] && exit $rc2 ) & b=$!
wait $a || status=1
wait $b || status=1

# timing steps, one at a time
step speed 15 "$PY" bench/speed.py --out $R/speed || status=1
step throughput 20 "$PY" bench/throughput.py --cells 10000 100000 1000000 --epochs 1 --threads 1 \
    --out $R/throughput_cpu.json --md $R/throughput_cpu.md || status=1
step throughput_b 20 "$PY" bench/throughput.py --cells 10000 100000 1000000 --epochs 1 --threads 1 \
    --backed "${TMPDIR:-/tmp}/genodae-bench" --out $R/throughput_cpu_backed.json --md $R/throughput_cpu_backed.md || status=1
step workflow 15 "$PY" bench/workflow_time.py --out $R/workflow_time || status=1

"$PY" bench/summary.py --results $R >/dev/null || status=1
echo "[bench] done in $(( (SECONDS - t_all) / 60 )) min; summary: $R/SUMMARY.md"
exit $status
