"""The GPU visit's tooling without a GPU (issue 12), so that it cannot rot between visits: the bundle's manifest
logic on a fake bundle (part sizes, sums, units across parts, staged unpacking, corruption caught), and the last
stage's dry run (``tools/gpu_proof.sh --dry-run``: tiny sizes, CPU graph, kernel emulator, one CPU iteration)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_bundle  # noqa: E402

KIB = 1024


def fake_stage(root: Path) -> dict[str, bytes]:
    """A staged tree like gpu_bundle.sh's, with things slim() must drop; returns the files that must survive."""
    rng = __import__("random").Random(0)
    keep = {
        "src/mmcv-2.1.0.tar.gz": rng.randbytes(3 * KIB),
        "site/setuptools/__init__.py": b"# setuptools\n" * 50,
        "site/mmdet/__init__.py": b"__version__ = '3.3.0'\n" * 200,
        "site/nvidia/dali/libdali_operators.so": rng.randbytes(150 * KIB),  # a "big" unit spanning parts
        "site/nvidia/dali/backend_impl.cpython-312-x86_64-linux-gnu.so": rng.randbytes(5 * KIB),
        "site/pycocotools/_mask.abi3.so": rng.randbytes(2 * KIB),
        "data/coco_mini/val2017/000001.jpg": rng.randbytes(40 * KIB),
    }
    drop = ["site/nvidia/dali/backend_impl.cpython-311-x86_64-linux-gnu.so",
            "site/nvidia/dali/backend_impl.cpython-314t-x86_64-linux-gnu.so",
            "site/nvidia/dali/include/dali/core.h", "site/shapely/tests/test_a.py", "site/bin/yapf",
            "site/nvidia/libnvcomp/bin/nvlzcat", "site/libfoo.a"]
    for rel, data in keep.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    for rel in drop:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * 100)
    return keep


def test_bundle_manifest_parts_sums_and_staged_unpacking(tmp_path):
    stage, out, target = tmp_path / "stage", tmp_path / "bundle", tmp_path / "gpu"
    keep = fake_stage(stage)
    removed = gpu_bundle.slim(stage / "site")
    assert removed["files"] == 7
    left = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
    assert left == sorted(keep)

    m = gpu_bundle.pack(stage, out, part_mib=48 / 1024, preset="0", jobs=1, big_mib=100 / 1024)
    assert json.loads((out / "manifest.json").read_text()) == m
    parts = m["parts"]
    assert len(parts) >= 3 and len(m["commands"]) == len(parts)
    assert m["commands"][0] == "bash tools/gpu_proof.sh 1"
    for p in parts:
        data = (out / p["name"]).read_bytes()
        assert len(data) == p["size"] <= m["part_bytes_max"] == 48 * KIB
        assert hashlib.sha256(data).hexdigest() == p["sha256"]
    assert sum(p["size"] for p in parts) == m["total_size"] == sum(u["size"] for u in m["units"])
    spans = [(u["offset"], u["size"]) for u in m["units"]]
    assert spans[0][0] == 0 and all(o + s == o2 for (o, s), (o2, _) in zip(spans, spans[1:]))
    names = [u["name"] for u in m["units"]]
    assert names[0] == "boot" and names[-1] == "data" and "big:site/nvidia/dali/libdali_operators.so" in names

    # part 1 alone brings the mmcv sdist and setuptools (the background build starts there)
    assert gpu_bundle.unpack(out / "manifest.json", out / parts[0]["name"], target)[0] == "boot"
    assert (target / "src/mmcv-2.1.0.tar.gz").read_bytes() == keep["src/mmcv-2.1.0.tar.gz"]
    assert any("never arrived" in p for p in gpu_bundle.verify(out / "manifest.json", target))
    for p in parts[1:]:
        gpu_bundle.unpack(out / "manifest.json", out / p["name"], target)
    assert gpu_bundle.verify(out / "manifest.json", target) == []
    for rel, data in keep.items():
        assert (target / rel).read_bytes() == data, rel


def test_bundle_unpack_refuses_a_corrupt_or_foreign_part(tmp_path):
    stage, out = tmp_path / "stage", tmp_path / "bundle"
    fake_stage(stage)
    m = gpu_bundle.pack(stage, out, part_mib=48 / 1024, preset="0", jobs=1, big_mib=100 / 1024)
    bad = bytearray((out / "part02.bin").read_bytes())
    bad[100] ^= 0xFF
    (tmp_path / "part02.bin").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="sha256"):
        gpu_bundle.unpack(out / "manifest.json", tmp_path / "part02.bin", tmp_path / "gpu")
    (tmp_path / "part99.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a part"):
        gpu_bundle.unpack(out / "manifest.json", tmp_path / "part99.bin", tmp_path / "gpu")
    assert "parts" in gpu_bundle.summary(m)


def test_gpu_proof_dry_run(tmp_path):
    """The last stage end to end on this CPU machine: every step a..e runs and reports, the JSON and PNG exist."""
    pytest.importorskip("mmdet")
    env = dict(os.environ, OUT=str(tmp_path), PY=sys.executable, PYTHONPATH=str(ROOT))
    r = subprocess.run(["bash", "tools/gpu_proof.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_proof_dryrun.json").read_text())
    assert (tmp_path / "gpu_proof_dryrun.png").stat().st_size > 0
    assert report["dry_run"] and sorted(report["steps"]) == list("abcde")
    steps = {k: v for k, v in report["steps"].items()}
    assert all(v["status"] == "ok" for v in steps.values()), {k: v["status"] for k, v in steps.items()}
    a = steps["a"]["result"]
    assert all(a[k]["ok"] for k in ("kernels_vs_reference_real", "kernels_vs_reference_hypothesis",
                                    "gpu_graph_vs_cpu_graph")), a
    b = steps["b"]["result"]
    assert b["dali_cpu_m2f_ocp_w1"]["img_per_s"]["median"] > 0 and b["kernels_gpu_ms"]["ms_per_image"] > 0
    assert all(b[f"mmdet_{p}_w1"]["img_per_s"]["median"] > 0 for p in ("mmdet_copypaste", "ocp_ocp")), b
    c = steps["c"]["result"]
    assert c["configs"]["cpu_mmdet_copypaste"] == "MultiImageMixDataset" and c["cpu_ocp"]["iters_timed"] == 1, c
    assert steps["d"]["result"]["configs"]["dali"] == "OCPMixDataset"
    e = steps["e"]["result"]
    assert e["fault_corpus"]["images"] > e["fault_corpus"]["good_images"] > 0, e
    assert e["big_256_20_people"]["samples"] == 1, e
