#!/usr/bin/env bash
# On a machine with network: download the wheels a GPU machine without network needs for `make test-gpu` and the
# GPU pipeline (its python3 is 3.12 with torch, CuPy, numpy, pytest, hypothesis; it lacks these). They land in .whl/
# (ignored by git); carry that folder to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for pkg in pycocotools==2.0.11 nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13 nvidia-nvjpeg nvidia-nvjpeg2k-cu13 \
           nvidia-nvtiff-cu13 nvidia-libnvcomp-cu13 astunparse gast dm-tree six; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$pkg"
done
ls -la .whl
