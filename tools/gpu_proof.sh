#!/usr/bin/env bash
# The GPU visit on a machine without network, in stages that match the bundle's parts (tools/gpu_bundle.sh;
# README "GPU checks"). Each call carries .bundle/manifest.json and one part:
#     bash tools/gpu_proof.sh 1      # unpack part 1, start the mmcv CUDA build in the background (own session)
#     bash tools/gpu_proof.sh K      # unpack part K (middle stages)
#     bash tools/gpu_proof.sh N      # last part: unpack, check the manifest, run the measurements
#                                    # (benchmarks/gpu_proof.py, steps a..e, each with its own time cap)
#     bash tools/gpu_proof.sh --dry-run   # the last stage on a CPU machine: tiny sizes, CPU graph, kernel emulator
# Results go to $OUT (the device tool's output folder; default out/gpu_proof): gpu_proof_<device>.json, .png,
# gpu_proof.log and mmcv_build.log. Files under /tmp/ocp_gpu and the background build survive between calls while
# the machine stays up.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=${OCP_GPU_ROOT:-/tmp/ocp_gpu}
BUNDLE=${OCP_BUNDLE_DIR:-.bundle}
RESULTS=${OUT:-out/gpu_proof}
PY=${PY:-python3}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1

if [ "${1:-}" = "--dry-run" ]; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  exec "$PY" benchmarks/gpu_proof.py --dry-run --out "$RESULTS" "${@:2}"
fi

K=${1:?usage: gpu_proof.sh PART_NUMBER | --dry-run}
PART=$(printf '%s/part%02d.bin' "$BUNDLE" "$K")
N=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['parts']))" "$BUNDLE/manifest.json") || exit 1
mkdir -p "$ROOT"
echo "== stage $K of $N: $(date -u +%T)"
"$PY" tools/gpu_bundle.py unpack --manifest "$BUNDLE/manifest.json" --part "$PART" --root "$ROOT" || exit 1

start_build() {  # mmcv 2.1.0 with CUDA ops for sm_90, in its own session so that it outlives this command
  [ -e "$ROOT/mmcv_build.started" ] && return 0
  local sdist
  sdist=$(ls "$ROOT"/src/mmcv-*.tar.gz 2>/dev/null | head -n 1)
  [ -n "$sdist" ] || { echo "gpu_proof: no mmcv sdist unpacked yet"; return 0; }
  date -u +%s > "$ROOT/mmcv_build.started"
  setsid nohup env PYTHONPATH="$ROOT/site" MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 \
    MAX_JOBS="$(nproc)" bash -c "'$PY' -m pip wheel -v --no-deps --no-build-isolation --no-index -w '$ROOT/wheels' \
    '$sdist'; echo \$? > '$ROOT/mmcv_build.done'" > "$ROOT/mmcv_build.log" 2>&1 < /dev/null &
  echo "gpu_proof: mmcv build started in the background (log $ROOT/mmcv_build.log)"
}
start_build
[ "$K" -lt "$N" ] && exit 0

echo "== last stage: check the manifest"
"$PY" tools/gpu_bundle.py verify --manifest "$BUNDLE/manifest.json" --root "$ROOT" || exit 1
DEADLINE=$(( $(date -u +%s) + ${OCP_PROOF_BUDGET:-540} ))  # the whole last stage's measurements: 9 minutes
export PYTHONPATH="$ROOT/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OCP_DATA="$ROOT/data"
DATA=(); [ -d "$ROOT/data/coco_mini/val2017" ] && DATA=(--data "$ROOT/data/coco_mini")
# step a needs no mmcv: it runs while the build finishes; b..e need mmdet, hence mmcv's ops
"$PY" benchmarks/gpu_proof.py --steps a --deadline "$DEADLINE" --out "$RESULTS" "${DATA[@]}" 2>&1 |
  tee -a "$RESULTS/gpu_proof.log"

echo "== wait for the mmcv build (until 300 s before the deadline)"
while [ ! -e "$ROOT/mmcv_build.done" ] && [ "$(date -u +%s)" -lt $(( DEADLINE - 300 )) ]; do sleep 1; done
tail -n 40 "$ROOT/mmcv_build.log" > "$RESULTS/mmcv_build.log" 2>/dev/null
if [ "$(cat "$ROOT/mmcv_build.done" 2>/dev/null)" = "0" ]; then
  echo "mmcv built in $(( $(date -u +%s) - $(cat "$ROOT/mmcv_build.started") )) s"
  "$PY" -m pip install -q --no-deps --no-index --no-compile --target "$ROOT/site" "$ROOT"/wheels/mmcv-*.whl
  "$PY" -c "import torch; from mmcv.ops import nms" || echo "gpu_proof: mmcv's compiled ops do not import"
else
  echo "gpu_proof: the mmcv build did not finish (see mmcv_build.log): the mmdet rows will record the failure"
fi
"$PY" benchmarks/gpu_proof.py --steps b,c,d,e --deadline "$DEADLINE" --out "$RESULTS" "${DATA[@]}" 2>&1 |
  tee -a "$RESULTS/gpu_proof.log"
