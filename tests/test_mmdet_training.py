"""trainers/train_mmdet.py on CPU: Mask R-CNN and Mask2Former small configs with and without --dali, loss falls,
resume replays the augmentation stream, torchrun with 2 ranks sees 2 shards."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, data_path

pytest.importorskip("mmdet", reason="mmdet is not installed")
MASK_RCNN = "configs/mask_rcnn/mask-rcnn_r18_fpn_ocp_tiny-cpu.py"
MASK2FORMER = "configs/mask2former/mask2former_r18_ocp_tiny-cpu.py"


def train(work_dir: Path, config: str, *extra: str, torchrun: int = 0) -> list[dict]:
    data_path("coco_mini")
    cmd = [sys.executable, "trainers/train_mmdet.py", "--config", config, "--work-dir", str(work_dir), *extra]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun), *cmd[1:],
               "--launcher", "pytorch"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    logs = sorted(work_dir.glob("*/vis_data/scalars.json"))
    assert logs, f"no training log in {work_dir}"
    return [json.loads(line) for line in logs[-1].read_text().splitlines() if '"loss"' in line]


def log_text(work_dir: Path) -> str:
    """The text log of the latest run in ``work_dir``."""
    return sorted(work_dir.glob("*/*.log"))[-1].read_text()


def stream(work_dir: Path, rank: int = 0) -> dict[int, dict]:
    lines = (work_dir / f"data_stream_rank{rank}.jsonl").read_text().splitlines()
    return {d["iter"]: d for d in map(json.loads, lines)}


@pytest.mark.parametrize("config", [MASK_RCNN, MASK2FORMER])
@pytest.mark.parametrize("dali", [False, True])
def test_small_configs_train_with_and_without_dali(tmp_path, config, dali):
    import torch

    logs = train(tmp_path, config, *(["--dali"] if dali else []), "--cfg-options", "train_cfg.max_iters=3")
    assert len(logs) == 3 and all(math.isfinite(x["loss"]) for x in logs)
    assert len(stream(tmp_path)) == 3
    # checkpoints say what the model detects, on both paths (MMEngine reads train_dataloader.dataset.metainfo)
    checkpoint = torch.load(sorted(tmp_path.glob("iter_*.pth"))[-1], map_location="cpu", weights_only=False)
    assert checkpoint["meta"]["dataset_meta"] == {"classes": ("person",)}
    # what the run says in its first seconds: weights, (--dali) the loader, the start and the first iteration
    text = log_text(tmp_path)
    assert "weights: the config names no pretrained weights: random initialisation" in text
    assert ("DALI loader: device cpu, 1 worker processes" in text) == dali
    assert ("targets: bboxes, labels, masks (TensorMasks on cpu), pasted; uint8" in text) == dali
    assert "training starts at iteration 1 of 3" in text and "first batch ready after" in text
    assert "iteration 1 of 3 done" in text


def test_loss_falls_on_a_handful_of_images(tmp_path):
    logs = train(tmp_path, MASK_RCNN, "--cfg-options", "train_cfg.max_iters=20",
                 "train_dataloader.dataset.dataset.indices=4", "default_hooks.checkpoint.interval=100")
    losses = [x["loss"] for x in logs]
    assert len(losses) == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, losses


@pytest.mark.parametrize("dali", [False, True])
def test_resume_continues_with_the_same_augmentation_stream(tmp_path, dali):
    flag = ["--dali"] if dali else []
    full = tmp_path / "full"
    train(full, MASK_RCNN, *flag, "--cfg-options", "train_cfg.max_iters=4")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    logs = train(resumed, MASK_RCNN, *flag, "--resume", str(full / "iter_2.pth"), "--cfg-options",
                 "train_cfg.max_iters=4")
    assert [x["iter"] for x in logs] == [3, 4], "resume continues from the saved iteration"
    a, b = stream(full), stream(resumed)
    assert b[2]["sha256"] == a[2]["sha256"] and b[3]["sha256"] == a[3]["sha256"]
    assert a[2]["sha256"] != a[3]["sha256"]


def test_torchrun_two_ranks_see_different_shards(tmp_path):
    train(tmp_path, MASK_RCNN, "--dali", "--cfg-options", "train_cfg.max_iters=2", torchrun=2)
    r0, r1 = stream(tmp_path, 0), stream(tmp_path, 1)
    ids0 = {i for d in r0.values() for i in d["img_ids"]}
    ids1 = {i for d in r1.values() for i in d["img_ids"]}
    assert len(r0) == len(r1) == 2 and ids0 and ids1 and not ids0 & ids1
