#!/usr/bin/env bash
# GPU checks of the CuPy backend (`make test-gpu`), on a machine with a CUDA GPU:
#   1. nvidia-smi and versions;
#   2. the parity suite and the compile tests (the parity suite must run, not skip: OCP_REQUIRE_GPU=1);
#   3. compute-sanitizer memcheck and racecheck on a small driver (tools/sanitize_driver.py);
#   4. the timing benchmark (writes benchmarks/results/gpu_apply_<device>.json).
# Any failure stops the script with a non-zero exit. OCP_GPU_EXAMPLES sets the hypothesis examples (default 2000);
# OCP_GPU_STEPS picks steps 2-4 (default "tests sanitizer timing"), e.g. to split them over calls with a time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import cupy; cupy.zeros(1)" 2>/dev/null; then PY=.venv/bin/python
  else PY=python3; fi
fi
# packages the GPU image lacks (pycocotools, nvidia-dali, ...): on a machine without network they come from the
# offline bundle (tools/gpu_bundle.sh here, tools/gpu_proof.sh there), unpacked under $OCP_GPU_ROOT (/tmp/ocp_gpu)
GPU_ROOT=${OCP_GPU_ROOT:-/tmp/ocp_gpu}
if [ -d "$GPU_ROOT/site" ]; then
  export PYTHONPATH="$GPU_ROOT/site${PYTHONPATH:+:$PYTHONPATH}"
  [ -d "$GPU_ROOT/data/coco_mini" ] && export OCP_DATA=${OCP_DATA:-$GPU_ROOT/data}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# a bare checkout imports as it is: ocp_dali/__init__.py binds ocp_dali.kernels to kernels/
LOGS=${OCP_GPU_LOGS:-out/gpu_check}
STEPS=" ${OCP_GPU_STEPS:-tests sanitizer timing} "
step() { [[ "$STEPS" == *" $1 "* ]]; }
mkdir -p "$LOGS"

echo "== nvidia-smi"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi; then
  echo "gpu_check: nvidia-smi failed: this machine has no usable NVIDIA GPU" >&2
  exit 1
fi

echo "== versions"
command -v nvcc >/dev/null && nvcc --version | tail -n 2 || echo "nvcc: not on PATH"
"$PY" - <<'PY'
import sys, numpy, cupy
rt = cupy.cuda.runtime
props = rt.getDeviceProperties(cupy.cuda.Device().id)
name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, cupy {cupy.__version__}, "
      f"CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}, device {name} "
      f"(sm_{props['major']}{props['minor']})")
PY

if step tests; then
  echo "== tests: GPU parity + kernel compile"
  OCP_REQUIRE_GPU=1 "$PY" -m pytest -q -rs tests/test_gpu_parity.py tests/test_pipeline_gpu.py \
    tests/test_kernels_compile.py tests/test_gpu_lsj.py
fi

if step sanitizer; then
SAN=$(command -v compute-sanitizer || true)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -n "$SAN" ] || { [ -x "$c" ] && SAN=$c; } || true
done
if [ -z "$SAN" ]; then
  echo "gpu_check: compute-sanitizer not found (CUDA toolkit's bin/); cannot run memcheck / racecheck" >&2
  exit 1
fi
for tool in memcheck racecheck; do
  echo "== compute-sanitizer --tool $tool"
  log="$LOGS/sanitizer_$tool.log"
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check no)
  [ "$tool" = racecheck ] && extra=(--racecheck-report all)
  set +e
  "$SAN" --tool "$tool" --error-exitcode 99 "${extra[@]}" "$PY" tools/sanitize_driver.py 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  # the driver's own result check exits 1; the sanitizer's findings exit 99; the summary must say 0
  if [ "$rc" -ne 0 ] || ! grep -Eq "(ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards)" "$log"; then
    echo "gpu_check: compute-sanitizer $tool reported errors (exit $rc, log $log)" >&2
    exit 1
  fi
done
fi

if step timing; then
  echo "== timing"
  "$PY" benchmarks/gpu_apply_timing.py
fi
echo "gpu_check: all GPU checks passed"
