"""The house rules that a script can check: imports point down (device code never reaches up into the graph, the
torch face or the mmdet adapter), no import cycle, no module imports another's private name."""
import subprocess
import sys

from conftest import ROOT


def test_import_graph_is_clean():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ocp_dali.stage" in proc.stdout and "0 cycles" in proc.stderr
