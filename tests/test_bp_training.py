"""B–P training (TensorFlow) on a small EMT Cu–Au data set: the sparse training-time forces,
the memory estimate, the recompute-per-batch mode, held-out accuracy, batches of atoms,
checkpoints and resume."""
import argparse

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from dcf.descriptors.fingerprints import Featurizer
from dcf.analysis.evaluation import evaluate_frames, evaluate_store
from dcf.descriptors.spec import FingerprintSpec

tf = pytest.importorskip("tensorflow")

from dcf.training import bp as bpt  # noqa: E402
from dcf.training.core import TrainingError, add_shared_arguments, set_threads  # noqa: E402

set_threads(1)                       # the test machine's cores are shared

SPEC = FingerprintSpec(
    ["Cu", "Au"],
    [{"kind": "G2", "neighbors": "*", "eta": [0.5, 2.0], "Rs": [2.6, 3.6]},
     {"kind": "G4", "neighbors": "*", "zeta": 1, "lambda": [1, -1], "eta": 0.05}],
    cutoff=4.5, name="cuau-test")


def emt_frames(n: int, seed: int, repeat=(2, 2, 1)):
    """Rattled, strained, randomly substituted fcc Cu–Au cells (16 atoms) with EMT energies
    and forces stored in SinglePointCalculators."""
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(repeat)
    out = []
    for _ in range(n):
        a = base.copy()
        symbols = np.where(rng.random(len(a)) < 0.4, "Au", "Cu")
        a.set_chemical_symbols(list(symbols))
        a.set_cell(a.cell * rng.uniform(0.98, 1.04), scale_atoms=True)
        a.positions += rng.normal(0.0, 0.1, a.positions.shape)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        out.append(a)
    return out


@pytest.fixture(scope="module")
def train_set():
    return emt_frames(24, seed=0)


@pytest.fixture(scope="module")
def test_set():
    return emt_frames(12, seed=1)


def constant_energy_rmse(train_set, test_set):
    """Held-out per-atom energy RMSE (eV/atom) of the constant predictor E/N = training mean."""
    mean = np.mean([a.get_potential_energy() / len(a) for a in train_set])
    e_atom = np.array([a.get_potential_energy() / len(a) for a in test_set])
    return np.sqrt(np.mean((e_atom - mean) ** 2))


def quiet(*_):
    """A log sink: training progress lines are not checked here."""


def config(**kw):
    base = dict(hidden=(10, 10), epochs=40, batch_size=32, learning_rate=3e-3, seed=0)
    return bpt.BPTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(train_set):
    return bpt.train_bp(train_set, SPEC, config(), quiet)


def train_losses(model):
    return [row[1] for row in model.training["fits"][0]["history"]]


def test_training_beats_constant_predictor(trained, train_set, test_set):
    model, history = trained, trained.training
    report = evaluate_frames(model, test_set)
    F_ref = np.concatenate([a.get_forces() for a in test_set])
    zero_force_mae = np.linalg.norm(F_ref, axis=1).mean()        # F = 0 predictor
    n = len(F_ref)
    mae = sum(m["mae"] * m["n"] for m in report["forces"].values()) / n
    assert mae < 0.5 * zero_force_mae
    assert report["energy"]["rmse_per_atom"] < 0.5 * constant_energy_rmse(train_set, test_set)
    assert history["dgdr_in_memory"] and history["best_epoch"] > 1
    assert set(report["parity"]) == {"Cu", "Au"}


def test_training_forces_equal_inference_forces(train_set):
    """The sparse TF contraction used in the loss gives the forces that the numpy/Cython
    inference computes for the same networks."""
    import keras
    cfg = config(hidden=(7,))
    data = bpt._Dataset(train_set[:3], Featurizer(SPEC), cfg, quiet)
    data.fit_statistics(np.arange(3))
    keras.utils.set_random_seed(3)
    nets = bpt._build_networks(keras, SPEC, cfg)
    for net in nets.values():                      # larger outputs than the initial ones
        W, b = net.layers[-1].get_weights()
        net.layers[-1].set_weights([W * 100, b])
    model = bpt.export_model(SPEC, nets, data, cfg, {})
    b = data.batch([0, 1, 2])
    E, F = bpt.predict(tf, nets, SPEC.elements, bpt._tensors(tf, b))
    F_ref = np.concatenate([model.forces(a) for a in train_set[:3]])
    assert np.abs(F_ref).max() > 1e-2
    np.testing.assert_allclose(F.numpy(), F_ref, rtol=0, atol=1e-4 * np.abs(F_ref).max())
    counts = np.array([[a.get_chemical_symbols().count(el) for el in SPEC.elements]
                       for a in train_set[:3]])
    E_ref = [model.energy(a) for a in train_set[:3]] - counts @ data.offsets
    np.testing.assert_allclose(E.numpy(), E_ref, rtol=1e-5)


def test_memory_estimate_is_exact(train_set):
    fz = Featurizer(SPEC)
    env = fz.environment(train_set[0])
    f = fz.features(env, derivatives=True)
    actual = sum(f.dG[el].size * 4 + 2 * 8 * len(f.pair_row[el]) for el in SPEC.elements)
    assert bpt.dgdr_bytes(fz, env) == actual > 0


def test_recompute_per_batch_matches_in_memory(train_set):
    logs = []
    kept = bpt.train_bp(train_set[:8], SPEC, config(epochs=3), quiet)
    redone = bpt.train_bp(train_set[:8], SPEC, config(epochs=3, dgdr_memory_gb=0.0),
                          logs.append)
    assert kept.training["dgdr_in_memory"] and not redone.training["dgdr_in_memory"]
    assert any("recomputed per batch" in line for line in logs)
    np.testing.assert_allclose(train_losses(redone), train_losses(kept), rtol=1e-4)
    np.testing.assert_allclose(redone.forces(train_set[9]), kept.forces(train_set[9]),
                               rtol=0, atol=1e-4)


def test_energy_only_training(test_set):
    """Energies alone carry one number per frame: more frames, a smaller network."""
    train_set = emt_frames(80, seed=2)
    model = bpt.train_bp(train_set, SPEC, config(energy_only=True, hidden=(6,), epochs=60,
                                                 learning_rate=1e-2), quiet)
    assert model.training["best_score"]["force_rmse"] is None
    report = evaluate_frames(model, test_set)
    assert report["energy"]["rmse_per_atom"] < 0.5 * constant_energy_rmse(train_set, test_set)


def test_frames_without_energy_are_named(train_set):
    frames = [a.copy() for a in train_set[:3]]
    for a, ref in zip(frames, train_set[:3]):
        a.calc = SinglePointCalculator(a, forces=ref.get_forces())
    with pytest.raises(ValueError, match="frame 0 has no reference energy"):
        bpt.train_bp(frames, SPEC, config(epochs=1), quiet)


class ListStore:
    """The part of FeatureStore that B–P training uses."""

    def __init__(self, frames, spec, n_test):
        self.frames_, self.spec = frames, spec
        self.n_test = n_test

    def frame_ids(self, split=None):
        ids = np.arange(len(self.frames_))
        return {None: ids, "train": ids[self.n_test:], "test": ids[:self.n_test]}[split]

    def frame(self, k):
        return self.frames_[k]

    def frames(self, split=None):
        return ((int(k), self.frames_[k]) for k in self.frame_ids(split))


def test_train_from_store_uses_the_train_split_and_cli_flags(train_set):
    parser = argparse.ArgumentParser()
    add_shared_arguments(parser)
    bpt.add_train_arguments(parser.add_argument_group("B-P"))
    args = parser.parse_args(["--force-weight", "2", "--bp-hidden", "6", "--dgdr-memory-gb",
                              "0.5", "--epochs", "2", "--seed", "1"])
    store = ListStore(train_set[:10], SPEC, n_test=4)
    model = bpt.train_from_store(store, args, quiet)
    assert model.training["frames"] == 6
    assert model.training["config"]["force_weight"] == 2.0
    assert model.networks["Cu"].weights[0].shape == (SPEC.n_features("Cu")[0], 6)
    assert set(evaluate_store(model, store)["forces"]) <= {"Cu", "Au"}
    with pytest.raises(TrainingError, match="--hidden"):
        bpt.config_from_args(parser.parse_args(["--bp-hidden", "a,b"]))


def test_batches_hold_at_least_batch_size_atoms():
    rng = np.random.default_rng(4)
    n_atoms = rng.integers(1, 40, size=50)
    order = rng.permutation(50)
    for size in (1, 16, 64, 10_000):
        batches = bpt.frame_batches(order, n_atoms, size)
        np.testing.assert_array_equal(np.concatenate(batches), order)     # each frame once
        for b in batches[:-1]:                      # full, and full only with its last frame
            assert n_atoms[b].sum() >= size > n_atoms[b[:-1]].sum()
        assert n_atoms[batches[-1][:-1]].sum() < size


def test_interrupted_training_resumes_from_the_checkpoint(train_set, tmp_path):
    ckpt = tmp_path / "bp.ckpt"
    frames = train_set[:8]
    cfg = config(epochs=4, checkpoint=str(ckpt), checkpoint_every=0)
    reference = bpt.train_bp(frames, SPEC, config(epochs=4), quiet)
    with pytest.raises(KeyboardInterrupt):
        bpt.train_bp(frames, SPEC, cfg, quiet, stop_after=lambda fit: fit.epoch == 2)
    assert ckpt.exists()
    log = []
    resumed = bpt.train_bp(frames, SPEC, cfg, log.append)
    assert any("resuming from checkpoint" in line and "bp after epoch 2" in line for line in log)
    epochs = [int(line.split()[2].rstrip(":")) for line in log if line.startswith("bp epoch")]
    assert epochs == [3, 4]                             # no epoch repeated
    assert train_losses(resumed) == pytest.approx(train_losses(reference), rel=1e-5)
    np.testing.assert_allclose(resumed.forces(train_set[9]), reference.forces(train_set[9]),
                               rtol=0, atol=1e-5)


def test_checkpoint_of_another_data_set_with_the_same_counts_is_refused(train_set, tmp_path):
    ckpt = tmp_path / "bp.ckpt"
    cfg = config(epochs=3, checkpoint=str(ckpt), checkpoint_every=0)
    with pytest.raises(KeyboardInterrupt):
        bpt.train_bp(train_set[:6], SPEC, cfg, quiet, stop_after=lambda fit: True)
    other = train_set[6:12]                   # same frame count, atoms and elements
    with pytest.raises(TrainingError, match="another feature store.*data_sha256.*--restart"):
        bpt.train_bp(other, SPEC, cfg, quiet)
    assert bpt.train_bp(other, SPEC, cfg, quiet, restart=True).training["epochs_run"] == 3


def test_no_validation_frames_warns_and_judges_on_the_training_loss(train_set):
    log = []
    model = bpt.train_bp(train_set[:4], SPEC, config(epochs=3, validation_fraction=0.0),
                         log.append)
    assert any(line.startswith("warning: no validation snapshots") for line in log)
    assert not any("nan" in line for line in log)
    fit = model.training["fits"][0]
    assert all(row[2] is None and row[3] is None for row in fit["history"])
    assert fit["best_val_loss"] == fit["history"][fit["best_epoch"] - 1][1]


def test_dgdr_memory_limit_defaults_to_half_the_available_memory():
    assert bpt.dgdr_memory_limit(1.5) == 1.5e9
    auto = bpt.dgdr_memory_limit(None)
    with open("/proc/meminfo") as fh:
        avail = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable"))
    assert 0.3 * avail < auto < 0.7 * avail
