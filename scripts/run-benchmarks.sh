#!/usr/bin/env bash
# make bench: every benchmark, one after the other; each prints its own figures (they are not tests).
# Long: the first policy_sim.py run computes about 100,000 forecasts (about an hour on 2 cores; cached after).
# One benchmark: `make bench BENCH=mirror_throughput` (the script name without .py).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here" || exit 1
VENV="${VENV:-$here/.venv}"
export PATH="$VENV/bin:$PATH" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ANSIBLE_COLLECTIONS_PATH="${ANSIBLE_COLLECTIONS_PATH:-$here/.build/collections}"
benches=(mirror_throughput failover_gap forecast_accuracy policy_sim build_vs_community reconcile_scale canary_calibration)
[ -n "${BENCH:-}" ] && benches=("$BENCH")
failed=0
for bench in "${benches[@]}"; do
    echo "=== benchmarks/$bench.py ==="
    python "benchmarks/$bench.py" || failed=1
done
exit "$failed"
