#!/usr/bin/env bash
# The GPU figures of issue 14 in one command, for a session that is lent a CUDA machine
# (about 15 minutes of device time): the kernels' correctness on the device, then the
# torch section's layer and network figures, each LocalNorm row beside its "Triton off"
# twin (the paths before the kernels) and BatchNorm, with the achieved bandwidth as a
# fraction of the device's peak.
#
#   bash benchmarks/cuda_session.sh [OUT_DIR [BENCH_ARGS...]]   # default docs/results/cuda
#   (BENCH_ARGS go to localnorm bench, e.g. --quick for a machinery check)
#
# Needs a CUDA build of PyTorch (Triton comes with it) and this checkout installed
# (pip install -e ".[test]"). Writes OUT_DIR/{device.txt,conformance.log,bench.json,
# bench.md,bench.log}; merge with the CPU run by
#   localnorm bench --merge docs/results/bench.json OUT_DIR/bench.json --out-dir docs/results
# Budget: at most 5 minutes of tests, then at most 9 of benchmarks.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${1:-docs/results/cuda}
mkdir -p "$OUT_DIR"
unset TRITON_INTERPRET LOCALNORM_TRITON  # the real kernels, on the GPU
"$PY" - > "$OUT_DIR/device.txt" <<'PYEOF' || exit 1
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this script measures the GPU path (issue 14)")
import triton
print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| triton",
      triton.__version__, "| CUDA", torch.version.cuda)
PYEOF
cat "$OUT_DIR/device.txt"
fail=0
# The kernels and the layers on the device against the NumPy reference (dev profile: 25
# examples per property; each new shape costs a Triton compilation).
HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-dev} PYTHONHASHSEED=0 timeout 300 \
  "$PY" -m pytest -q -m "not slow" -p no:cacheprovider tests/torch/test_triton.py \
  conformance --subjects=torch-cuda,torch-triton 2>&1 | tee "$OUT_DIR/conformance.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && fail=1
timeout 540 "$PY" -m localnorm bench --sections torch --device cuda --kinds layer,network \
  --timeout 500 --out-dir "$OUT_DIR" "${@:2}" 2>&1 | tee "$OUT_DIR/bench.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && fail=1
echo "figures: $OUT_DIR/bench.md (exit $fail)"
exit $fail
