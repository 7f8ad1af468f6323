"""Every ```python block of README.md runs as written: each section's blocks, in order, as one script in a fresh
interpreter with the repository root as the working directory (the snippets' ``../shared/data`` paths resolve from
there, and DALI's spawned workers import the script as they would a user's). The README's loader snippet without
its ``__main__`` guard must fail at once, naming the guard."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, data_path

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SECTION = re.compile(r"^## (.+)$", re.M)

# appended to the "Use" section's script: the plan/apply snippet reproduces augment exactly
CHECK_PLAN_APPLY = """
import numpy as _np
_ref = augment(ds, index, epoch=epoch, seed=seed, cfg=cfg)
for _name, _value in _ref.arrays().items():
    _got = out.arrays()[_name]
    assert (_value is None and _got is None) or _np.array_equal(_value, _got), _name
assert int(_np.sum(out.pasted)) > 0, "the example should show a paste"
print("plan/apply == augment")
"""


def readme_sections() -> dict[str, str]:
    """README section title -> its ```python blocks joined in order (sections without one are left out)."""
    text = (ROOT / "README.md").read_text()
    heads = [(m.start(), m.group(1).strip()) for m in SECTION.finditer(text)]
    out: dict[str, list[str]] = {}
    for m in BLOCK.finditer(text):
        title = [t for pos, t in heads if pos < m.start()][-1]
        out.setdefault(title, []).append(m.group(1))
    return {title: "\n".join(blocks) for title, blocks in out.items()}


def run_script(tmp_path: Path, name: str, source: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``source`` as the script ``tmp_path/name`` with the repository root as cwd; the result and seconds."""
    script = tmp_path / name
    script.write_text(source)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    return r, time.monotonic() - started


SECTIONS = readme_sections()


def test_readme_has_the_snippets_this_file_runs():
    assert set(SECTIONS) == {"Use", "The DALI pipeline and PyTorch loops", "mmdet"}, sorted(SECTIONS)


def test_use_snippets_run_and_plan_apply_equals_augment(tmp_path):
    data_path("coco_mini")
    r, _ = run_script(tmp_path, "use.py", SECTIONS["Use"] + CHECK_PLAN_APPLY, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "plan/apply == augment" in r.stdout


def test_loader_snippet_runs(tmp_path):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    data_path("coco_mini")
    r, _ = run_script(tmp_path, "loader.py", SECTIONS["The DALI pipeline and PyTorch loops"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_mmdet_snippet_runs(tmp_path):
    pytest.importorskip("mmdet", reason="mmdet is not installed")
    data_path("coco_mini")
    r, _ = run_script(tmp_path, "mmdet_snippet.py", SECTIONS["mmdet"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def unguarded(source: str) -> str:
    """The snippet with the body of its ``if __name__ == "__main__":`` at the top level, and a small synthetic
    dataset in place of the one it reads (the test needs no data)."""
    tree = ast.parse(source)
    guard = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))
    lines = source.splitlines()
    body = textwrap.dedent("\n".join(lines[guard.body[0].lineno - 1:guard.end_lineno]))
    body_tree = ast.parse(body)
    ds = next(n for n in body_tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "ds")
    body_lines = body.splitlines()
    body_lines[ds.lineno - 1:ds.end_lineno] = ["ds = SyntheticScenes(8, image_size=(128, 128))"]
    head = lines[:guard.lineno - 1]
    return "\n".join(["from ocp_dali import SyntheticScenes", *head, *body_lines]) + "\n"


def test_loader_snippet_without_the_guard_fails_at_once_naming_it(tmp_path):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    source = unguarded(SECTIONS["The DALI pipeline and PyTorch loops"])
    assert "__main__" not in source and "OCPLoader(" in source
    r, seconds = run_script(tmp_path, "unguarded.py", source, timeout=120)
    assert r.returncode != 0
    assert seconds < 30, f"took {seconds:.1f} s"
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ocp_dali.workers.WorkerStartError: OCPLoader at the top level of "), last
    assert "unguarded.py (line " in last and 'if __name__ == "__main__":' in last, last
