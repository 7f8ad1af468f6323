#!/usr/bin/env bash
# On a machine with a package index: the offline bundle for a GPU machine that has no network (README "GPU checks").
# It holds exactly what the GPU image lacks for Python 3.12 (DALI and its codec wheels, pycocotools, mmengine, mmdet,
# their small dependencies, setuptools<82 for mmcv's build, the mmcv 2.1.0 sdist whose CUDA ops are built there) and
# a few real COCO person images (coco_mini val2017, from $OCP_BUNDLE_DATA; never committed), slimmed, compressed with
# xz (preset 9|extreme) and cut into parts of at most $OCP_BUNDLE_PART_MIB MiB (default 60) with a manifest of sha256
# sums and the order of the commands:
#     bash tools/gpu_bundle.sh            # -> .bundle/manifest.json, .bundle/part01.bin, ... (ignored by git)
# Environment: OCP_BUNDLE_DIR (default .bundle), OCP_BUNDLE_TORCH_PY (a python with torch, for the mmcv sdist's
# metadata; default .venv/bin/python), OCP_BUNDLE_DATA (default ../shared/data), OCP_BUNDLE_JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
DIR=${OCP_BUNDLE_DIR:-.bundle}
TORCH_PY=${OCP_BUNDLE_TORCH_PY:-.venv/bin/python}
DATA=${OCP_BUNDLE_DATA:-../shared/data}
PART_MIB=${OCP_BUNDLE_PART_MIB:-60}
JOBS=${OCP_BUNDLE_JOBS:-$(nproc)}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}")
# One version of each; the GPU image already has torch, torchvision, CuPy, numpy, scipy, matplotlib, opencv, Pillow,
# six, packaging, pyyaml, rich, tqdm, pytest, hypothesis, nvidia-ml-py (/work/.library/device/KINDS.md).
PACKAGES=(nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43
          nvidia-nvjpeg2k-cu13==0.11.0.51 nvidia-nvtiff-cu13==0.8.0.82 nvidia-libnvcomp-cu13==5.3.0.16
          astunparse==1.6.3 gast==0.7.0 optree nvtx makefun "libcst~=1.8" dm-tree
          pycocotools==2.0.11 mmengine==0.10.7 mmdet==3.3.0 addict yapf termcolor terminaltables shapely platformdirs
          setuptools==81.0.0)

rm -rf "$DIR/stage" "$DIR/wheels"
mkdir -p "$DIR/wheels" "$DIR/stage/site" "$DIR/stage/src" "$DIR/stage/data"
echo "== download (${#PACKAGES[@]} wheels for cp312 manylinux x86_64, and the mmcv 2.1.0 sdist)"
python3 -m pip download -q --no-deps "${TARGET[@]}" -d "$DIR/wheels" "${PACKAGES[@]}"
# the sdist's metadata step imports torch: any local python with torch will do
"$TORCH_PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$DIR/stage/src" mmcv==2.1.0
du -sh "$DIR/wheels" "$DIR/stage/src"/*

echo "== install into a tree as the GPU machine will see it (pip --target for Python 3.12), then slim"
python3 -m pip install -q --no-deps --no-compile --no-index "${TARGET[@]}" --target "$DIR/stage/site" \
  "$DIR"/wheels/*.whl
du -sh "$DIR/stage/site"
python3 tools/gpu_bundle.py slim "$DIR/stage/site"
du -sh "$DIR/stage/site"

if [ -d "$DATA/coco_mini/val2017" ]; then
  echo "== data: coco_mini val2017 person images and annotations (parity checks and measurements)"
  mkdir -p "$DIR/stage/data/coco_mini/annotations"
  cp -r "$DATA/coco_mini/val2017" "$DIR/stage/data/coco_mini/"
  cp "$DATA/coco_mini/annotations/person_keypoints_val2017.json" "$DIR/stage/data/coco_mini/annotations/"
else
  echo "== data: $DATA/coco_mini not found: the GPU run will use synthetic JPEG scenes only"
fi

echo "== pack (xz 9|extreme, $JOBS processes; parts <= $PART_MIB MiB)"
python3 tools/gpu_bundle.py pack --root "$DIR/stage" --out "$DIR" --part-mib "$PART_MIB" --jobs "$JOBS"
rm -rf "$DIR/stage" "$DIR/wheels"
echo "gpu_bundle: built in $(( $(date +%s) - T0 )) s; carry $DIR/manifest.json and one part per call, in order:"
python3 -c "import json,sys; [print('  ', c) for c in json.load(open(sys.argv[1]))['commands']]" "$DIR/manifest.json"
