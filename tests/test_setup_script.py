"""scripts/setup rebuilds when a build input changes: the stamp covers every kernel source."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_inputs(tree: Path) -> str:
    out = subprocess.run(["bash", str(tree / "scripts" / "setup"), "--inputs"], cwd=tree,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_stamp_covers_headers_pxd_and_pyx(tmp_path):
    for rel in ["scripts/setup", "pyproject.toml", "setup.py",
                *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "dcf/_ext").iterdir())
                  if p.suffix in (".pyx", ".pxd", ".h", ".md"))]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tmp_path / rel)
    first = build_inputs(tmp_path)
    assert first == build_inputs(tmp_path) and len(first) == 64
    stamps = [first]
    for name in ("vec.h", "triplets.h", "terms.pxd", "scratch.pxd", "fingerprints.pyx"):
        with open(tmp_path / "dcf/_ext" / name, "a") as fh:
            fh.write("\n")
        stamps.append(build_inputs(tmp_path))
    assert len(set(stamps)) == len(stamps), "every kernel source must change the stamp"
    (tmp_path / "dcf/_ext/README.md").write_text("notes only\n")
    assert build_inputs(tmp_path) == stamps[-1]     # documentation does not trigger a rebuild
