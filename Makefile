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
# No `env` step: GPU machines may have no network; the script uses .venv if present, else python3 plus the wheels
# that tools/gpu_wheels.sh downloaded into .whl/ on a machine with network.
.PHONY: test-gpu
test-gpu:
	bash tools/gpu_check.sh
