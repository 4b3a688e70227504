"""MD-fidelity measures against analytic cases (dcf.analysis.md_fidelity), species
temperatures (dcf.dynamics.sampling) and `dcf check-md` end to end with real ASE dynamics."""
import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.build import bulk
from ase.geometry.rdf import get_rdf
from ase.io import read, write

from dcf.analysis.md_fidelity import (CheckSettings, block_average, force_jacobian,
                                      jacobian_asymmetry, loop_work, partial_rdfs,
                                      random_loop_works, rdf_l1)
from dcf.cli.check_md import check_md
from dcf.dynamics.sampling import run_md_sample, species_temperatures
from dcf.data.structures import random_packing
from test_md import dcf, gentle_model, li_p_o_cell, li_p_o_spec

K, KAPPA = 2.0, 0.7          # eV/A^2: harmonic well and curl strength


def harmonic_pairs(atoms):
    """F = -grad E, E = sum_{i<j} k |r_i - r_j|^2 / 2 + sum_i K |r_i|^2 / 2: linear forces."""
    r = atoms.get_positions()
    n = len(r)
    return -0.5 * ((n * r - r.sum(axis=0)) + K * r)


def curl_field(atoms):
    """F_i = -K r_i + kappa (-y_i, x_i, 0): dF/dr per atom [[-K, -kappa, 0], [kappa, -K, 0],
    [0, 0, -K]], curl 2 kappa along z."""
    r = atoms.get_positions()
    return -K * r + KAPPA * np.stack([-r[:, 1], r[:, 0], np.zeros(len(r))], axis=1)


def emt_forces(atoms):
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_forces()


def cu_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=1)
    return atoms


def test_conservative_forces_have_zero_asymmetry_and_loop_work(rng):
    atoms = Atoms("H5", positions=rng.normal(size=(5, 3)))
    D = force_jacobian(harmonic_pairs, atoms, delta=1e-2)
    assert jacobian_asymmetry(D) < 1e-13
    works = random_loop_works(harmonic_pairs, [atoms], 10, 0.3, rng)
    assert np.abs(works).max() < 1e-13
    cu = cu_cell()
    assert jacobian_asymmetry(force_jacobian(emt_forces, cu, 1e-4, indices=range(6))) < 1e-6
    # Gauss-Legendre along each 0.05 A edge: 1e-9 eV of an edge work of ~0.02 eV
    assert np.abs(random_loop_works(emt_forces, [cu], 4, 0.05, rng)).max() < 1e-9


def test_curl_field_has_the_asymmetry_and_loop_work_computed_by_hand(rng):
    atoms = Atoms("H3", positions=rng.normal(size=(3, 3)))
    D = force_jacobian(curl_field, atoms, delta=1e-2)
    # antisymmetric part: kappa in the xy entries of each atom's block, 2 per atom
    expected = np.sqrt(2 * KAPPA**2) / np.sqrt(3 * K**2 + 2 * KAPPA**2)
    assert jacobian_asymmetry(D) == pytest.approx(expected, rel=1e-12)
    h = 0.2
    u, v = np.zeros((3, 3)), np.zeros((3, 3))
    u[1, 0], v[1, 1] = 1.0, 1.0                 # atom 1 around a square in the xy plane
    assert loop_work(curl_field, atoms, u, v, h) == pytest.approx(2 * KAPPA * h**2, rel=1e-12)
    assert loop_work(curl_field, atoms, v, u, h) == pytest.approx(-2 * KAPPA * h**2, rel=1e-12)
    u[1], v[1] = [1.0, 0, 0], [0, 0, 1.0]       # xz plane: no curl
    assert abs(loop_work(curl_field, atoms, u, v, h)) < 1e-14
    # a random plane across two atoms: W = h^2 (v.D u - u.D v) with the exact, linear D
    u, v = np.zeros((3, 3)), np.zeros((3, 3))
    u[[0, 2]], v[[0, 2]] = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    un = u.ravel() / np.linalg.norm(u)
    vn = v.ravel() - (v.ravel() @ un) * un
    vn /= np.linalg.norm(vn)
    assert loop_work(curl_field, atoms, u, v, h) == pytest.approx(
        h**2 * (vn @ D @ un - un @ D @ vn), rel=1e-10)


def test_block_average_gives_the_error_of_the_mean_of_an_ar1_series(rng):
    from scipy.signal import lfilter

    phi, n, runs = 0.9, 50_000, 40
    # x_t = phi x_{t-1} + e_t: Var(mean) -> 1 / ((1 - phi)^2 n) for unit noise
    exact = 1.0 / ((1.0 - phi) * np.sqrt(n))
    results = [block_average(lfilter([1.0], [1.0, -phi], rng.normal(size=n)), 10)
               for _ in range(runs)]
    means, sems = np.array(results).T
    assert np.sqrt(np.mean(sems**2)) == pytest.approx(exact, rel=0.12)
    assert means.std() == pytest.approx(exact, rel=0.3)
    naive = block_average(lfilter([1.0], [1.0, -phi], rng.normal(size=n)), n)[1]
    assert naive < 0.35 * exact                 # sqrt((1 - phi) / (1 + phi)) = 0.23


def test_species_temperatures_are_unbiased_with_fixed_total_momentum(rng):
    """Maxwell-Boltzmann momenta with the centre-of-mass velocity removed (the distribution
    under Langevin with FixCom): each species' mean temperature is the target."""
    atoms = Atoms("LiO2P", positions=np.eye(4, 3) * 3, cell=np.eye(3) * 9, pbc=True)
    m = atoms.get_masses()[:, None]
    kT = units.kB * 1000.0
    draws = []
    for _ in range(3000):
        p = rng.normal(size=(4, 3)) * np.sqrt(m * kT)
        atoms.set_momenta(p - m * p.sum(axis=0) / m.sum())
        draws.append(species_temperatures(atoms))
    for el in ("Li", "O", "P"):
        T = np.array([d[el] for d in draws])
        assert T.mean() == pytest.approx(1000.0, abs=4 * T.std() / np.sqrt(len(T)))


def test_partial_rdfs_match_ase():
    atoms = random_packing({"Li": 10, "O": 14, "P": 6}, np.eye(3) * 11.5, min_distance=1.5,
                           seed=2)
    frames = [atoms, random_packing({"Li": 10, "O": 14, "P": 6}, np.eye(3) * 11.5, 1.5, 3)]
    r, g = partial_rdfs(frames, 5.5, 55)
    for (a, b), g_ab in g.items():
        g_ase, r_ase = get_rdf(frames, 5.5, 55, elements=(a, b))
        np.testing.assert_allclose(r, r_ase, atol=1e-12)
        np.testing.assert_allclose(g_ab, g_ase, rtol=1e-10, atol=1e-12)
    assert rdf_l1(g_ab, g_ab) == 0.0
    assert rdf_l1(np.array([0, 2.0, 0]), np.array([2.0, 0, 0])) == pytest.approx(2.0)


def md_reference(model, n_frames=40):
    """Frames of Langevin MD of `model` on the Li-P-O test cell, 1200 K."""
    sample = run_md_sample(model, li_p_o_cell(), 1200.0, 2 * 10 * n_frames, rdf_every=10)
    return sample.frames


def test_check_md_of_a_bp_model_on_its_own_dynamics(rng):
    model = gentle_model("bp", li_p_o_spec(), rng)
    frames = md_reference(model)
    settings = CheckSettings(temperature=1200.0, steps=600, rdf_r_max=4.0, jacobian_frames=1,
                             jacobian_atoms=6, n_loops=3, nve_steps=200, timestep=0.5)
    report, md = check_md(model, frames, settings)
    assert report["jacobian_asymmetry"]["mean"] < 1e-4
    assert report["loop_work"]["mean_abs_meV"] < 1e-3
    assert np.isfinite(report["nve_drift_meV_atom_ps"])
    assert set(report["temperatures"]) == {"Li", "O", "P"}
    assert all(np.isfinite(t["err_K"]) for t in report["temperatures"].values())
    assert report["blown_up_fs"] is None
    assert report["simulated_fs"] == pytest.approx(300.0)


def test_check_md_of_a_dcf_model_sees_its_non_conservation(rng):
    model = gentle_model("dcf", li_p_o_spec(), rng)
    frames = md_reference(model, n_frames=10)
    settings = CheckSettings(temperature=1200.0, steps=100, rdf_r_max=4.0, jacobian_frames=1,
                             jacobian_atoms=6, n_loops=4)
    report, md = check_md(model, frames, settings)
    assert report["jacobian_asymmetry"]["mean"] > 1e-3
    assert report["loop_work"]["mean_abs_meV"] > 1e-4
    assert report["nve_drift_meV_atom_ps"] is None


def test_check_md_command_writes_report_plot_and_verdict(tmp_path, rng):
    model = gentle_model("bp", li_p_o_spec(), rng)
    model.save(tmp_path / "bp.dcf")
    frames = md_reference(model, n_frames=10)
    for f in frames:
        f.info["target_temperature_K"] = 1200.0
    write(tmp_path / "data.extxyz", frames)
    out = dcf("check-md", tmp_path / "bp.dcf", tmp_path / "data.extxyz", "--steps", 200,
              "--rdf-rmax", 4.0, "--jacobian-frames", 1, "--jacobian-atoms", 4, "--loops", 2,
              "--nve-steps", 50, "--report", tmp_path / "r.json",
              "--extrapolating", tmp_path / "new.extxyz")
    assert out.returncode in (0, 1), out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert "out of the data's range:" in out.stdout
    n_new = len(report["extrapolation"]["frames"])
    assert (tmp_path / "new.extxyz").exists() == (n_new > 0)
    if n_new:
        assert len(read(tmp_path / "new.extxyz", ":")) == n_new
    assert report["settings"]["temperature"] == 1200.0
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert "verdict: " + report["verdict"] in out.stdout
    assert out.returncode == (0 if report["ok"] else 1)
    assert "md: step" in out.stderr


def test_check_md_command_rejects_data_without_temperature(tmp_path, rng):
    model = gentle_model("bp", li_p_o_spec(), rng)
    model.save(tmp_path / "bp.dcf")
    write(tmp_path / "data.extxyz", li_p_o_cell())
    out = dcf("check-md", tmp_path / "bp.dcf", tmp_path / "data.extxyz")
    assert out.returncode != 0
    assert "data.extxyz has no temperature" in out.stderr
    assert not list(tmp_path.glob("*.json"))
    out = dcf("check-md", tmp_path / "bp.dcf", tmp_path / "missing.extxyz")
    assert "missing.extxyz does not exist" in out.stderr


def test_a_model_that_heats_the_atoms_is_stopped_and_judged_unfit(rng):
    model = gentle_model("dcf", li_p_o_spec(), rng)
    frames = md_reference(model, n_frames=5)
    for net in model.networks.values():
        net.force_scale = 200.0                 # a hard, non-conservative force field
    settings = CheckSettings(temperature=1200.0, steps=2000, rdf_r_max=4.0, jacobian_frames=1,
                             jacobian_atoms=3, n_loops=1)
    report, md = check_md(model, frames, settings)
    assert report["blown_up_fs"] is not None and report["simulated_fs"] < 2000.0
    assert not report["ok"] and report["verdict"].startswith("NOT FIT for MD: blew up at")


def test_extrapolation_flags_frames_outside_the_data():
    """Frames of the data itself never extrapolate; a compressed copy (every G2 larger, and
    pairs closer than in the data) always does; the report names it and its time."""
    from dcf.analysis.md_fidelity import extrapolation, feature_ranges

    spec = li_p_o_spec()
    frames = [li_p_o_cell()]
    for k in range(3):
        a = li_p_o_cell()
        a.rattle(0.05, seed=k)
        frames.append(a)
    squeezed = frames[0].copy()
    squeezed.set_cell(frames[0].cell.array * 0.85, scale_atoms=True)
    squeezed.info["time_fs"] = 250.0
    rep = extrapolation(frames[1:] + [squeezed], frames, spec)
    assert rep["frames"] == [3] and rep["times_fs"] == [250.0] and rep["first_fs"] == 250.0
    assert rep["fraction_frames"] == pytest.approx(0.25)
    assert all(v > 0 for v in rep["atoms_fraction"].values())
    lo, hi = feature_ranges(frames, spec)["O"]
    assert np.all(lo <= hi)
    # within the range, widened by the margin: nothing
    assert extrapolation(frames, frames, spec)["frames"] == []
