"""The ZBL baseline against LAMMPS's own pair_style zbl, finite differences and the physics
of a pair potential (zero net force, Newton's third law, smooth zero at the outer radius)."""
import numpy as np
import pytest
from ase import Atoms

from dcf.descriptors.neighbors import shortest_pair_distances
from dcf.models.repulsion import ZBL, add_baseline

ELEMENTS = ("Li", "O", "P")


def compressed_cell(seed=1) -> Atoms:
    """A triclinic periodic Li-O-P cell (LAMMPS's lower-triangular form) with pairs from
    0.6 A up, so that every part of the switched potential is used."""
    rng = np.random.default_rng(seed)
    cell = np.array([[5.0, 0, 0], [0.7, 4.6, 0], [-0.5, 0.6, 4.8]])
    atoms = Atoms("Li6O8P3", scaled_positions=rng.uniform(0, 1, (17, 3)), cell=cell, pbc=True)
    rng.shuffle(atoms.numbers)
    return atoms


def test_equals_lammps_pair_zbl():
    dl = pytest.importorskip("dcf.dynamics.lammps")
    if dl.lammps_missing():
        pytest.skip(dl.lammps_missing())
    atoms = compressed_cell()
    inner, outer = 1.1, 2.3
    zbl = ZBL(ELEMENTS, np.full((3, 3), inner), np.full((3, 3), outer))
    lmp = dl.new_lammps()
    dl.create_system(lmp, atoms, list(ELEMENTS))
    lmp.commands_string(f"""
        pair_style zbl {inner} {outer}
        pair_coeff 1 1 3 3
        pair_coeff 2 2 8 8
        pair_coeff 3 3 15 15
        compute p all pressure NULL virial
        thermo_style custom step pe c_p[1]
        run 0""")
    n = len(atoms)
    f_lmp = np.array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)
    e_lmp = lmp.get_thermo("pe")
    # LAMMPS's virial pressure (bar) -> virial W (eV): P V = W / nktv2p
    p = np.array(lmp.numpy.extract_compute("p", 0, 1))
    w_lmp = p * atoms.get_volume() / lmp.extract_global("nktv2p")
    lmp.close()
    t = zbl.atoms_terms(atoms)
    assert e_lmp > 1.0          # the cell is compressed enough to test something
    np.testing.assert_allclose(t.energy, e_lmp, rtol=1e-10)
    np.testing.assert_allclose(t.forces, f_lmp, rtol=1e-9, atol=1e-9 * np.abs(f_lmp).max())
    W = t.virial
    np.testing.assert_allclose([W[0, 0], W[1, 1], W[2, 2], W[0, 1], W[0, 2], W[1, 2]], w_lmp,
                               rtol=1e-9, atol=1e-9 * np.abs(w_lmp).max())


def per_pair_zbl() -> ZBL:
    outer = np.array([[2.0, 1.8, 2.4], [1.8, 2.2, 1.3], [2.4, 1.3, 2.6]])
    return ZBL(ELEMENTS, 0.5 * outer, outer)


def test_forces_and_stress_are_finite_differences_of_the_energy():
    zbl, atoms = per_pair_zbl(), compressed_cell(2)
    t = zbl.atoms_terms(atoms)
    h = 1e-6
    for i in (0, 5, 11):
        for c in range(3):
            e = []
            for s in (h, -h):
                a = atoms.copy()
                a.positions[i, c] += s
                e.append(zbl.atoms_terms(a).energy)
            assert abs(-(e[0] - e[1]) / (2 * h) - t.forces[i, c]) < 1e-6 * max(1, abs(t.forces).max())
    stress = add_baseline({"stress": np.zeros(6), "energy": 0.0}, zbl, atoms)["stress"]
    for (a_, b_), k in (((0, 0), 0), ((1, 2), 3), ((0, 1), 5)):
        e = []
        for s in (h, -h):
            eps = np.eye(3)
            eps[a_, b_] += s / 2
            eps[b_, a_] += s / 2
            a = atoms.copy()
            a.set_cell(atoms.cell.array @ eps, scale_atoms=True)
            e.append(zbl.atoms_terms(a).energy)
        np.testing.assert_allclose((e[0] - e[1]) / (2 * h) / atoms.get_volume(), stress[k],
                                   rtol=1e-5, atol=1e-8)


def test_pair_potential_physics():
    zbl, atoms = per_pair_zbl(), compressed_cell(3)
    t = zbl.atoms_terms(atoms)
    assert np.abs(t.forces.sum(0)).max() < 1e-10 * np.abs(t.forces).max()
    r = np.linspace(0.3, 3.0, 2000)
    for a in range(3):
        for b in range(3):
            phi, dphi = zbl.pair_energy(r, np.full_like(r, a, dtype=int), np.full_like(r, b, dtype=int))
            out = zbl.outer[a, b]
            assert np.all(phi[r >= out] == 0) and np.all(dphi[r >= out] == 0)
            # phi, phi' and phi'' vanish at the outer radius: phi ~ (outer - r)^3
            ab = (np.array([a, a]), np.array([b, b]))
            p_near, _ = zbl.pair_energy(out - np.array([1e-3, 2e-3]), *ab)
            assert p_near[1] / p_near[0] == pytest.approx(8, rel=0.02)
            assert np.all(dphi[r < out - 1e-3] < 0)          # repulsive all the way in
            assert np.all(np.diff(phi[r < out]) < 0)
    # symmetric in the pair
    a, b = np.array([0, 2, 1]), np.array([2, 0, 2])
    p1, _ = zbl.pair_energy(np.array([1.0, 1.0, 1.0]), a, b)
    p2, _ = zbl.pair_energy(np.array([1.0, 1.0, 1.0]), b, a)
    np.testing.assert_array_equal(p1, p2)


def test_each_pair_is_switched_by_its_own_radius():
    """A pair inside its own (long) outer radius counts even when every distance of the
    structure is beyond the shortest outer radius of another pair (a regression: a
    global shortcut made the energy jump along an MD path)."""
    zbl = per_pair_zbl()                      # O-P outer 1.3 A, P-P 2.6 A
    atoms = Atoms("P2", positions=[[0, 0, 0], [2.0, 0, 0]], cell=np.eye(3) * 20, pbc=True)
    t = zbl.atoms_terms(atoms)
    phi, dphi = zbl.pair_energy(np.array([2.0]), np.array([2]), np.array([2]))
    assert t.energy == pytest.approx(phi[0], rel=1e-12) and phi[0] > 0
    assert t.forces[1, 0] == pytest.approx(-dphi[0], rel=1e-12)


def test_energy_is_conserved_along_an_nve_run_with_a_baseline():
    """Velocity Verlet of a B-P model with a baseline: the total energy fluctuates only by
    the integrator's O(dt^2) (halving dt quarters it). A force/energy mismatch or a jump of
    the energy does not shrink with dt (a regression: it grew)."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from conftest import random_atoms
    model = models_with_baseline()["bp"]
    model.baseline = per_pair_zbl()
    start = random_atoms(np.random.default_rng(3), "Li4O6P2", cell=np.diag([5.5, 5.8, 6.1]),
                         min_distance=1.4)
    start.set_velocities(np.random.default_rng(0).normal(0, 0.05, (len(start), 3)))
    spread = {}
    for dt in (0.4, 0.2):
        atoms = start.copy()
        atoms.calc = model.calculator()
        dyn = VelocityVerlet(atoms, dt * units.fs)
        energies, active = [], 0
        for _ in range(int(round(40 / dt))):
            dyn.run(1)
            energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
            active += model.baseline.atoms_terms(atoms).energy > 0
        assert active == len(energies)          # the baseline acts all along the run
        spread[dt] = np.ptp(energies)
    assert spread[0.2] < 0.35 * spread[0.4]
    assert spread[0.2] < 1e-3


def test_domain_terms_of_centers_equal_the_whole_system():
    """A rank's owned atoms with explicit ghost images: the owned atoms' terms equal those
    of the periodic system (the LAMMPS coupling's use)."""
    zbl, atoms = per_pair_zbl(), compressed_cell(4)
    whole = zbl.atoms_terms(atoms)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                       if (i, j, k) != (0, 0, 0)])
    X = np.concatenate([atoms.positions] + [atoms.positions + s @ atoms.cell.array
                                            for s in shifts])
    Z = np.tile(atoms.numbers, len(shifts) + 1)
    n = len(atoms)
    part = zbl.terms(X, Z, centers=np.arange(n))
    np.testing.assert_allclose(part.forces[:n], whole.forces, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(part.energies[:n], whole.energies, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(part.virial, whole.virial, rtol=1e-12, atol=1e-12)


def test_radii_from_the_data():
    atoms = compressed_cell(5)
    shortest = shortest_pair_distances([atoms], 4.0)
    zbl = ZBL.from_min_distances(ELEMENTS, shortest, inner_fraction=0.5)
    for a, ea in enumerate(ELEMENTS):
        for b, eb in enumerate(ELEMENTS):
            assert zbl.outer[a, b] == shortest[(ea, eb)] == shortest[(eb, ea)]
            assert zbl.inner[a, b] == 0.5 * zbl.outer[a, b]
    # zero wherever the data lie
    t = zbl.atoms_terms(atoms)
    assert t.energy == 0 and not t.forces.any()
    # brute force shortest distances over images
    d = atoms.get_all_distances(mic=True)
    s = np.array(atoms.get_chemical_symbols())
    for ea, eb in (("Li", "O"), ("P", "P")):
        m = d[np.ix_(s == ea, s == eb)]
        m = m[m > 0]
        assert shortest[(ea, eb)] == pytest.approx(m.min(), abs=1e-12)
    zbl2 = ZBL.from_dict(zbl.to_dict())
    np.testing.assert_array_equal(zbl2.outer, zbl.outer)


def test_bad_radii_are_refused():
    with pytest.raises(ValueError, match="inner <= outer"):
        ZBL(("Li",), [[2.0]], [[1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        ZBL(("Li", "O"), [[1, 1], [0.5, 1]], [[2, 2], [2, 2]])
    with pytest.raises(ValueError, match="atomic number 1 "):
        per_pair_zbl().species([1, 3])


# ---- a model with a baseline ------------------------------------------------------------

def models_with_baseline():
    from conftest import all_kinds_spec
    from test_pairwise import random_pairwise

    from dcf.bench.costs import bp_model, table_s4_model
    spec = all_kinds_spec()
    return {"dcf": table_s4_model("covariant", spec=spec), "bp": bp_model(spec=spec),
            "pairwise": random_pairwise(spec, np.random.default_rng(5), r_pair=3.5)}


@pytest.mark.parametrize("kind", ["dcf", "bp", "pairwise"])
def test_a_model_adds_its_baseline_and_keeps_it_in_its_file(kind, tmp_path):
    from dcf.models import load_model

    model = models_with_baseline()[kind]
    atoms = compressed_cell(6)
    plain = model.compute(atoms, ("forces",) if kind != "bp" else ("energy", "forces", "stress"))
    zbl = per_pair_zbl()
    model.baseline = zbl
    t = zbl.atoms_terms(atoms)
    assert np.abs(t.forces).max() > 1.0
    with_base = model.compute(atoms, ("forces",) if kind != "bp" else ("energy", "forces",
                                                                         "stress"))
    np.testing.assert_allclose(with_base["forces"], plain["forces"] + t.forces, rtol=1e-12,
                               atol=1e-10)
    if kind == "bp":
        assert with_base["energy"] == pytest.approx(plain["energy"] + t.energy, rel=1e-12)
        np.testing.assert_allclose(with_base["energies"].sum(), with_base["energy"], rtol=1e-12)
        expected = add_baseline({"stress": plain["stress"]}, zbl, atoms)["stress"]
        np.testing.assert_allclose(with_base["stress"], expected, rtol=1e-12)
    path = model.save(tmp_path / "m.dcf")
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.baseline.outer, zbl.outer)
    np.testing.assert_allclose(loaded.forces(atoms), model.forces(atoms), rtol=1e-13,
                               atol=1e-12)
    model.baseline = None
    loaded = load_model(model.save(tmp_path / "plain.dcf"))
    assert loaded.baseline is None


def test_a_damaged_baseline_entry_is_refused(tmp_path):
    from dcf.models import load_model
    from dcf.models.modelfile import ModelFileError, read_model_file, write_model_file

    model = models_with_baseline()["bp"]
    model.baseline = per_pair_zbl()
    meta, arrays = read_model_file(model.save(tmp_path / "m.dcf"))
    meta["baseline"]["inner"][0][0] = 5.0
    write_model_file(tmp_path / "bad.dcf", meta, arrays)
    with pytest.raises(ModelFileError, match="bad short-range baseline.*inner <= outer"):
        load_model(tmp_path / "bad.dcf")


def test_bp_forces_with_baseline_in_lammps_equal_ase():
    """LAMMPS's domain decomposition path adds the baseline on each rank's owned atoms."""
    dl = pytest.importorskip("dcf.dynamics.lammps")
    if dl.lammps_missing():
        pytest.skip(dl.lammps_missing())
    model = models_with_baseline()["bp"]
    model.baseline = per_pair_zbl()
    atoms = compressed_cell(7)
    ref = model.compute(atoms, ("energy", "forces"))
    lmp = dl.new_lammps()
    dl.create_system(lmp, atoms, list(ELEMENTS))
    coupling = dl.attach(lmp, model)
    lmp.command("run 0")
    coupling.check()
    n = len(atoms)
    F = np.array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)
    E = lmp.get_thermo("pe")
    lmp.close()
    np.testing.assert_allclose(F, ref["forces"], rtol=1e-9, atol=1e-9 * np.abs(F).max())
    assert E == pytest.approx(ref["energy"], rel=1e-10)


# ---- training on the residual -------------------------------------------------------------

def test_residual_store_subtracts_the_baseline():
    from test_dcf_model import cuau_spec, emt_frames

    from dcf.training.baseline import ResidualStore, choose_baseline
    from dcf.training.dcf import MemoryFeatures

    frames = emt_frames(4, seed=2, rattle=0.2)
    store = MemoryFeatures(frames, cuau_spec(), test_fraction=0.25)
    zbl = choose_baseline(frames, store.elements, "zbl", outer=2.6, inner_fraction=0.4)
    residual = ResidualStore(store, zbl)
    base = [zbl.atoms_terms(a) for a in frames]
    assert max(np.abs(t.forces).max() for t in base) > 0.1      # the pairs reach inside 2.6 A
    for el in store.elements:
        ref, res = store.snapshots(el, "train"), residual.snapshots(el, "train")
        expected = ref["F"] - np.array([base[f].forces[a] for f, a in zip(ref["frame"],
                                                                           ref["atom"])])
        np.testing.assert_allclose(res["F"], expected, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(res["G"], ref["G"])
        got = np.concatenate([b["F"] for b in residual.batches(el, 7, "train", shuffle=False)])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    k = int(residual.frame_ids("train")[0])
    atoms = residual.frame(k)
    np.testing.assert_allclose(atoms.get_forces(), frames[k].get_forces() - base[k].forces,
                               atol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(
        frames[k].get_potential_energy() - base[k].energy, abs=1e-10)
    # default radii: the data's shortest distances, so the residual is the reference itself
    default = ResidualStore(store, choose_baseline(frames, store.elements))
    np.testing.assert_array_equal(default.snapshots("Cu")["F"], store.snapshots("Cu")["F"])


def test_dcf_train_with_a_zbl_baseline(tmp_path):
    """`dcf train --baseline zbl` on a store: the model file carries the baseline, and
    `dcf evaluate` and `dcf md` use it."""
    import json
    import subprocess
    import sys

    from ase.io import write
    from test_dcf_model import cuau_spec, emt_frames
    from test_train_cli import ENV

    from dcf.models import load_model

    data, spec, store = tmp_path / "d.extxyz", tmp_path / "spec.json", tmp_path / "f.h5"
    write(data, emt_frames(8, seed=3))
    cuau_spec().save(spec)

    def dcf(*args):
        res = subprocess.run([sys.executable, "-m", "dcf", *map(str, args)], text=True,
                             capture_output=True, timeout=300, env=ENV)
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    dcf("featurize", data, "--spec", spec, "--out", store, "--quiet")
    res = dcf("train", store, "--model", "bp", "--out", tmp_path / "bp.dcf", "--epochs", "2",
              "--hidden", "8,8", "--threads", "1", "--baseline", "zbl")
    assert "baseline: ZBL repulsion" in res.stdout and "Cu-Au" in res.stdout
    model = load_model(tmp_path / "bp.dcf")
    shortest = shortest_pair_distances([a for a in emt_frames(8, seed=3)], 4.0)
    # the training frames' shortest Cu-Au distance (the file's 8 digits, not every frame)
    assert shortest[("Cu", "Au")] - 1e-6 <= model.baseline.outer[0, 1] < 2.5
    report = tmp_path / "r.json"
    dcf("evaluate", tmp_path / "bp.dcf", store, "--report", report)
    assert json.loads(report.read_text())["forces"]["Cu"]["n"] > 0
