"""DeePMD-kit systems and n2p2 input.data, written in the tests from ASE EMT frames (energy,
forces, stress), read back by dcf.data.frames and the commands that read frames."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import Bohr, Hartree

from dcf.data import formats
from dcf.data.frames import FrameError, read_frames

EMBEDDED = Path(__file__).parents[1] / "dcf" / "data" / "li4p2o7_xtb_3000K.extxyz"
dpdata = pytest.importorskip("dpdata", reason="dpdata is not installed (pip install dpdata)")


def emt_frames(n=4, symbols=("Cu", "Au"), seed=0, strain=0.03):
    """Rattled, strained fcc cells with EMT energy, forces and stress (ASE's sign)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.symbols[[1, 4, 6]] = symbols[1]
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-strain, strain, (3, 3))),
                       scale_atoms=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = EMT()
        frames.append({"atoms": atoms.copy(), "energy": atoms.get_potential_energy(),
                       "forces": atoms.get_forces(), "stress": atoms.get_stress(voigt=False)})
    return frames


def write_deepmd(folder: Path, frames, type_map, raw=False, sets=2, nopbc=False,
                 with_type_map=True):
    """A DeePMD system written with numpy, as DeePMD-kit documents it: virial = -V sigma."""
    folder.mkdir(parents=True)
    symbols = frames[0]["atoms"].get_chemical_symbols()
    np.savetxt(folder / "type.raw", [type_map.index(s) for s in symbols], fmt="%d")
    if with_type_map:
        (folder / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if nopbc:
        (folder / "nopbc").write_text("")
    table = {
        "coord": np.array([f["atoms"].positions.ravel() for f in frames]),
        "box": np.array([f["atoms"].cell.array.ravel() for f in frames]),
        "energy": np.array([f["energy"] for f in frames]),
        "force": np.array([f["forces"].ravel() for f in frames]),
        "virial": np.array([(-f["atoms"].get_volume() * f["stress"]).ravel() for f in frames]),
    }
    if raw:
        for name, a in table.items():
            np.savetxt(folder / f"{name}.raw", a, fmt="%.17g")
        return folder
    for s, part in enumerate(np.array_split(np.arange(len(frames)), sets)):
        (folder / f"set.{s:03d}").mkdir()
        for name, a in table.items():
            np.save(folder / f"set.{s:03d}" / f"{name}.npy", a[part])
    return folder


def assert_same(frame_data, frames, offset=0, cell=True):
    for k, ref in enumerate(frames):
        atoms, ref_atoms = frame_data.atoms(offset + k), ref["atoms"]
        assert atoms.get_chemical_symbols() == ref_atoms.get_chemical_symbols()
        np.testing.assert_allclose(atoms.positions, ref_atoms.positions, rtol=0, atol=1e-12)
        if cell:
            np.testing.assert_allclose(atoms.cell.array, ref_atoms.cell.array, atol=1e-12)
        a, b = frame_data.first_atom[offset + k], frame_data.first_atom[offset + k + 1]
        np.testing.assert_allclose(frame_data.forces[a:b], ref["forces"], rtol=0, atol=1e-12)
        assert frame_data.energy[offset + k] == pytest.approx(ref["energy"], abs=1e-12)


@pytest.mark.parametrize("raw", [False, True], ids=["deepmd/npy", "deepmd/raw"])
def test_deepmd_system_reads_exactly_with_its_type_map(raw, tmp_path):
    frames = emt_frames()
    system = write_deepmd(tmp_path / "sys", frames, ["Au", "Cu"], raw=raw)
    assert formats.guess_format(system) == ("deepmd/raw" if raw else "deepmd/npy")
    data = read_frames(system)
    assert len(data) == 4 and data.sources[0]["format"] == formats.guess_format(system)
    assert_same(data, frames)
    for k, ref in enumerate(frames):           # virial -> stress: back to ASE's own stress
        atoms = formats.read(system, k)[0]
        np.testing.assert_allclose(atoms.get_stress(voigt=False), ref["stress"], atol=1e-12)
        assert atoms.pbc.all()
    assert data.label(3) == f"{system} frame 3"


def test_deepmd_stress_sign_is_ases_under_compression(tmp_path):
    """A compressed crystal: EMT stress < 0 (ASE), DeePMD virial > 0, read back as < 0."""
    atoms = bulk("Cu", "fcc", a=3.3, cubic=True)
    atoms.calc = EMT()
    frame = {"atoms": atoms, "energy": atoms.get_potential_energy(),
             "forces": atoms.get_forces(), "stress": atoms.get_stress(voigt=False)}
    system = write_deepmd(tmp_path / "sys", [frame], ["Cu"], sets=1)
    assert np.trace(np.load(system / "set.000" / "virial.npy").reshape(3, 3)) > 0
    read_back = formats.read(system)[0]
    assert np.all(read_back.get_stress()[:3] < 0)
    # the pressure -tr(sigma)/3 equals the one from a finite volume change of the energy
    eps = 1e-5
    energies = []
    for s in (1 - eps, 1 + eps):
        a = atoms.copy()
        a.set_cell(atoms.cell * s, scale_atoms=True)
        a.calc = EMT()
        energies.append(a.get_potential_energy())
    pressure = -(energies[1] - energies[0]) / (atoms.get_volume() * ((1 + eps) ** 3
                                                                     - (1 - eps) ** 3))
    assert -np.trace(read_back.get_stress(voigt=False)) / 3 == pytest.approx(pressure, rel=1e-5)


def test_a_folder_of_deepmd_systems_is_one_input(tmp_path):
    """Two systems of other sizes and formats at different depths, and a non-periodic one."""
    a, b = emt_frames(3, seed=1), emt_frames(2, ("Cu", "Ni"), seed=2)
    write_deepmd(tmp_path / "data" / "a", a, ["Cu", "Au"])
    write_deepmd(tmp_path / "data" / "deeper" / "b", b, ["Ni", "Cu"], raw=True, nopbc=True)
    data = read_frames(tmp_path / "data")
    assert [s["path"] for s in data.sources] == [str(tmp_path / "data" / "a"),
                                                 str(tmp_path / "data" / "deeper" / "b")]
    assert [s["format"] for s in data.sources] == ["deepmd/npy", "deepmd/raw"]
    assert_same(data, a)
    assert_same(data, b, offset=3, cell=False)
    assert not data.pbc[3:].any() and data.pbc[:3].all()
    picked = read_frames(tmp_path / "data", index="-1")      # per system, as for files
    assert list(picked.source_frame) == [2, 1]
    assert len(formats.read(tmp_path / "data", "1:4")) == 3


def test_deepmd_type_map_option_and_errors(tmp_path):
    frames = emt_frames(2)
    system = write_deepmd(tmp_path / "sys", frames, ["Au", "Cu"], with_type_map=False)
    with pytest.raises(FrameError, match="give --type-map"):
        read_frames(system)
    assert_same(read_frames(system, type_map=["Au", "Cu"]), frames)
    with pytest.raises(FrameError, match="folder without DeePMD systems"):
        read_frames(tmp_path / "sys" / "set.000")
    with pytest.raises(FrameError, match="reads a folder"):
        read_frames(system / "type.raw", fmt="deepmd/npy")
    with pytest.raises(FrameError, match="is not a deepmd/raw system"):
        read_frames(system, fmt="deepmd/raw")


def write_n2p2(path: Path, frames, length=1.0, energy=1.0, periodic=None):
    """input.data as n2p2 documents it, in units of `length` Angstrom and `energy` eV."""
    lines = []
    for k, f in enumerate(frames):
        atoms = f["atoms"]
        lines += ["begin", f"comment frame {k}"]
        if periodic is None or periodic[k]:
            lines += ["lattice {:.17g} {:.17g} {:.17g}".format(*v / length)
                      for v in atoms.cell.array]
        for s, r, F in zip(atoms.get_chemical_symbols(), atoms.positions, f["forces"]):
            lines.append("atom {:.17g} {:.17g} {:.17g} {} 0.0 0.0 {:.17g} {:.17g} {:.17g}".format(
                *r / length, s, *F * length / energy))
        lines += [f"energy {f['energy'] / energy:.17g}", "charge 0.0", "end"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_n2p2_reads_exactly_in_both_unit_systems(tmp_path):
    frames = emt_frames(3) + emt_frames(2, ("Cu", "Ni"), seed=5)     # two compositions
    periodic = [True, True, False, True, True]
    ev = write_n2p2(tmp_path / "input.data", frames, periodic=periodic)
    au = write_n2p2(tmp_path / "au.data", frames,
                    Bohr, Hartree, periodic)
    assert formats.guess_format(ev) == formats.guess_format(au) == "n2p2"
    for data in (read_frames(ev), read_frames(au, units="hartree-bohr")):
        assert len(data) == 5
        assert list(data.pbc.all(axis=1)) == periodic
        for k, ref in enumerate(frames):
            atoms = data.atoms(k)
            a, b = data.first_atom[k], data.first_atom[k + 1]
            assert atoms.get_chemical_symbols() == ref["atoms"].get_chemical_symbols()
            np.testing.assert_allclose(atoms.positions, ref["atoms"].positions, atol=1e-12)
            if periodic[k]:
                np.testing.assert_allclose(atoms.cell.array, ref["atoms"].cell.array,
                                           atol=1e-12)
            np.testing.assert_allclose(data.forces[a:b], ref["forces"], atol=1e-12)
            assert data.energy[k] == pytest.approx(ref["energy"], abs=1e-11)
    wrong = read_frames(au)                               # atomic units taken as eV/A
    assert wrong.energy[0] == pytest.approx(frames[0]["energy"] / Hartree)


def test_n2p2_agrees_with_dpdata_on_an_atomic_unit_file(tmp_path):
    """dpdata's own n2p2 reader (atomic units, one composition, periodic) as a reference. Its
    Bohr and Hartree are CODATA 2018's, ASE's (used here) CODATA 2014's: 1e-9 apart."""
    frames = emt_frames(3, seed=7)
    path = write_n2p2(tmp_path / "input.data", frames, Bohr, Hartree)
    ref = dpdata.LabeledSystem(str(path), fmt="n2p2")
    ours = read_frames(path, units="hartree-bohr")
    names = np.array(ref["atom_names"])[ref["atom_types"]]
    assert ours.atoms(0).get_chemical_symbols() == list(names)
    np.testing.assert_allclose(ours.positions.reshape(3, -1, 3), ref["coords"], rtol=1e-8)
    np.testing.assert_allclose(ours.forces.reshape(3, -1, 3), ref["forces"], rtol=1e-8,
                               atol=1e-12)
    np.testing.assert_allclose(ours.energy, ref["energies"], rtol=1e-8)
    np.testing.assert_allclose(ours.cell, ref["cells"], rtol=1e-8)


def test_n2p2_written_by_dpdata_round_trips(tmp_path):
    frames = emt_frames(2, seed=3)
    system = write_deepmd(tmp_path / "sys", frames, ["Cu", "Au"], sets=1)
    dpdata.LabeledSystem(str(system), fmt="deepmd/npy").to("n2p2", str(tmp_path / "input.data"))
    data = read_frames(tmp_path / "input.data", units="hartree-bohr")
    ref = read_frames(system)
    # dpdata writes 1e-6 Bohr, 1e-6 Hartree and 7 digits of the forces
    np.testing.assert_allclose(data.energy, ref.energy, rtol=0, atol=3e-5)
    for k in range(2):                      # and the atoms sorted by type
        a, b = data.first_atom[k], data.first_atom[k + 1]
        order = np.lexsort((ref.positions[a:b, 0], ref.numbers[a:b]))
        mine = np.lexsort((data.positions[a:b, 0], data.numbers[a:b]))
        np.testing.assert_allclose(data.positions[a:b][mine], ref.positions[a:b][order],
                                   atol=1e-6)
        np.testing.assert_allclose(data.forces[a:b][mine], ref.forces[a:b][order], rtol=1e-5,
                                   atol=1e-6)


def test_other_dpdata_formats_pass_through(tmp_path):
    """--format dpdata:NAME: dpdata's own n2p2 reader and its deepmd/hdf5 give our frames."""
    frames = emt_frames(3, seed=8)
    path = write_n2p2(tmp_path / "input.data", frames, Bohr, Hartree)
    ours = read_frames(path, units="hartree-bohr")
    via = read_frames(path, fmt="dpdata:n2p2")
    assert via.sources[0]["format"] == "dpdata:n2p2"
    np.testing.assert_allclose(via.positions, ours.positions, rtol=1e-8)
    np.testing.assert_allclose(via.forces, ours.forces, rtol=1e-8, atol=1e-12)
    system = write_deepmd(tmp_path / "sys", frames, ["Au", "Cu"])
    dpdata.LabeledSystem(str(system), fmt="deepmd/npy").to("deepmd/hdf5", str(tmp_path / "s.h5"))
    assert_same(read_frames(tmp_path / "s.h5", fmt="dpdata:deepmd/hdf5"), frames)
    with pytest.raises(FrameError, match="dpdata has no format 'nonsense'"):
        read_frames(path, fmt="dpdata:nonsense")


@pytest.mark.parametrize("text, message", [
    ("begin\natom 0 0 0 Cu 0 0 0 0\nend\n", "Expected 9 columns"),
    ("begin\natom 0 0 0 Xx 0 0 0 0 0\nend\n", "Unknown element 'Xx'"),
    ("begin\nlattice 1 0 0\natom 0 0 0 Cu 0 0 0 0 0\nend\n", "3 lattice vectors"),
    ("atom 0 0 0 Cu 0 0 0 0 0\n", "holds no frames"),
])
def test_n2p2_bad_files_fail_naming_the_file(text, message, tmp_path):
    path = tmp_path / "input.data"
    path.write_text(text)
    with pytest.raises(FrameError, match=message) as err:
        read_frames(path, fmt="n2p2")
    assert str(path) in str(err.value)
    with pytest.raises(FrameError, match="unknown n2p2 units"):
        read_frames(write_n2p2(tmp_path / "ok.data", emt_frames(1)), units="rydberg")


@pytest.mark.slow
def test_commands_read_deepmd_and_n2p2(tmp_path):
    """featurize, check-forces and reactions take a DeePMD folder and an input.data."""
    frames = emt_frames(2)
    system = write_deepmd(tmp_path / "sys", frames, ["Au", "Cu"])
    n2p2 = write_n2p2(tmp_path / "input.data", frames)
    spec = tmp_path / "spec.json"

    def dcf(*args):
        return subprocess.run([sys.executable, "-m", "dcf", *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    res = dcf("spec", "--elements", "Cu,Au", "--like", "mailoa2019-S1", "--out", spec)
    assert res.returncode == 0, res.stderr
    for source, extra in ((system, ()), (n2p2, ()), (tmp_path, ("--format", "deepmd/npy"))):
        out = tmp_path / f"f{len(list(tmp_path.glob('f*.h5')))}.h5"
        res = dcf("featurize", source, *extra, "--spec", spec, "--out", out, "--quiet",
                  "--test-fraction", "0.5")
        assert res.returncode == 0, res.stderr
        assert out.is_file()
    res = dcf("reactions", system, "--out", tmp_path / "rx.json")
    assert res.returncode == 0, res.stderr
    res = dcf("featurize", n2p2, "--format", "deepmd/raw", "--spec", spec, "--out",
              tmp_path / "bad.h5")
    assert res.returncode != 0 and "reads a folder" in res.stderr
    assert not (tmp_path / "bad.h5").exists()


@pytest.mark.slow
def test_deepmd_folder_goes_through_featurize_train_evaluate_md(tmp_path):
    """The user guide's DeePMD walk-through, shortened: no conversion script anywhere."""
    import json
    import os

    from ase.io import read

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
           "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

    def dcf(*args):
        res = subprocess.run([sys.executable, "-m", "dcf", *map(str, args)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=400, env=env)
        assert res.returncode == 0, f"dcf {args}:\n{res.stdout}\n{res.stderr}"
        return res

    frames = [{"atoms": a, "energy": a.get_potential_energy(), "forces": a.get_forces(),
               "stress": np.zeros((3, 3))}
              for a in read(EMBEDDED, "::25")]
    write_deepmd(tmp_path / "data" / "run0", frames[:5], ["Li", "P", "O"], sets=2)
    write_deepmd(tmp_path / "data" / "run1", frames[5:], ["O", "Li", "P"], raw=True)
    dcf("featurize", "data", "--spec", "mailoa2019-S4", "--out", "f.h5", "--quiet")
    dcf("train", "f.h5", "--model", "dcf", "--head", "covariant", "--out", "dcf.dcf",
        "--epochs", "1", "--hidden", "8,8", "--threads", "1")
    dcf("evaluate", "dcf.dcf", "data", "--report", "r.json", "--plots", "plots",
        "--rotations", "1", "--covariance-frames", "1")
    report = json.loads((tmp_path / "r.json").read_text())
    assert {el: report["forces"][el]["n"] for el in ("Li", "P", "O")} == {
        "Li": 8 * 10, "P": 4 * 10, "O": 14 * 10}
    assert len(list((tmp_path / "plots").glob("error_by_F_*.png"))) == 3
    dcf("md", "dcf.dcf", "data/run1", "--thermostat", "langevin", "--temperature", "1000",
        "--damping", "20", "--steps", "10", "--traj", "md.traj", "--interval", "5")
    traj = read(tmp_path / "md.traj", ":")
    assert len(traj) == 3
    assert traj[0].get_chemical_symbols() == frames[-1]["atoms"].get_chemical_symbols()
