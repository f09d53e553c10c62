#!/usr/bin/env bash
# The GPU acceptance check, one command on a machine with a CUDA GPU (from the repository root):
#   bash bench/gpu/check.sh [OUT]
# Installs the checkout (no downloads: torch is the machine's own), runs the GPU tests
# (`pytest -m gpu`), then `ecbench bench train` on Tmall on the GPU and on the CPU of the same
# machine, for the full table and for a ccode distillation step. Everything it writes goes
# under OUT (default ./gpu-check): the test log and the benchmark records.
# DEVICE=cpu runs the same steps on the CPU (a dry run of the script where there is no GPU).
set -uo pipefail
OUT=${1:-gpu-check}
DEVICE=${DEVICE:-cuda}
DATA_ROOT=${DATA_ROOT:-../shared/datasets}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import ecbench.bench" 2>/dev/null; then
    if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps .whl/*.whl || exit 1; fi
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null | tee "$OUT/gpu.txt"
status=0
if [ "$DEVICE" != cpu ]; then
    python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log"
    status=${PIPESTATUS[0]}
fi
bench() { ecbench bench train --data tmall --data-root "$DATA_ROOT" --steps "$STEPS" \
              --results "$OUT" "$@" 2>&1 | grep -E "pairs_per_second|seconds_per_epoch|record:"; }
for device in "$DEVICE" cpu; do
    threads=$([ "$device" = cpu ] && echo 2 || echo 1)
    echo "== $device: full table"
    bench --device "$device" --threads "$threads"
    echo "== $device: ccode M=4 K=32, distillation step"
    bench --device "$device" --threads "$threads" --compressor ccode --M 4 --K 32 --kd full
    [ "$DEVICE" = cpu ] && break
done
exit "$status"
