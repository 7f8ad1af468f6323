"""Smoke tests of the demo and preview command lines (synthetic data only, outputs under tmp_path)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from ocp_dali import demo, preview  # noqa: E402

SUMMARY_FIELDS = (
    "samples", "mean_instances_before", "mean_instances_after", "total_pasted", "skipped", "dropped_existing",
    "dropped_pasted", "mean_occlusion_pasted", "mean_occlusion_existing", "frac_pasted_overlapping_existing",
    "ms_per_sample",
)


def test_demo_writes_summary_and_preview(tmp_path):
    assert demo.main(["--num-images", "8", "--samples", "12", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for field in SUMMARY_FIELDS:
        assert field in summary, field
    assert summary["samples"] == 12
    assert summary["total_pasted"] > 0
    assert 0.0 <= summary["frac_pasted_overlapping_existing"] <= 1.0
    assert (tmp_path / "preview.png").stat().st_size > 0


def test_preview_synthetic_writes_png(tmp_path):
    out = tmp_path / "grid.png"
    assert preview.main(["--out", str(out), "--num", "2"]) == 0
    data = out.read_bytes()
    assert len(data) > 0 and data[:8] == b"\x89PNG\r\n\x1a\n"
