# The two set-up commands of the README. Each builds .venv/ first when it is missing or out of date
# (tools/setup_env.sh: pinned packages, mmcv compiled once and cached as a wheel).
PY := .venv/bin/python

.PHONY: env demo test preview

env:
	@bash tools/setup_env.sh

demo: env
	$(PY) -m ocp_dali.demo

test: env
	$(PY) -m pytest -q tests

# Extra: a preview grid of real images (not committed: the images are not ours to publish).
preview: env
	$(PY) -m ocp_dali.preview --ann ../shared/data/ochuman_samples/mmpose/test_ochuman.json \
		--images ../shared/data/ochuman_samples/mmpose --out out/preview.png

# GPU machines only: parity suite, compile tests, compute-sanitizer memcheck/racecheck, timing (tools/gpu_check.sh).
# No `env` step: GPU machines may have no network; the script uses .venv if present, else python3 plus the packages
# of the offline bundle unpacked under /tmp/ocp_gpu (README "GPU checks").
.PHONY: test-gpu gpu-proof gpu-bundle gpu-proof-dry
test-gpu:
	bash tools/gpu_check.sh

# The GPU proof (benchmarks/gpu_proof.py: parity, throughput, training iterations) on a GPU machine with network.
gpu-proof:
	$(PY) benchmarks/gpu_proof.py --data ../shared/data/coco_mini --out benchmarks/results

# The offline path: the bundle of parts for a GPU machine without network (run here), and the last stage's dry run.
gpu-bundle:
	bash tools/gpu_bundle.sh

gpu-proof-dry: env
	PY=$(PY) bash tools/gpu_proof.sh --dry-run
