"""DCF training in TensorFlow: transfer into NN3, accuracy on held-out frames, resume, budgets."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from dcf.models.dcf import STAGES                                          # noqa: E402
from dcf.training.dcf import (DCFTrainingConfig, MemoryFeatures, TrainingError,  # noqa: E402
                              build_head, build_nn1, build_nn3, choose_validation_frames,
                              export_model, scan_training_data, set_threads, train)
from dcf.analysis.evaluation import covariance_error, evaluate_store                             # noqa: E402
from test_dcf_model import cuau_spec, emt_frames                          # noqa: E402

set_threads(1)                          # the test machine's cores are shared


def tiny(**kw) -> DCFTrainingConfig:
    opts = dict(hidden=(8, 8), head_hidden=(8, 8), epochs=3, batch_size=64, threads=1,
                rotations=1, checkpoint_every=0)
    opts.update(kw)
    return DCFTrainingConfig(**opts)


@pytest.fixture(scope="module")
def data():
    return MemoryFeatures(emt_frames(24, seed=3), cuau_spec(), test_fraction=0.25, seed=0)


@pytest.mark.parametrize("head", ["paper", "covariant"])
def test_nn3_after_transfer_reproduces_nn2_of_nn1(rng, head):
    import keras
    keras.utils.set_random_seed(5)
    cfg = DCFTrainingConfig(head=head, hidden=(6, 5), head_hidden=(7, 4))
    nG, nA = 10, 4
    nn1, nn2 = build_nn1(cfg, nG, nA), build_head(cfg, nG, nA)
    nn3, part1, part2 = build_nn3(cfg, nG, nA, nn1.get_weights(), nn2.get_weights())
    G = rng.normal(size=(9, nG)).astype("float32")
    A = rng.normal(size=(9, nA, 3)).astype("float32")
    chained = nn2([G, np.asarray(nn1(G)), A])
    np.testing.assert_array_equal(np.asarray(nn3([G, A])), np.asarray(chained))
    transferred = part1.get_weights() + part2.get_weights()
    for a, b in zip(transferred, nn1.get_weights() + nn2.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the exported numpy networks compute the same function
    spec = _spec_with(nG, nA)
    norm = {"G_mean": np.zeros(nG), "G_std": np.ones(nG), "fint_scale": np.ones(nA),
            "force_scale": np.array(1.0)}
    model = export_model(spec, cfg, {"Ar": norm}, {"Ar": {"nn1": nn1.get_weights(),
                                                           "head": nn2.get_weights()}}, STAGES)
    np.testing.assert_allclose(model.predict("Ar", G, A), np.asarray(chained), rtol=1e-4, atol=1e-5)


def _spec_with(nG, nA):
    """A one-element (Ar) spec with nG invariants and nA axes."""
    from dcf import FingerprintSpec
    rules = [{"kind": "G2", "neighbors": "*", "eta": list(np.linspace(0.1, 2, nG)), "Rs": 0.0},
             {"kind": "A1", "neighbors": "*", "eta": list(np.linspace(0.5, 2, nA)), "Rs": 0.0}]
    spec = FingerprintSpec(["Ar"], rules, cutoff=4.0)
    assert spec.n_features("Ar") == (nG, nA)
    return spec


def test_validation_frames_come_from_the_training_split(data):
    val = choose_validation_frames(data, 0.2, seed=0)
    assert len(val) >= 1 and set(val) <= set(data.frame_ids("train"))
    norm, validation, n = scan_training_data(data, "Cu", val, 64, 10**6, 0)
    frames_in_val = {int(k) for k in data.snapshots("Cu", "train")["frame"]} & set(val)
    assert len(validation["F"]) == sum(int(np.sum(data.snapshots("Cu")["frame"] == k))
                                       for k in frames_in_val)
    assert n + len(validation["F"]) == data.n_snapshots("Cu", "train")
    assert norm["G_mean"].shape == (24,) and norm["fint_scale"].shape == (8,)


def test_training_beats_the_zero_force_predictor(data):
    cfg = DCFTrainingConfig(hidden=(24, 24), head_hidden=(24, 24), epochs=25, batch_size=32,
                            threads=1, seed=1)
    log = []
    model = train(data, cfg, log.append)
    assert any("nn3 Au epoch 1/25" in line for line in log)
    result = evaluate_store(model, data, "test")
    assert result["source"] == "frames"                  # net-force removal needs frames
    for el, m in result["forces"].items():
        assert m["n"] > 0
        assert m["relative_mae"] < 0.5, (el, m)
    assert covariance_error(model, [data.frame(0)], 2)["covariance_error"] < 1e-10
    assert model.stages == STAGES
    assert {f["stage"] for f in model.training["fits"]} == set(STAGES)


def test_interrupted_training_resumes_from_the_checkpoint(data, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    cfg = tiny(head="paper", checkpoint=str(ckpt), stages=("nn1", "nn2"))
    reference = train(data, tiny(head="paper", stages=("nn1", "nn2")), lambda m: None)

    def stop(fit):
        return (fit.stage, fit.element, fit.epoch) == ("nn2", "Cu", 2)

    with pytest.raises(KeyboardInterrupt):
        train(data, cfg, lambda m: None, stop_after=stop)
    assert ckpt.exists()
    log = []
    resumed = train(data, cfg, log.append)
    assert "resuming from checkpoint" in log[0] and "nn2 Cu after epoch 2" in log[0]
    epochs = [line.split(":")[0] for line in log if line.startswith(STAGES) and " epoch " in line]
    assert epochs[0] == "nn2 Cu epoch 3/3"                 # no stage repeated
    assert not any(line.startswith("nn1") for line in log)
    for el in ("Cu", "Au"):       # the same weights as an uninterrupted run
        G, A = data.snapshots(el, "test")["G"], data.snapshots(el, "test")["A"]
        np.testing.assert_allclose(resumed.predict(el, G, A), reference.predict(el, G, A),
                                   rtol=1e-5, atol=1e-5)


def test_checkpoint_of_another_run_is_refused(data, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(data, tiny(checkpoint=str(ckpt)), lambda m: None, stop_after=lambda fit: True)
    with pytest.raises(TrainingError, match="another run.*architecture.*--restart"):
        train(data, tiny(checkpoint=str(ckpt), hidden=(9,)), lambda m: None)


def test_time_budget_returns_a_model(data):
    model = train(data, tiny(epochs=10_000, max_minutes=0.05), lambda m: None)
    assert model.stages == STAGES
    assert all(f["stopped"] == "time limit" for f in model.training["fits"])


def test_stages_one_at_a_time(data):
    m1 = train(data, tiny(stages=("nn1",)), lambda m: None)
    assert m1.stages == ("nn1",)
    with pytest.raises(ValueError, match="--stage nn2"):
        m1.forces(data.frame(0))
    with pytest.raises(TrainingError, match="stage nn3 starts from trained NN1 and NN2"):
        train(data, tiny(stages=("nn3",)), lambda m: None, init=m1)
    m2 = train(data, tiny(stages=("nn2",)), lambda m: None, init=m1)
    assert m2.stages == ("nn1", "nn2")
    np.testing.assert_array_equal(m2.networks["Cu"].nn1.nets[0].weights[0],
                                  m1.networks["Cu"].nn1.nets[0].weights[0])
    m3 = train(data, tiny(stages=("nn3",)), lambda m: None, init=m2)
    assert m3.stages == STAGES and m3.forces(data.frame(0)).shape == (32, 3)


def test_checkpoint_of_another_store_with_the_same_counts_is_refused(data, tmp_path):
    """Same spec, architecture, seed and snapshot counts; other positions and forces."""
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(data, tiny(checkpoint=str(ckpt)), lambda m: None, stop_after=lambda fit: True)
    other = MemoryFeatures(emt_frames(24, seed=4), cuau_spec(), test_fraction=0.25, seed=0)
    assert {el: other.n_snapshots(el, "train") for el in other.elements} == \
        {el: data.n_snapshots(el, "train") for el in data.elements}
    with pytest.raises(TrainingError, match="another feature store.*data_sha256.*--restart"):
        train(other, tiny(checkpoint=str(ckpt)), lambda m: None)
    log = []
    train(other, tiny(checkpoint=str(ckpt), stages=("nn1",)), log.append, restart=True)
    assert not any("resuming" in line for line in log)


def test_no_validation_snapshots_warns_and_judges_on_the_training_loss(data):
    log = []
    model = train(data, tiny(validation_fraction=0.0, stages=("nn1",)), log.append)
    warnings = [line for line in log if line.startswith("warning: no validation snapshots")]
    assert len(warnings) == 2 and "element Cu" in warnings[0]          # one per element
    assert not any("nan" in line.lower() for line in log)
    for fit in model.training["fits"]:
        assert all(row[2] is None and row[3] is None for row in fit["history"])
        assert fit["best_val_loss"] == fit["history"][fit["best_epoch"] - 1][1]


def test_learning_curve_lists_every_epoch_of_every_fit(data):
    from dcf.training.core import CURVE_COLUMNS, format_learning_curve, learning_curve
    log = []
    model = train(data, tiny(epochs=2), log.append)
    rows = learning_curve(model.training)
    logged = [line.split(":")[0] for line in log if " epoch " in line and "/2:" in line]
    assert [f"{s} {el} epoch {e}/2" for e, s, el, *_ in rows] == logged
    table = np.genfromtxt(format_learning_curve(rows).splitlines(), dtype=None, names=True,
                          encoding=None, deletechars="")
    assert table.dtype.names == CURVE_COLUMNS and len(table) == len(rows) == 12
    np.testing.assert_allclose(table["val_force_mae"], [r[5] for r in rows], rtol=1e-6)
