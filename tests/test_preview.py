"""Smoke tests of the demo and preview command lines (synthetic data only, outputs under tmp_path)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from ocp_dali import demo, preview  # noqa: E402

SUMMARY_FIELDS = (
    "device", "preset", "steps", "images", "img_per_s", "pasted", "dropped", "dropped_by_crop", "skipped_images",
    "mean_occlusion_pasted", "mean_occlusion_existing", "first_loss", "last_loss",
)


def test_demo_trains_on_the_loader_and_draws_its_batches(tmp_path, capsys):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    assert demo.main(["--num-images", "6", "--steps", "3", "--batch-size", "2", "--size", "128", "--out",
                      str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert tuple(summary) == SUMMARY_FIELDS
    assert summary["steps"] == 3 and summary["images"] == 6 and summary["img_per_s"] > 0
    assert summary["pasted"] > 0 and 0.0 <= summary["mean_occlusion_pasted"] <= 1.0
    assert summary["first_loss"] > 0 and summary["last_loss"] > 0
    table = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()
             if len(line.split()) == 2}
    assert table["images"] == "6" and table["device"] == summary["device"]
    assert (tmp_path / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_synthetic_writes_png(tmp_path):
    out = tmp_path / "grid.png"
    assert preview.main(["--out", str(out), "--num", "2"]) == 0
    data = out.read_bytes()
    assert len(data) > 0 and data[:8] == b"\x89PNG\r\n\x1a\n"
