"""Reading frames: every input format from a tiny file made here, selection, clear errors."""
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from dcf import FingerprintSpec
from dcf.data.frames import FrameData, FrameError, check_elements, read_frames, select

SYMBOLS = ["Li", "Li", "O", "O", "O", "P"]


def frame(rng, energy=True, cell=6.0, pbc=True):
    atoms = Atoms(SYMBOLS, positions=rng.uniform(0, cell, (6, 3)), cell=np.eye(3) * cell,
                  pbc=pbc)
    results = {"forces": rng.normal(size=(6, 3)).round(6)}
    if energy:
        results["energy"] = round(float(rng.normal()), 6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def write_outcar(path, frames):
    """A minimal VASP OUTCAR: the lines ase's parser reads (species, counts, per ionic step
    cell, positions and forces, energies)."""
    species = ["Li", "O", "P"]
    lines = [f" POTCAR:    PAW_PBE {el} 01Jan2000" for el in species * 2]
    lines.append("   ions per type =               2   3   1")
    for atoms in frames:
        e = atoms.get_potential_energy()
        lines += ["----------------------------------------- Iteration    1(   1)  ------",
                  "      direct lattice vectors                 reciprocal lattice vectors"]
        lines += ["  " + " ".join(f"{x:14.9f}" for x in row) + "   0.0 0.0 0.0"
                  for row in atoms.cell.array]
        lines += ["", " POSITION                                       TOTAL-FORCE (eV/Angst)",
                  " " + "-" * 83]
        lines += [" " + " ".join(f"{x:12.5f}" for x in p) + "   " +
                  " ".join(f"{x:14.6f}" for x in f)
                  for p, f in zip(atoms.positions, atoms.get_forces())]
        lines += [" " + "-" * 83, "    total drift:   0.0 0.0 0.0", "",
                  "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)",
                  "  ---------------------------------------------------",
                  f"  free  energy   TOTEN  =      {e + 0.01:.8f} eV", "",
                  f"  energy  without entropy=     {e:.8f}  energy(sigma->0) =     {e:.8f}",
                  ""]
    path.write_text("\n".join(lines) + "\n")


def write_vasprun(path, frames):
    """A minimal vasprun.xml with one <calculation> per frame."""
    def varray(name, rows):
        body = "\n".join("<v>" + " ".join(f"{x:.8f}" for x in r) + "</v>" for r in rows)
        return f'<varray name="{name}">\n{body}\n</varray>'

    def structure(atoms, name=""):
        name = f' name="{name}"' if name else ""
        return (f"<structure{name}><crystal>{varray('basis', atoms.cell.array)}</crystal>"
                f"{varray('positions', atoms.get_scaled_positions())}</structure>")

    first = frames[0]
    rcs = "".join(f"<rc><c>{s}</c><c>1</c></rc>" for s in first.get_chemical_symbols())
    text = ['<?xml version="1.0" encoding="ISO-8859-1"?>', "<modeling>",
            structure(first, "primitive_cell"),
            '<kpoints><varray name="kpointlist"><v>0 0 0</v></varray></kpoints>',
            f"<atominfo><atoms>{len(first)}</atoms><types>3</types>"
            f'<array name="atoms"><set>{rcs}</set></array></atominfo>',
            structure(first, "initialpos")]
    for atoms in frames:
        e = atoms.get_potential_energy()
        energy = (f'<energy><i name="e_fr_energy">{e + 0.01:.8f}</i>'
                  f'<i name="e_wo_entrp">{e:.8f}</i><i name="e_0_energy">{e:.8f}</i></energy>')
        text += ["<calculation>", f"<scstep>{energy}</scstep>", structure(atoms),
                 varray("forces", atoms.get_forces()), energy, "</calculation>"]
    text.append("</modeling>")
    path.write_text("\n".join(text))


def write_db(path, frames):
    from ase.db import connect

    with connect(path) as db:
        for atoms in frames:
            db.write(atoms)


WRITERS = {
    "frames.extxyz": lambda p, f: write(p, f, format="extxyz"),
    "frames.traj": lambda p, f: write(p, f),
    "frames.db": write_db,
    "OUTCAR": write_outcar,
    "vasprun.xml": write_vasprun,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_format_gives_positions_forces_energy(tmp_path, rng, name):
    frames = [frame(rng) for _ in range(3)]
    path = tmp_path / name
    WRITERS[name](path, frames)
    data = read_frames(path)
    assert len(data) == 3 and data.n_atoms == 18
    for k, atoms in enumerate(frames):
        a, b = data.first_atom[k], data.first_atom[k + 1]
        got = data.atoms(k)
        assert got.get_chemical_symbols() == SYMBOLS
        np.testing.assert_allclose(data.cell[k], atoms.cell.array, atol=1e-8)
        # OUTCAR prints positions with 5 decimals; the scaled ones of vasprun.xml with 8
        np.testing.assert_allclose(got.positions, atoms.positions, atol=1e-5)
        np.testing.assert_allclose(data.forces[a:b], atoms.get_forces(), atol=1e-6)
        assert data.energy[k] == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    assert data.sources[0]["path"] == str(path) and len(data.sources[0]["sha256"]) == 64
    np.testing.assert_array_equal(data.source_frame, [0, 1, 2])


def test_selection_slices_and_every(tmp_path, rng):
    frames = [frame(rng) for _ in range(10)]
    path = tmp_path / "f.extxyz"
    write(path, frames)
    np.testing.assert_array_equal(read_frames(path, "2:8", 2).source_frame, [2, 4, 6])
    np.testing.assert_array_equal(read_frames(path, "-1").source_frame, [9])
    np.testing.assert_array_equal(read_frames(path, "::3").source_frame, [0, 3, 6, 9])
    np.testing.assert_array_equal(read_frames(path, every=4).source_frame, [0, 4, 8])
    two = read_frames([path, path], "0:2")
    np.testing.assert_array_equal(two.source, [0, 0, 1, 1])
    np.testing.assert_array_equal(two.source_frame, [0, 1, 0, 1])
    np.testing.assert_array_equal(select(5, "1:", 2), [1, 3])
    with pytest.raises(FrameError, match="selects none"):
        read_frames(path, "20:")
    with pytest.raises(FrameError, match="frame 12 does not exist"):
        read_frames(path, "12")
    with pytest.raises(FrameError, match="bad frame selection"):
        read_frames(path, "a:b")
    with pytest.raises(FrameError, match="every"):
        read_frames(path, every=0)


@pytest.mark.parametrize("index, every", [(":", 1), ("3:", 2), ("1:7", 3), ("::4", 1),
                                          ("-3:", 1), (":-2", 2), ("5", 1), ("-2", 1),
                                          ("8:2:-2", 1)])
def test_streamed_selection_equals_selecting_from_all_frames(tmp_path, rng, index, every):
    path = tmp_path / "f.extxyz"
    write(path, [frame(rng) for _ in range(10)])
    np.testing.assert_array_equal(read_frames(path, index, every).source_frame,
                                  select(10, index, every))


def test_a_leading_slice_stops_reading_after_its_last_frame(tmp_path, rng):
    path = tmp_path / "f.extxyz"
    write(path, [frame(rng) for _ in range(4)])
    with open(path, "a") as fh:
        fh.write("3\nnot an extxyz frame\n")           # a damaged tail
    np.testing.assert_array_equal(read_frames(path, "0:4").source_frame, [0, 1, 2, 3])
    with pytest.raises(FrameError, match="cannot read"):
        read_frames(path, ":")


def test_energy_is_optional_forces_are_not(tmp_path, rng):
    path = tmp_path / "f.extxyz"
    write(path, [frame(rng, energy=False), frame(rng)])
    data = read_frames(path)
    assert np.isnan(data.energy[0]) and np.isfinite(data.energy[1])
    bare = frame(rng)
    bare.calc = None
    write(tmp_path / "noforces.extxyz", [frame(rng), bare])
    with pytest.raises(FrameError, match=r"noforces.extxyz frame 1: no forces"):
        read_frames(tmp_path / "noforces.extxyz")


@pytest.mark.parametrize("problem, message", [
    ("zero-vector", "periodic along cell vector 2 but that vector is zero"),
    ("flat-cell", "linearly dependent"),
    ("nan-forces", "not finite"),
])
def test_bad_frames_are_named(tmp_path, rng, problem, message):
    good, bad = frame(rng), frame(rng)
    if problem == "zero-vector":
        bad.cell[2] = 0.0
    elif problem == "flat-cell":
        bad.cell[2] = bad.cell[0] + bad.cell[1]
    else:
        bad.calc.results["forces"][3, 1] = np.nan
    path = tmp_path / "f.extxyz"
    write(path, [good, bad])
    with pytest.raises(FrameError, match=f"f.extxyz frame 1: .*{message}"):
        read_frames(path)


def test_unreadable_missing_and_empty_files(tmp_path):
    with pytest.raises(FrameError, match="no such file"):
        read_frames(tmp_path / "missing.extxyz")
    (tmp_path / "garbage.extxyz").write_text("this is not a structure\n")
    with pytest.raises(FrameError, match="cannot read .*garbage.extxyz"):
        read_frames(tmp_path / "garbage.extxyz")


def test_elements_checked_against_the_spec(tmp_path, rng):
    frames = [frame(rng), frame(rng)]
    frames[1][2].symbol = "Ge"
    data = FrameData.from_atoms(frames)
    check_elements(FrameData.from_atoms(frames[:1]), FingerprintSpec.preset("mailoa2019-S4"))
    with pytest.raises(FrameError, match="frame 1 contains Ge"):
        check_elements(data, FingerprintSpec.preset("mailoa2019-S4"))


def test_open_boundaries_need_no_cell(rng):
    atoms = frame(rng, pbc=False)
    atoms.cell[:] = 0.0
    data = FrameData.from_atoms([atoms])
    assert not data.pbc.any() and len(data) == 1


def test_real_dft_fixtures(tmp_path):
    """The TiAl (2-128 atoms, thin cells) and Si AIMD fixtures: forces and energies read,
    sources hashed."""
    from conftest import DATA

    tial = read_frames(DATA / "TiAl_tutorial_DB_tenth.extxyz")
    assert len(tial) == 33 and np.isfinite(tial.energy).all()
    assert set(np.diff(tial.first_atom)) >= {2, 128}
    si = read_frames(DATA / "mlearn_Si_test_aimd8.extxyz", "::2")
    assert len(si) == 4 and si.n_atoms == 4 * 64
    np.testing.assert_array_equal(si.source_frame, [0, 2, 4, 6])
    assert np.abs(si.forces).max() > 0.1


# -- dcf's own plain-extxyz reader (dcf.data.extxyz) ------------------------------------------

def _plain_frames(rng):
    """Frames that exercise the plain reader: odd numbers, mixed pbc, no cell, no energy,
    free_energy only, extra columns, other info keys."""

    out = []
    for k in range(6):
        atoms = frame(rng, energy=k != 2, pbc=[True, k % 2 == 0, True])
        atoms.positions[0] = [1e-300, -0.0, 12345.678901234567]
        atoms.positions[1] = rng.normal(size=3) * 10.0 ** rng.integers(-8, 8)
        atoms.info["step"] = k
        atoms.info["note"] = "two words"
        if k == 3:
            atoms.new_array("masses_x", rng.uniform(1, 2, len(atoms)))
        if k == 4:
            atoms.pbc = False
            atoms.cell[:] = 0.0
        out.append(atoms)
    return out


def _same_as_ase(path):
    from ase.io import read

    from dcf.data import extxyz

    data = path.read_bytes()
    starts, counts = extxyz.scan(data)
    ref = read(path, index=":")
    assert len(counts) == len(ref)
    parsed = [extxyz.parse_frame(data, int(starts[k]), int(starts[k + 1]))
              for k in range(len(counts))]
    for a, f in zip(ref, parsed):
        if f is None:
            continue
        assert np.array_equal(a.numbers, f["numbers"])
        for got, want in ((f["positions"], a.positions), (f["cell"], a.cell.array)):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        assert np.array_equal(a.pbc, f["pbc"])
        results = a.calc.results if a.calc else {}
        if "forces" in results:
            assert f["forces"].tobytes() == np.asarray(results["forces"]).tobytes()
        assert f["energy"] == results.get("energy", results.get("free_energy"))
    return parsed


def test_own_extxyz_reader_is_bit_identical_to_ase(tmp_path, rng):
    path = tmp_path / "plain.extxyz"
    write(path, _plain_frames(rng))
    assert all(f is not None for f in _same_as_ase(path))
    # numbers as people write them: exponents, signs, many digits
    text = ('2\nLattice="4 0 0 0 4.0 0 0 0 4e0" Properties=species:S:1:pos:R:3:forces:R:3 '
            'free_energy=-1.5E+01 pbc="T T F"\n'
            'li 1e-5 -0.0 3.0000000000000004 1 2 3\n'
            'O 2.5E2 .5 -7. 1.7976931348623157e308 -4.9e-324 0.1\n')
    (tmp_path / "hand.extxyz").write_text(text)
    parsed = _same_as_ase(tmp_path / "hand.extxyz")
    assert parsed[0] is not None and parsed[0]["energy"] == -15.0
    data = read_frames(tmp_path / "hand.extxyz")
    assert data.numbers.tolist() == [3, 8] and data.pbc.tolist() == [[True, True, False]]


@pytest.mark.parametrize("comment, columns", [
    ("Properties=species:S:1:pos:R:3:forces:R:3:Z:I:1", " 3"),      # a Z column
    ('Properties=species:S:1:pos:R:3:forces:R:3 flag', ""),          # a bare flag
    ('Properties=species:S:1:pos:R:3:forces:R:3 v=[1,2]', ""),       # brackets
    ("Properties=species:S:1:pos:R:3:forces:R:3 s='a b'", ""),       # single quotes
])
def test_own_extxyz_reader_falls_back_to_ase(tmp_path, comment, columns):
    """Comment lines the plain reader does not take: parse_frame says so (None), and
    read_frames then gives ase's frames."""
    from ase.io import read

    from dcf.data import extxyz

    text = f"1\n{comment}\nLi 0.5 0.25 0.125 1 2 3{columns}\n"
    path = tmp_path / "odd.extxyz"
    path.write_text(text)
    data = path.read_bytes()
    assert extxyz.parse_frame(data, 0, len(data)) is None
    ref = read(path)
    got = read_frames(path)
    assert got.positions.tobytes() == ref.positions.tobytes()
    assert got.forces.tobytes() == ref.get_forces().tobytes()


def test_extxyz_scan_finds_frames_from_the_counts_alone(tmp_path, rng):
    from dcf.data import extxyz

    frames = [frame(rng) for _ in range(3)]
    frames[1] = frames[1].repeat((2, 1, 1))
    path = tmp_path / "f.extxyz"
    write(path, frames)
    starts, counts = extxyz.scan(path.read_bytes())
    assert counts.tolist() == [6, 12, 6] and starts[-1] == path.stat().st_size
    assert extxyz.scan(b"2\ncomment\nLi 0 0 0\n") is None            # cut short
    assert extxyz.scan(b"x\ncomment\n") is None                     # not a count
