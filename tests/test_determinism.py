"""The same (seed, epoch, index) gives the same sample in any process; epochs and seeds change it."""
import subprocess
import sys
from pathlib import Path

from invariants import fingerprint
from ocp_dali import OCPConfig, SyntheticScenes, augment

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from invariants import fingerprint
from ocp_dali import OCPConfig, SyntheticScenes, augment
ds = SyntheticScenes(12, seed=4)
cfg = OCPConfig.ocp(prob=1.0, blend_sigma=1.0)
print(" ".join(fingerprint(augment(ds, i, epoch=2, seed=11, cfg=cfg)) for i in (7, 3, 0, 11)))
"""


def test_same_seed_epoch_index_is_identical_across_processes():
    ds = SyntheticScenes(12, seed=4)
    cfg = OCPConfig.ocp(prob=1.0, blend_sigma=1.0)
    here = [fingerprint(augment(ds, i, epoch=2, seed=11, cfg=cfg)) for i in (7, 3, 0, 11)]
    code = SCRIPT.format(tests=str(ROOT / "tests"))
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                           env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": str(h)}).stdout.split()
            for h in (1, 2)]
    assert outs[0] == here and outs[1] == here


def test_order_of_requests_does_not_matter_and_epochs_differ():
    ds = SyntheticScenes(12, seed=4)
    cfg = OCPConfig.ocp(prob=1.0)
    a = [fingerprint(augment(ds, i, epoch=0, seed=1, cfg=cfg)) for i in range(12)]
    b = [fingerprint(augment(ds, i, epoch=0, seed=1, cfg=cfg)) for i in reversed(range(12))][::-1]
    assert a == b
    c = [fingerprint(augment(ds, i, epoch=1, seed=1, cfg=cfg)) for i in range(12)]
    d = [fingerprint(augment(ds, i, epoch=0, seed=2, cfg=cfg)) for i in range(12)]
    assert sum(x != y for x, y in zip(a, c)) >= 8 and sum(x != y for x, y in zip(a, d)) >= 8
