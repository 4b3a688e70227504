"""Reference-data generation: structures, EMT molecular dynamics, the command, the shipped set."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read

from dcf import FingerprintSpec
from dcf.data.frames import read_frames
from dcf.data.generate import calculator, cu3au, li4p2o7, pyrophosphate, run_md
from dcf.descriptors.neighbors import build_neighbor_list

EMBEDDED = Path(__file__).parents[1] / "dcf" / "data" / "li4p2o7_xtb_3000K.extxyz"
HAS_TBLITE = importlib.util.find_spec("tblite") is not None


def dcf(*args):
    return subprocess.run([sys.executable, "-m", "dcf", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_pyrophosphate_geometry():
    pos = pyrophosphate()
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    assert d[0, 2] == pytest.approx(1.60) and d[1, 2] == pytest.approx(1.60)
    np.testing.assert_allclose(d[0, 3:6], 1.52)
    np.testing.assert_allclose(d[1, 6:9], 1.52)
    u, v = pos[0] - pos[2], pos[1] - pos[2]
    angle = np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
    assert angle == pytest.approx(130.0)
    # the four O around each P form a tetrahedron: O-P-O angles of 109.47 degrees
    o = pos[[2, 3, 4, 5]] - pos[0]
    cos = (o @ o.T) / np.outer(np.linalg.norm(o, axis=1), np.linalg.norm(o, axis=1))
    np.testing.assert_allclose(np.degrees(np.arccos(cos[np.triu_indices(4, 1)])), 109.4712,
                               atol=1e-3)


def test_li4p2o7_cell():
    atoms = li4p2o7(2, seed=1)
    assert atoms.get_chemical_formula() == "Li8O14P4" and len(atoms) == 26
    mass_g = atoms.get_masses().sum() * 1.66054e-24
    assert mass_g / (atoms.get_volume() * 1e-24) == pytest.approx(2.33, rel=0.01)
    nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 1.45)
    assert len(nl) == 0                                        # no atoms too close
    p = np.flatnonzero(atoms.numbers == 15)
    nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 1.65)
    for i in p:                                                # every P has its 4 O
        partners = nl.j[nl.i == i]
        assert sorted(atoms.numbers[partners]) == [8, 8, 8, 8]


def test_emt_md_frames_carry_the_calculators_energy_and_forces():
    frames = list(run_md(cu3au(seed=2), EMT(), temperature=800, steps=30, interval=10,
                         relax_steps=5, seed=4, info={"note": "x"}))
    assert [f.info["step"] for f in frames] == [10, 20, 30]
    assert frames[0].info["note"] == "x" and frames[-1].info["time_fs"] == 30.0
    for f in frames:
        ref = f.copy()
        ref.calc = EMT()
        assert f.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(f.get_forces(), ref.get_forces(), atol=1e-10)
        assert f.info["temperature_K"] > 0
    assert not np.allclose(frames[0].positions, frames[-1].positions)
    again = list(run_md(cu3au(seed=2), EMT(), temperature=800, steps=30, interval=10,
                        relax_steps=5, seed=4))
    np.testing.assert_array_equal(again[-1].positions, frames[-1].positions)   # seeded


def test_generate_command_writes_readable_extxyz(tmp_path):
    out = tmp_path / "cuau.extxyz"
    res = dcf("generate", "--calculator", "emt", "--structure", "cu3au", "--temperature", "600",
              "--steps", "40", "--interval", "10", "--relax-steps", "5", "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "4 frames" in res.stdout
    data = read_frames(out)                         # energies and forces for dcf featurize
    assert len(data) == 4 and np.isfinite(data.energy).all()
    first = read(out, 0)
    assert first.info["command"].startswith("dcf generate --calculator emt --structure cu3au")
    assert "--temperature 600" in first.info["command"]
    spec, _ = FingerprintSpec.preset("mailoa2019-S4").like(["Cu", "Au"])
    spec.save(tmp_path / "cuau.json")
    res = dcf("featurize", out, "--spec", tmp_path / "cuau.json", "--out", tmp_path / "f.h5",
              "--quiet")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args, message", [
    (["--calculator", "emt", "--structure", "li4p2o7"], "EMT has no parameters for Li, P"),
    (["--calculator", "emt", "--structure", "nowhere.xyz"], "neither a built-in"),
    (["--calculator", "emt", "--structure", "cu3au", "--interval", "50"], "--steps"),
])
def test_generate_bad_input(tmp_path, args, message):
    out = tmp_path / "x.extxyz"
    res = dcf("generate", *args, "--temperature", "300", "--steps", "10", "--out", out)
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_xtb_without_tblite_says_how_to_install(tmp_path):
    blocker = tmp_path / "blocker" / "tblite"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    res = subprocess.run([sys.executable, "-m", "dcf", "generate", "--calculator", "xtb",
                          "--structure", "li4p2o7", "--temperature", "300", "--steps", "10",
                          "--out", tmp_path / "x.extxyz"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode != 0 and "pip install tblite" in res.stderr
    assert not (tmp_path / "x.extxyz").exists()


@pytest.mark.skipif(not HAS_TBLITE,
                    reason="tblite is not installed (pip install 'dcf-forces[xtb]')")
def test_xtb_md_step_on_li4p2o7():
    frames = list(run_md(li4p2o7(2, seed=0), calculator("xtb"), temperature=3000, steps=2,
                         interval=1, relax_steps=0, seed=0))
    assert len(frames) == 2
    f = frames[-1].get_forces()
    assert f.shape == (26, 3) and np.isfinite(f).all()
    assert abs(f.sum(axis=0)).max() < 1e-3            # no net force (translation invariance)


def test_embedded_data_set():
    """The shipped default: 2 formula units of Li4P2O7 at 3000 K, under 5 MB, its command inside."""
    assert EMBEDDED.stat().st_size < 5e6
    data = read_frames(EMBEDDED)
    assert len(data) >= 200 and data.n_atoms == 26 * len(data)
    assert np.isfinite(data.energy).all()
    first = read(EMBEDDED, 0)
    assert first.info["command"].startswith("dcf generate --calculator xtb --structure li4p2o7")
    assert first.get_chemical_formula() == "Li8O14P4"
    temperatures = [read(EMBEDDED, k).info["temperature_K"] for k in (-3, -2, -1)]
    assert 1000 < np.mean(temperatures) < 6000
