#!/usr/bin/env bash
# A sweep on one GPU within a time limit, its records and logs packed for the trip back:
#   bash bench/gpu/sweep.sh SPEC OUT SECONDS [sweep options...]
# Runs `ecbench sweep SPEC --device cuda` for at most SECONDS, then packs every record and
# log it wrote (results under ./gpu-results, work under ./gpu-work) into OUT/sweep.tgz. A
# rerun resumes: finished runs are reused.
set -uo pipefail
SPEC=$1 OUT=$2 SECONDS_LEFT=$3
shift 3
export PYTHONUNBUFFERED=1
if ! python3 -c "import ecbench.bench" 2>/dev/null; then
    if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps .whl/*.whl || exit 1; fi
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
fi
mkdir -p "$OUT" gpu-results gpu-work
timeout --signal=INT "$SECONDS_LEFT" ecbench sweep "$SPEC" --device cuda --results gpu-results \
    --workdir gpu-work "$@" 2>&1 | tee "$OUT/sweep.log"
nvidia-smi --query-gpu=name,driver_version,utilization.gpu,memory.used --format=csv \
    >> "$OUT/sweep.log" 2>&1
tar czf "$OUT/sweep.tgz" gpu-results/runs gpu-work/sweeps 2>/dev/null
ls -la gpu-results/runs
