"""Start-up faults of the worker pools: a worker that dies while starting, a DataLoader over ``OCPDataset`` started
from an unguarded script with spawned workers, and ``device="gpu"`` on a machine without a GPU. Each script runs in
a fresh interpreter (a hang must not take the test process with it) and must fail within 30 s, naming the cause."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

DIES_WHILE_STARTING = '''
import os
from ocp_dali import OCPConfig, SyntheticScenes
from ocp_dali.torch import OCPLoader

if __name__ == "__mp_main__":  # a spawned worker importing this script
    os._exit(7)
if __name__ == "__main__":
    ds = SyntheticScenes(8, image_size=(128, 128))
    ds.ballast = bytes({ballast})  # more start-up data than a pipe buffer holds: CPython gh-118981's hang
    with OCPLoader(ds, OCPConfig.ocp(), device="cpu", batch_size=2, output_size=128, py_num_workers=2,
                   num_threads=1) as loader:
        next(iter(loader))
'''

DATASET_SPAWN_UNGUARDED = '''
import torch
from ocp_dali import OCPConfig, SyntheticScenes
from ocp_dali.torch import OCPDataset

ds = OCPDataset(SyntheticScenes(8, image_size=(128, 128)), OCPConfig.ocp(), output_size=128)
for batch in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=list,
                                         multiprocessing_context="{method}"):
    pass
'''


def run(tmp_path: Path, source: str, limit: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    script = tmp_path / "script.py"
    script.write_text(source)
    started = time.monotonic()
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=limit)
    return r, time.monotonic() - started


def fails_at_once(tmp_path: Path, source: str) -> str:
    """Run the script, check that it failed within 30 s, and return the last line of its stderr (the error)."""
    r, seconds = run(tmp_path, source)
    assert r.returncode != 0 and seconds < 30, (seconds, r.stderr[-2000:])
    return r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("ballast", [0, 1 << 20], ids=["small", "larger-than-a-pipe"])
def test_dali_worker_that_dies_while_starting_fails_the_loader_at_once(tmp_path, ballast):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    line = fails_at_once(tmp_path, DIES_WHILE_STARTING.format(ballast=ballast))
    assert line.startswith("ocp_dali.workers.WorkerStartError: OCPLoader: the DALI worker processes could not "
                           "start"), line
    assert "script.py again" in line and 'if __name__ == "__main__":' in line, line


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_dataloader_over_ocpdataset_from_an_unguarded_script_names_the_guard(tmp_path, method):
    line = fails_at_once(tmp_path, DATASET_SPAWN_UNGUARDED.format(method=method))
    assert line.startswith("ocp_dali.workers.WorkerStartError: a DataLoader over OCPDataset starts spawned "
                           "workers at the top level of "), line
    assert "script.py (line 7)" in line and 'if __name__ == "__main__":' in line, line


def test_guarded_scripts_and_fork_are_not_refused(tmp_path):
    source = DATASET_SPAWN_UNGUARDED.format(method="spawn")
    loop = source.index("for batch in")
    guarded = source[:loop] + 'if __name__ == "__main__":\n' + "".join(
        "    " + line for line in source[loop:].splitlines(keepends=True))
    r, _ = run(tmp_path, guarded)
    assert r.returncode == 0, r.stderr[-2000:]
    r, _ = run(tmp_path, DATASET_SPAWN_UNGUARDED.format(method="fork"))  # fork imports nothing again
    assert r.returncode == 0, r.stderr[-2000:]


def test_gpu_loader_without_a_gpu_says_so_and_names_the_cpu_option():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from ocp_dali import SyntheticScenes
    from ocp_dali.torch import OCPLoader

    with pytest.raises(RuntimeError, match=r'^OCPLoader: device="gpu" needs a CUDA GPU, and there is none here: .*'
                                           r'Use device="cpu"'):
        OCPLoader(SyntheticScenes(2), device="gpu")


def test_mmdet_dali_loader_without_a_gpu_says_so():
    torch = pytest.importorskip("torch")
    pytest.importorskip("mmdet", reason="mmdet is not installed")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from ocp_dali import OCPConfig, SyntheticScenes
    from ocp_dali.mmdet.loader import DALIDetDataLoader

    with pytest.raises(RuntimeError, match='needs a CUDA GPU.*Use device="cpu"'):
        DALIDetDataLoader(SyntheticScenes(2), OCPConfig.ocp(), device="gpu")
