#!/usr/bin/env bash
# On a machine with network: download the wheels a GPU machine without network needs for `make test-gpu` and the
# GPU pipeline (its python3 is 3.12 with torch, CuPy, numpy, pytest, hypothesis; it lacks these). They land in .whl/
# (ignored by git); carry that folder to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
# DALI and its needs; mmdet's stack for the benchmark's mmdet rows (mmcv-lite: no compiled ops; Mask R-CNN training
# needs mmcv with CUDA ops, built on the GPU machine from the sdist, also saved here: about 4 min on 16 cores with
# torch 2.11 / CUDA 13.0, measured on an H100 machine).
for pkg in pycocotools==2.0.11 nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13 nvidia-nvjpeg nvidia-nvjpeg2k-cu13 \
           nvidia-nvtiff-cu13 nvidia-libnvcomp-cu13==5.3.0.16 astunparse gast dm-tree six optree nvtx makefun \
           "libcst~=1.8" mmengine==0.10.7 mmdet==3.3.0 mmcv-lite==2.1.0 addict yapf termcolor terminaltables shapely \
           platformdirs; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$pkg"
done
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python  # the sdist's metadata needs torch
"$py" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d .whl mmcv==2.1.0 || true
# about 260 MB in all, the DALI wheel alone 199 MB: where a transfer is limited (64 MiB a call on this workplace's
# device tool), split it (split -b 60000000) and join the parts there (cat) before installing.
ls -la .whl
