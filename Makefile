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
