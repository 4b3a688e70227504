"""The README's main job in its --quick form, end to end, into a temporary folder."""
import subprocess
import sys
from pathlib import Path

import pytest
from ase.io import read

SCRIPT = Path(__file__).parents[1] / "scripts" / "main_job.py"


@pytest.mark.slow
def test_main_job_quick(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    for label in ("DCF pairwise", "DCF paper NN3", "DCF covariant NN3", "B-P"):
        for el in ("Li", "O", "P"):
            assert any(line.startswith(label) and f" {el} " in line
                       for line in summary.splitlines()), (label, el)
    assert "us/atom/step" in summary and "| bp |" in summary and "| dcf-pairwise |" in summary
    assert "check-md" in summary
    assert (tmp_path / "check-md-dcf-pairwise.json").exists()
    assert (tmp_path / "check-md-bp.json").exists()
    assert "DCF pairwise: langevin 100 fs" in summary and "B-P: langevin 100 fs" in summary
    assert len(list((tmp_path / "plots").glob("*.png"))) >= 12
    assert len(read(tmp_path / "md-ase.traj", ":")) == 11              # 200 steps, every 20
    ipi_rows = [r for r in (tmp_path / "ipi" / "nvt.out").read_text().splitlines()
                if r.strip() and not r.startswith("#")]
    assert int(float(ipi_rows[-1].split()[0])) == 200
