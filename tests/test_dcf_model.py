"""The DCF model at inference (numpy only): heads, covariance, model file, calculator."""
import json
import zipfile

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from dcf import FingerprintSpec
from dcf.models.dcf import (DCFModel, ElementNetworks, NetworkStack, gram_features,
                           head_input_size)
from dcf.analysis.evaluation import covariance_error, evaluate_store, rotate_atoms
from dcf.models.mlp import MLP
from dcf.rotations import random_rotation
from dcf.models import ModelFileError, load_model
from dcf.models.modelfile import read_model_file, write_model_file

CUAU_RULES = [
    {"kind": "G2", "neighbors": "*", "eta": [0.5, 2.0, 8.0], "Rs": [0.0, 2.6]},
    {"kind": "G4", "neighbors": "*", "zeta": [1, 4], "lambda": [1, -1], "eta": 0.05},
    {"kind": "A1", "neighbors": "*", "eta": [1.0, 4.0], "Rs": [0.0, 2.6]},
]


def cuau_spec() -> FingerprintSpec:
    """A small Cu-Au spec: 24 G and 8 A axes per center, Rc = 5 A."""
    return FingerprintSpec(["Cu", "Au"], CUAU_RULES, cutoff=5.0, name="cuau-test")


def emt_frames(n, seed=0, rattle=0.1):
    """n rattled 32-atom fcc Cu cells with 8 random Au atoms, EMT forces attached."""
    from ase.build import bulk
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[rng.choice(len(atoms), 8, replace=False)] = "Au"
        atoms.set_chemical_symbols(symbols)
        atoms.rattle(rattle, seed=int(rng.integers(2**31)))
        atoms.calc = EMT()
        F, E = atoms.get_forces(), atoms.get_potential_energy()
        atoms.calc = SinglePointCalculator(atoms, energy=E, forces=F)
        frames.append(atoms)
    return frames


def random_stack(rng, n_in, hidden, n_out, count, activation="tanh"):
    sizes = [n_in, *hidden, n_out]
    return NetworkStack([MLP([rng.normal(size=(a, b)) / np.sqrt(a) for a, b in
                              zip(sizes[:-1], sizes[1:])],
                             [rng.normal(size=b) * 0.1 for b in sizes[1:]], activation)
                         for _ in range(count)])


def random_model(spec, head, rng, remove_net_force=False) -> DCFModel:
    """A DCF model with random weights (inference tests need no training)."""
    nets = {}
    inputs = ("G", "F_int", "gram") if head == "covariant" else ()
    for el in spec.elements:
        nG, nA = spec.n_features(el)
        norm = {"G_mean": rng.normal(size=nG), "G_std": rng.uniform(0.5, 2, nG),
                "fint_scale": rng.uniform(0.5, 2, nA), "force_scale": 1.3}
        nn1 = random_stack(rng, nG, [7, 7], 1, nA)
        n_in = head_input_size(head, nG, nA, inputs)
        head_net = random_stack(rng, n_in, [6, 6], 1, 3) if head == "paper" else \
            random_stack(rng, n_in, [6, 6], nA, 1)
        nets[el] = ElementNetworks(el, head, nG, nA, norm, nn1, head_net, inputs)
    return DCFModel(spec, nets, head, "tanh", {"nn1": "separate", "head": "separate"},
                    {"nn1": [7, 7], "head": [6, 6]}, ("nn1", "nn2", "nn3"), remove_net_force)


@pytest.fixture(scope="module")
def frames():
    return emt_frames(3, seed=1)


def test_network_stack_matches_its_networks(rng):
    stack = random_stack(rng, 9, [5, 4], 2, 3, "silu")
    x = rng.normal(size=(11, 9))
    expected = np.concatenate([net(x) for net in stack.nets], axis=1)
    np.testing.assert_allclose(stack(x), expected, rtol=1e-13, atol=1e-14)
    assert stack(x[:0]).shape == (0, 6)


def test_gram_features_are_the_upper_triangle(rng):
    A = rng.normal(size=(4, 3, 3))
    g = gram_features(A)
    assert g.shape == (4, 6)
    np.testing.assert_allclose(g[:, 1], np.einsum("nc,nc->n", A[:, 0], A[:, 1]))


def test_covariant_head_is_covariant_to_round_off(rng, frames):
    model = random_model(cuau_spec(), "covariant", rng)
    cov = covariance_error(model, frames, n_rotations=3, seed=2)
    assert cov["covariance_error"] < 1e-10


def test_paper_head_is_not_exactly_covariant(rng, frames):
    """The same measurement detects the paper head's (untrained) lack of covariance."""
    model = random_model(cuau_spec(), "paper", rng)
    assert covariance_error(model, frames, n_rotations=2)["covariance_error"] > 1e-3


@pytest.mark.parametrize("case", ["zero", "parallel", "all_zero"])
def test_covariant_head_with_degenerate_axes(rng, case):
    """A_k = 0, or all A_k along one line: finite forces, still exactly covariant."""
    spec = cuau_spec()
    model = random_model(spec, "covariant", rng)
    nG, nA = spec.n_features("Cu")
    G = rng.normal(size=(5, nG))
    A = rng.normal(size=(5, nA, 3))
    A /= np.linalg.norm(A, axis=2, keepdims=True)
    if case == "zero":
        A[:, ::2] = 0.0
    elif case == "parallel":
        u = rng.normal(size=(5, 1, 3))
        A = np.sign(rng.normal(size=(5, nA, 1))) * u / np.linalg.norm(u, axis=2, keepdims=True)
    else:
        A[:] = 0.0
    F = model.predict("Cu", G, A)
    assert np.all(np.isfinite(F))
    if case == "all_zero":
        np.testing.assert_array_equal(F, 0.0)
    if case == "parallel":     # the force lies on the only available axis
        assert np.allclose(np.cross(F, A[:, 0]), 0.0, atol=1e-12)
    T = rotate_matrix(rng)
    np.testing.assert_allclose(model.predict("Cu", G, A @ T.T), F @ T.T, rtol=0, atol=1e-12)


def rotate_matrix(rng):
    return random_rotation(rng)


@pytest.mark.parametrize("head", ["paper", "covariant"])
def test_save_load_gives_identical_forces(tmp_path, rng, frames, head):
    model = random_model(cuau_spec(), head, rng, remove_net_force=True)
    path = model.save(tmp_path / "m.dcf")
    loaded = load_model(path)
    assert isinstance(loaded, DCFModel) and loaded.head == head
    np.testing.assert_array_equal(loaded.forces(frames[0]), model.forces(frames[0]))
    assert loaded.spec == model.spec and loaded.remove_net_force


def test_net_force_removal_and_calculator(rng, frames):
    model = random_model(cuau_spec(), "covariant", rng, remove_net_force=True)
    atoms = frames[0].copy()
    atoms.calc = model.calculator()
    F = atoms.get_forces()
    assert F.shape == (32, 3)
    np.testing.assert_allclose(F.sum(axis=0), 0.0, atol=1e-12)
    with pytest.raises(PropertyNotImplementedError, match="not the gradient of an energy"):
        atoms.get_potential_energy()
    raw = random_model(cuau_spec(), "covariant", np.random.default_rng(0))
    assert np.abs(raw.forces(atoms).sum(axis=0)).max() > 1e-6


def test_predict_refuses_features_of_another_shape(rng):
    model = random_model(cuau_spec(), "covariant", rng)
    with pytest.raises(ValueError, match="do not fit this model"):
        model.predict("Cu", np.zeros((2, 5)), np.zeros((2, 8, 3)))
    with pytest.raises(ValueError, match="not in this model"):
        model.predict("Ag", np.zeros((2, 24)), np.zeros((2, 8, 3)))


def test_evaluate_store_refuses_another_spec(rng):
    class Store:
        spec = FingerprintSpec.preset("mailoa2019-S4")
    model = random_model(cuau_spec(), "covariant", rng)
    with pytest.raises(ValueError, match="mailoa2019-S4.*cuau-test"):
        evaluate_store(model, Store())


def _rewrite(path, edit_meta=None, edit_arrays=None):
    meta, arrays = read_model_file(path)
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "dcf_version")}
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    write_model_file(path, meta, arrays)


def test_model_file_errors(tmp_path, rng):
    model = random_model(cuau_spec(), "covariant", rng)
    good = model.save(tmp_path / "good.dcf")
    data = good.read_bytes()

    truncated = tmp_path / "truncated.dcf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.dcf is not a dcf model file"):
        load_model(truncated)

    corrupted = tmp_path / "corrupted.dcf"
    blob = bytearray(data)
    start = data.index(b"Cu/nn1/0/0/W.npy")       # flip bytes inside a weight array's data
    blob[start + 400:start + 440] = bytes(40)
    corrupted.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="corrupted.dcf"):
        load_model(corrupted)

    newer = tmp_path / "newer.dcf"
    newer.write_bytes(data)
    meta, arrays = read_model_file(newer)
    with zipfile.ZipFile(newer, "w") as z:      # as a future dcf would write it
        z.writestr("__metadata__.npy", _npy_str(json.dumps({**meta, "version": 99})))
        for name, a in arrays.items():
            z.writestr(f"{name}.npy", _npy(a))
    with pytest.raises(ModelFileError, match="version 99.*upgrade dcf"):
        load_model(newer)

    spec_edit = tmp_path / "spec.dcf"
    spec_edit.write_bytes(data)
    _rewrite(spec_edit, lambda m: m["spec"]["rules"][0].update(eta=[0.5, 2.0, 9.0]))
    with pytest.raises(ModelFileError, match="does not match its checksum"):
        load_model(spec_edit)

    other_spec = tmp_path / "other.dcf"
    other_spec.write_bytes(data)
    s4 = FingerprintSpec.preset("mailoa2019-S4")
    _rewrite(other_spec, lambda m: m.update(spec=s4.to_dict(), spec_sha256=s4.fingerprint))
    with pytest.raises(ModelFileError, match="no networks for element Li"):
        load_model(other_spec)

    missing = tmp_path / "missing.dcf"
    missing.write_bytes(data)
    _rewrite(missing, edit_arrays=lambda a: a.pop("Au/head/0/1/W"))
    with pytest.raises(ModelFileError, match="Au/head/0"):
        load_model(missing)

    nan = tmp_path / "nan.dcf"
    nan.write_bytes(data)
    _rewrite(nan, edit_arrays=lambda a: a["Cu/nn1/0/0/W"].__setitem__((0, 0), np.nan))
    with pytest.raises(ModelFileError, match="NaN"):
        load_model(nan)


def _npy(a):
    import io
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _npy_str(text):
    return _npy(np.array(text))


def test_untrained_head_is_refused(rng, frames):
    model = random_model(cuau_spec(), "covariant", rng)
    for net in model.networks.values():
        net.head_net = None
    model.stages = ("nn1",)
    with pytest.raises(ValueError, match="only the stages.*nn1.*--stage nn2"):
        model.forces(frames[0])


def test_rotate_atoms_rotates_positions_and_cell(rng, frames):
    """Against ASE's own Atoms.rotate (axis and angle of T, cell rotated with the atoms)."""
    from scipy.spatial.transform import Rotation
    T = rotate_matrix(rng)
    axis_angle = Rotation.from_matrix(T).as_rotvec()
    angle = np.linalg.norm(axis_angle)
    assert angle > 0.1                                  # a rotation that moves the atoms
    expected = frames[0].copy()
    expected.rotate(np.degrees(angle), axis_angle / angle, center=(0, 0, 0), rotate_cell=True)
    rotated = rotate_atoms(frames[0], T)
    np.testing.assert_allclose(rotated.positions, expected.positions, rtol=0, atol=1e-10)
    np.testing.assert_allclose(rotated.cell.array, expected.cell.array, rtol=0, atol=1e-10)
    np.testing.assert_allclose(rotated.get_scaled_positions(wrap=False),
                               frames[0].get_scaled_positions(wrap=False), rtol=0, atol=1e-10)
    np.testing.assert_allclose(rotated.get_all_distances(mic=True),
                               frames[0].get_all_distances(mic=True), atol=1e-10)
    assert rotated.calc is None and frames[0].calc is not None
