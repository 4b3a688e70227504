"""The pairwise DCF head: exact covariance, Newton's third law, model file, a brute-force
reference, and a short training run that learns EMT forces."""
import numpy as np
import pytest
from ase import Atoms

from dcf.analysis.evaluation import rotate_atoms
from dcf.descriptors.fingerprints import featurize
from dcf.descriptors.spec import invariant_spec
from dcf.models import ModelFileError, load_model
from dcf.models.mlp import MLP
from dcf.models.pairwise import PairBasis, PairwiseModel
from test_dcf_model import cuau_spec, emt_frames


def random_pairwise(spec, rng, r_pair=4.0, B=5, K=3) -> PairwiseModel:
    nets, mean, std = {}, {}, {}
    for el in spec.elements:
        nG = spec.n_features(el)[0]
        sizes = [nG, 6, 2 * B * K]
        nets[el] = MLP([rng.normal(size=(a, b)) / np.sqrt(a) for a, b in
                        zip(sizes[:-1], sizes[1:])], [rng.normal(size=b) * 0.1 for b in sizes[1:]],
                       "tanh")
        mean[el], std[el] = rng.normal(size=nG), rng.uniform(0.5, 2, nG)
    w = rng.normal(size=(len(spec.elements), len(spec.elements), B))
    return PairwiseModel(spec, nets, mean, std, w + w.transpose(1, 0, 2),
                         PairBasis(r_pair, B, 0.8), K)


def brute_force_forces(model, atoms):
    """F_i = sum over every other atom j and image S within r_pair of c_ij r̂_ij, pair by pair
    in plain Python, from the model's networks (an independent sum over pairs)."""
    spec = invariant_spec(model.spec)
    f = featurize(atoms, spec)
    B, K = model.basis.n_basis, model.rank
    u = np.zeros((len(atoms), 2, B, K))
    for el in spec.elements:
        x = (f.G[el] - model.g_mean[el]) / model.g_std[el]
        u[f.index[el]] = model.networks[el](x).reshape(-1, 2, B, K)
    species = [spec.elements.index(s) for s in atoms.get_chemical_symbols()]
    cell, pbc = atoms.cell.array, atoms.pbc
    reps = [range(-3, 4) if p else range(1) for p in pbc]
    F = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for j in range(len(atoms)):
            for s in [(a, b, c) for a in reps[0] for b in reps[1] for c in reps[2]]:
                D = atoms.positions[j] + np.array(s) @ cell - atoms.positions[i]
                r = np.linalg.norm(D)
                if i == j and not any(s) or r >= model.basis.r_pair:
                    continue
                phi = model.basis(np.array([r]))[0]
                sym = (u[i, 0] * u[j, 1] + u[j, 0] * u[i, 1]).sum(axis=1)
                c = phi @ (sym + model.pair_weights[species[i], species[j]])
                F[i] += c * D / r
    return F


@pytest.fixture
def cluster(rng):
    pos = rng.uniform(0, 6, size=(14, 3))
    atoms = Atoms(["Cu", "Au"] * 7, positions=pos)
    keep = [0]
    for k in range(1, len(atoms)):
        if np.min(np.linalg.norm(pos[keep] - pos[k], axis=1)) > 1.6:
            keep.append(k)
    return atoms[keep]


def test_forces_match_a_brute_force_sum_over_pairs_and_images(rng):
    atoms = emt_frames(1, seed=3)[0]
    atoms.set_cell(atoms.cell.array + [[0, 0, 0], [0.7, 0, 0], [0.3, -0.4, 0]],
                   scale_atoms=True)
    model = random_pairwise(cuau_spec(), rng, r_pair=4.2)
    np.testing.assert_allclose(model.forces(atoms), brute_force_forces(model, atoms),
                               rtol=1e-10, atol=1e-10)


def test_pair_cutoff_beyond_the_fingerprint_cutoff_uses_its_own_list(rng):
    atoms = emt_frames(1, seed=4)[0]
    model = random_pairwise(cuau_spec(), rng, r_pair=6.0)         # spec Rc is 5 A
    np.testing.assert_allclose(model.forces(atoms), brute_force_forces(model, atoms),
                               rtol=1e-10, atol=1e-10)


def test_exactly_covariant_under_rotations(rng):
    from dcf.rotations import random_rotations
    atoms = emt_frames(1, seed=5)[0]
    model = random_pairwise(cuau_spec(), rng)
    F = model.forces(atoms)
    for T in random_rotations(3, rng):
        np.testing.assert_allclose(model.forces(rotate_atoms(atoms, T)), F @ T.T,
                                   rtol=0, atol=1e-10)


def test_newtons_third_law_zero_net_force_and_torque(cluster, rng):
    model = random_pairwise(cuau_spec(), rng)
    F = model.forces(cluster)
    assert np.abs(F).max() > 1e-3                   # the forces are not trivially zero
    np.testing.assert_allclose(F.sum(axis=0), 0, atol=1e-12)
    torque = np.cross(cluster.positions - cluster.positions.mean(axis=0), F).sum(axis=0)
    np.testing.assert_allclose(torque, 0, atol=1e-11)
    periodic = emt_frames(1, seed=6)[0]
    np.testing.assert_allclose(model.forces(periodic).sum(axis=0), 0, atol=1e-11)


def test_translation_and_permutation(cluster, rng):
    model = random_pairwise(cuau_spec(), rng)
    F = model.forces(cluster)
    moved = cluster.copy()
    moved.positions += [0.3, -1.1, 2.0]
    np.testing.assert_allclose(model.forces(moved), F, atol=1e-11)
    perm = rng.permutation(len(cluster))
    np.testing.assert_allclose(model.forces(cluster[perm]), F[perm], atol=1e-11)


def test_save_and_load_give_identical_forces(tmp_path, rng):
    atoms = emt_frames(1, seed=7)[0]
    model = random_pairwise(cuau_spec(), rng)
    path = model.save(tmp_path / "pair.dcf")
    loaded = load_model(path)
    assert isinstance(loaded, PairwiseModel)
    np.testing.assert_array_equal(loaded.forces(atoms), model.forces(atoms))
    calc_atoms = atoms.copy()
    calc_atoms.calc = loaded.calculator()
    np.testing.assert_array_equal(calc_atoms.get_forces(), model.forces(atoms))


def test_asymmetric_pair_weights_and_wrong_networks_are_refused(rng):
    model = random_pairwise(cuau_spec(), rng)
    w = model.pair_weights.copy()
    w[0, 1, 0] += 1.0
    with pytest.raises(ValueError, match="symmetric"):
        PairwiseModel(model.spec, model.networks, model.g_mean, model.g_std, w, model.basis,
                      model.rank)
    with pytest.raises(ValueError, match="expected"):
        PairwiseModel(model.spec, model.networks, model.g_mean, model.g_std,
                      model.pair_weights, model.basis, model.rank + 1)


def test_a_damaged_file_is_a_model_file_error(tmp_path, rng):
    from dcf.models.modelfile import read_model_file, write_model_file
    path = random_pairwise(cuau_spec(), rng).save(tmp_path / "pair.dcf")
    meta, arrays = read_model_file(path)
    del arrays["pair_weights"]
    write_model_file(tmp_path / "bad.dcf", meta, arrays)
    with pytest.raises(ModelFileError, match="inconsistent pairwise model file"):
        load_model(tmp_path / "bad.dcf")


@pytest.mark.slow
def test_training_learns_emt_forces_on_held_out_frames():
    pytest.importorskip("tensorflow")
    from dcf.training.core import set_threads
    from dcf.training.pairwise import PairwiseTrainingConfig, relative_errors, train_pairwise

    set_threads(1)
    frames = emt_frames(14, seed=11)
    train, test = frames[:12], frames[12:]
    config = PairwiseTrainingConfig(pair_cutoff=4.5, epochs=60, batch_size=64, seed=0)
    model = train_pairwise(train, cuau_spec(), config, log=lambda *a: None)
    ref = np.concatenate([a.get_forces() for a in test])
    pred = np.concatenate([model.forces(a) for a in test])
    species = np.concatenate([[model.elements.index(s) for s in a.get_chemical_symbols()]
                              for a in test])
    errors = relative_errors(pred, ref, species, model.elements)
    zero = relative_errors(np.zeros_like(ref), ref, species, model.elements)
    for el in model.elements:           # far better than predicting no force at all
        assert errors[el][1] < 0.5 * zero[el][1], (el, errors[el], zero[el])
    assert model.training["epochs_run"] >= 1 and model.training["fits"][0]["history"]


def test_cli_trains_resumes_and_evaluates(tmp_path, capsys):
    """dcf train --head pairwise through the CLI: interrupted, resumed from its checkpoint to
    the same weights as an uninterrupted run, refused for another store, then evaluated."""
    pytest.importorskip("tensorflow")
    from ase.io import write

    from dcf.cli import main
    from dcf.training.core import set_threads
    from dcf.training.pairwise import PairwiseTrainingConfig, train_pairwise
    from dcf.data.store import FeatureStore

    set_threads(1)
    data = tmp_path / "emt.extxyz"
    write(data, emt_frames(6, seed=21))
    spec = tmp_path / "spec.json"
    cuau_spec().save(spec)
    store = tmp_path / "f.h5"
    assert main(["featurize", str(data), "--spec", str(spec), "--out", str(store),
                 "--quiet"]) == 0
    args = ["train", str(store), "--model", "dcf", "--head", "pairwise", "--epochs", "4",
            "--pair-cutoff", "4.0", "--pair-basis", "4", "--pair-rank", "2", "--hidden", "8",
            "--batch-size", "64", "--checkpoint-every", "0"]
    assert main(args + ["--out", str(tmp_path / "full.dcf")]) == 0
    full = load_model(tmp_path / "full.dcf")
    assert full.kind == "dcf-pairwise" and full.training["epochs_run"] == 4
    assert (tmp_path / "full.lcurve.txt").read_text().count("\n") == 5      # header + 4

    # interrupted after epoch 2, then the same command resumes
    with FeatureStore(store) as s:
        frames = [s.frame(int(k)) for k in s.frame_ids("train")]
        store_spec = s.spec
    config = PairwiseTrainingConfig(epochs=4, pair_cutoff=4.0, n_basis=4, rank=2, hidden=(8,),
                                    batch_size=64, checkpoint=str(tmp_path / "cut.dcf.ckpt"),
                                    checkpoint_every=0)
    with pytest.raises(KeyboardInterrupt):
        train_pairwise(frames, store_spec, config, log=lambda *a: None,
                       sources=None, stop_after=lambda fit: fit.epoch == 2)
    assert main(args + ["--out", str(tmp_path / "cut.dcf")]) == 0
    assert "resuming from checkpoint" in capsys.readouterr().out
    resumed = load_model(tmp_path / "cut.dcf")
    atoms = frames[0]
    np.testing.assert_allclose(resumed.forces(atoms), full.forces(atoms), rtol=1e-6, atol=1e-9)
    assert not (tmp_path / "cut.dcf.ckpt").exists()

    # a checkpoint of another store is refused
    other = tmp_path / "other.h5"
    write(tmp_path / "other.extxyz", emt_frames(6, seed=22))
    assert main(["featurize", str(tmp_path / "other.extxyz"), "--spec", str(spec), "--out",
                 str(other), "--quiet"]) == 0
    with pytest.raises(KeyboardInterrupt):
        train_pairwise(frames, store_spec, config, log=lambda *a: None,
                       stop_after=lambda fit: fit.epoch == 1)
    with FeatureStore(other) as s:
        other_frames = [s.frame(int(k)) for k in s.frame_ids("train")]
    from dcf.training.core import TrainingError
    with pytest.raises(TrainingError, match="another feature store or data set"):
        train_pairwise(other_frames, store_spec, config, log=lambda *a: None)

    assert main(["evaluate", str(tmp_path / "cut.dcf"), str(store), "--rotations", "1",
                 "--covariance-frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "DCF pairwise" in out and "covariance error" in out
