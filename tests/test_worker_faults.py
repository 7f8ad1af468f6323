"""Worker faults: a worker process that dies or hangs makes the loader raise a clear error within a bounded time,
never a silent hang; on the DALI path (``OCPLoader``'s worker pool) and on the mmdet CPU path (the torch
``DataLoader`` workers MMEngine builds from our configs).

Each scenario (``tests/worker_faults.py``) runs in its own process group under a time limit: a hung pipeline may
not be stoppable from inside the process, and the scenario process's exit shows that the loader, once failed and
closed, lets the interpreter end.
"""
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, data_path
from worker_faults import EXIT_CODE

MASK_RCNN = "configs/mask_rcnn/mask-rcnn_r18_fpn_ocp_tiny-cpu.py"
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("configs/*/*.py") if p.parent.name != "_base_")


def scenario(call: str, limit: int) -> dict:
    """Run ``worker_faults.<call>`` in a fresh interpreter; its result, or a failure if it does not end (with its
    worker processes) within ``limit`` seconds."""
    code = f"import json, worker_faults; print('RESULT', json.dumps(worker_faults.{call}))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: workers included
        out, err = proc.communicate()
        pytest.fail(f"{call} did not end within {limit} s (a hang):\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    results = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert results, (out[-2000:], err[-2000:])
    return json.loads(results[-1][len("RESULT "):])


# -- DALI path ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault, status", [("die", f"exited with code {EXIT_CODE}"),
                                           ("kill", "was killed by signal SIGKILL (9)")])
def test_dali_worker_that_dies_is_named_at_once(fault, status):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    # a timeout far above the scenario's limit: the error must come from the death, not from the deadline
    r = scenario(f"dali_scenario({fault!r}, timeout=1000.0)", limit=120)
    assert r["type"] == "WorkerError", r
    assert "DALI worker pid " in r["message"] and status in r["message"], r["message"]
    assert "epoch 0, batch 0, dataset indices [0, 1]" in r["message"], r["message"]
    assert r["attrs"] == {"epoch": 0, "batch": 0, "indices": [0, 1]}
    assert r["recovered"] == 4, "the loader starts a new pipeline on the next iter()"
    assert r["alive"] == 0, "closing the loader leaves no worker process"


def process_gone(pid: int) -> bool:
    """No process ``pid``, or only its zombie (an orphan's new parent may not reap it at once)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dali_workers_end_when_the_main_process_is_killed(tmp_path):
    """Without ``workers.exit_with_parent`` DALI's workers outlived a killed main process (19 minutes and more,
    holding its stdout: a reader of that output waited for ever)."""
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    code = "import worker_faults; worker_faults.main_dies_scenario()"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    log = tmp_path / "out.txt"
    with open(log, "w") as out:  # a file, not a pipe: workers that live on would keep a pipe open
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL, log.read_text()[-3000:]
        lines = [line for line in log.read_text().splitlines() if line.startswith("WORKERS ")]
        assert lines, log.read_text()[-3000:]
        pids = [int(p) for p in lines[-1].split()[1:]]
        assert len(pids) == 2
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(map(process_gone, pids)):
            time.sleep(0.2)
        assert all(map(process_gone, pids)), f"DALI workers {pids} outlived their main process"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group


def test_dali_worker_that_hangs_fails_the_loader_after_its_timeout():
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    r = scenario("dali_scenario('hang', timeout=5.0)", limit=120)
    assert r["type"] == "WorkerError", r
    assert r["message"].startswith("no batch within 5 s: a DALI worker is hung"), r["message"]
    assert "epoch 0, batch 0, dataset indices [0, 1]" in r["message"], r["message"]
    assert r["seconds"] >= 5.0, "the deadline never fires early"
    assert r["recovered"] == 4 and r["alive"] == 0


def test_dali_worker_exception_is_not_mistaken_for_a_worker_fault():
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    r = scenario("dali_scenario('raise', timeout=1000.0)", limit=120)
    assert r["type"] == "RuntimeError", r
    assert "injected fault" in r["message"] and "epoch 0, batch 0" in r["message"], r["message"]
    assert r["recovered"] == 4 and r["alive"] == 0


def test_loader_timeout_must_be_positive_or_none():
    from ocp_dali import SyntheticScenes
    from ocp_dali.torch import OCPLoader

    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="timeout"):
            OCPLoader(SyntheticScenes(2), device="cpu", timeout=bad)
    OCPLoader(SyntheticScenes(2), device="cpu", timeout=None).close()


# -- mmdet CPU path ----------------------------------------------------------------------------------------------
def test_mmdet_dataloader_worker_that_dies_is_named():
    pytest.importorskip("mmdet", reason="mmdet is not installed")
    data_path("coco_mini")
    r = scenario(f"mmdet_scenario({MASK_RCNN!r}, 'die', timeout=1000.0)", limit=300)
    assert r["type"] == "RuntimeError", r
    assert "DataLoader worker (pid" in r["message"] and "exited unexpectedly" in r["message"], r["message"]


def test_mmdet_dataloader_worker_that_hangs_times_out():
    pytest.importorskip("mmdet", reason="mmdet is not installed")
    data_path("coco_mini")
    r = scenario(f"mmdet_scenario({MASK_RCNN!r}, 'hang', timeout=5.0)", limit=300)
    assert r["type"] == "RuntimeError", r
    assert "DataLoader timed out after 5.0 seconds" in r["message"], r["message"]


@pytest.mark.parametrize("config", CONFIGS)
def test_configs_bound_the_wait_for_a_batch(config):
    pytest.importorskip("mmdet", reason="mmdet is not installed")
    from mmengine.config import Config

    cfg = Config.fromfile(str(ROOT / config))
    dl = cfg.train_dataloader
    if dl.num_workers > 0:
        assert 0 < dl.get("timeout", 0) < math.inf, "a hung DataLoader worker would block training for ever"
    else:
        assert dl.get("timeout", 0) == 0, "torch's single-process loader refuses a timeout"
    assert 0 < cfg.ocp_dali.get("timeout", 0) < math.inf, "the --dali loader's timeout"
