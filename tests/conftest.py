"""Shared fixtures: paths to the team's real COCO data (tests skip with the reason when it is absent)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers (invariants, scenes)
DATA = Path(os.environ.get("OCP_DATA", ROOT.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """A path under the shared data folder, or skip the test saying what is missing."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not found: {p} (set OCP_DATA to the folder holding coco_mini/, coco_tiny/, "
                    "ochuman_samples/)")
    return p


@pytest.fixture(scope="session")
def coco_mini_train():
    from ocp_dali import CocoInstances

    return CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_train2017.json"),
                         data_path("coco_mini", "train2017"), classes=["person"])
