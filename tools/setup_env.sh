#!/usr/bin/env bash
# Build the project's virtual environment in .venv/ (idempotent).
#
# Why a script and not `pip install -r`: torch must come from the pinned CPU wheel (a plain range would pull
# several GB of CUDA packages), and mmcv 2.1.0 has no binary wheel on PyPI -- it is compiled from source
# (~20 min on 2 cores) once and cached as a wheel in $OCP_WHEELHOUSE, so later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${OCP_VENV:-.venv}
WHEELHOUSE=${OCP_WHEELHOUSE:-$HOME/.cache/ocp_dali/wheels}
PY=${PYTHON:-python3}
STAMP="$VENV/.ocp_env_ok"
REQ_HASH=$(cat requirements.txt tools/setup_env.sh setup.py | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ]; then
  exit 0
fi

echo "[setup_env] building $VENV (wheel cache: $WHEELHOUSE)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

# Build tools first: mmcv's setup.py and mmengine import pkg_resources, removed in setuptools 82. Pin an exact
# version: a venv starts with an old setuptools that satisfies "<82", and torch (setuptools>=77.0.3) would then pull
# the newest one, without pkg_resources.
"${PIP[@]}" setuptools==81.0.0 wheel ninja

# torch: the pinned 2.13.0; where there is no GPU this resolves to the CPU wheel on the machine.
"${PIP[@]}" torch==2.13.0

"${PIP[@]}" -r requirements.txt

# mmcv 2.1.0 with compiled ops, built once against the installed torch and cached.
mkdir -p "$WHEELHOUSE"
if ! ls "$WHEELHOUSE"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  echo "[setup_env] compiling mmcv 2.1.0 with ops (one time, ~20 min on 2 cores)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$VENV/bin/python" -m pip wheel --no-deps --no-build-isolation --no-binary mmcv \
    -w "$WHEELHOUSE" mmcv==2.1.0
fi
"${PIP[@]}" --no-deps "$WHEELHOUSE"/mmcv-2.1.0-*.whl
# mmcv's own runtime dependencies (no-deps above keeps pip from re-resolving torch).
"${PIP[@]}" addict packaging Pillow pyyaml yapf

# The project itself, editable, with kernels/ installed as ocp_dali.kernels.
"${PIP[@]}" --no-deps --no-build-isolation -e .

"$VENV/bin/python" - <<'PY'
import pkg_resources  # noqa: F401  (mmengine needs it: the setuptools pin must have held)
import torch, mmcv, mmdet, mmengine, numpy, pycocotools
from mmcv.ops import RoIAlign, nms  # compiled ops must import
print(f"[setup_env] torch {torch.__version__}, mmcv {mmcv.__version__} (ops ok), mmdet {mmdet.__version__}, "
      f"mmengine {mmengine.__version__}, numpy {numpy.__version__}")
PY
echo "$REQ_HASH" > "$STAMP"
