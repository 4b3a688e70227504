"""The training core both trainers share: one meaning per flag, the validation split, the
normalizer, early stopping with the learning-rate schedule, checkpoint identity, the
learning-curve table. No TensorFlow needed."""
import argparse

import numpy as np
import pytest

from dcf.training import bp, core, dcf


def parser():
    p = argparse.ArgumentParser()
    core.add_shared_arguments(p)
    dcf.add_train_arguments(p.add_argument_group("DCF"))
    bp.add_train_arguments(p.add_argument_group("B-P"))
    return p


def test_a_shared_flag_sets_the_same_option_of_both_trainers():
    argv = ["--epochs", "7", "--batch-size", "100", "--learning-rate", "0.01", "--patience", "9",
            "--lr-patience", "4", "--min-learning-rate", "1e-6", "--validation-fraction", "0.2",
            "--seed", "3", "--hidden", "12,5", "--activation", "silu", "--max-minutes", "2",
            "--checkpoint", "c.ckpt", "--checkpoint-every", "5", "--threads", "2"]
    args = parser().parse_args(argv)
    a, b = dcf.config_from_args(args), bp.config_from_args(args)
    for name in ("epochs", "batch_size", "learning_rate", "patience", "lr_patience",
                 "min_learning_rate", "validation_fraction", "seed", "hidden", "activation",
                 "max_minutes", "checkpoint", "checkpoint_every", "threads"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.hidden == (12, 5) and a.lr_wait == 4 and a.lr_floor == 1e-6
    # unset flags: each trainer's own defaults
    a, b = dcf.config_from_args(parser().parse_args([])), bp.config_from_args(
        parser().parse_args([]))
    assert (a.epochs, a.batch_size, a.patience) == (200, 64, 15)
    assert (b.epochs, b.batch_size, b.patience) == (300, 256, 30)
    assert parser().parse_args(["--bp-hidden", "6"]).hidden == "6"       # the older name


def help_of(flag):
    return next(a.help for a in parser()._actions if flag in a.option_strings)


def test_help_says_what_the_shared_flags_mean():
    assert help_of("--batch-size").startswith("atoms (snapshots) per optimizer step")
    assert help_of("--patience").startswith("early stopping")
    assert "halves" in help_of("--lr-patience")


@pytest.mark.parametrize("bad, match", [(["--hidden", "8,x"], "--hidden"),
                                        (["--head-hidden", "0"], "--head-hidden")])
def test_bad_widths_are_named(bad, match):
    with pytest.raises(core.TrainingError, match=match):
        dcf.config_from_args(parser().parse_args(bad))


@pytest.mark.parametrize("n, fraction", [(1, 0.1), (2, 0.1), (10, 0.1), (37, 0.25), (8, 0.0)])
def test_validation_split_partitions_the_training_frames(n, fraction):
    ids = np.arange(100, 100 + 2 * n, 2)
    fit, val = core.validation_split(ids, fraction, seed=5)
    assert sorted(np.concatenate([fit, val])) == list(ids) and not set(fit) & set(val)
    expected = 0 if fraction == 0 or n < 2 else min(max(round(fraction * n), 1), n - 1)
    assert len(val) == expected and len(fit) >= 1
    np.testing.assert_array_equal(core.validation_split(ids, fraction, seed=5)[1], val)


def test_normalizer_streams_mean_and_std(rng):
    G = rng.normal(3.0, 2.0, size=(500, 4))
    G[:, 2] = 7.0                                   # a constant feature
    norm = core.Normalizer(4)
    for block in np.array_split(G, 7):
        norm.add(block)
    mean, std = norm.mean_std()
    np.testing.assert_allclose(mean, G.mean(0))
    np.testing.assert_allclose(std[[0, 1, 3]], G.std(0)[[0, 1, 3]])
    assert std[2] == 1.0


def test_fit_halves_the_rate_and_stops_as_documented():
    """Brute force: count epochs since the last improvement by hand."""
    opts = core.TrainingOptions(learning_rate=1.0, patience=5, lr_patience=2,
                                min_learning_rate=0.2)
    losses = [5, 4, 4.5, 4.2, 3, 3.1, 3.2, 3.3, 3.4, 3.5]
    fit = core.Fit("nn1", "Cu", lr=opts.learning_rate)
    lrs, stopped_at = [], None
    for loss in losses:
        fit.end_epoch(loss + 1, loss, 0.1, opts)
        lrs.append(fit.lr)
        if fit.out_of_patience(opts):
            stopped_at = fit.epoch
            break
    # waits after each epoch: 0 0 1 2(halve) 0 1 2(halve) 3 4(halve, floor 0.2) 5(stop)
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2]
    assert stopped_at == 10 and (fit.best, fit.best_epoch) == (3, 5)
    assert [row[0] for row in fit.history] == list(range(1, 11))


def test_default_schedule_of_the_options():
    opts = core.TrainingOptions(learning_rate=2e-3, patience=15)
    assert opts.lr_wait == 5 and opts.lr_floor == pytest.approx(2e-6)
    assert core.TrainingOptions(patience=3).lr_wait == 2


@pytest.mark.parametrize("kw", [dict(epochs=0), dict(batch_size=0), dict(patience=0),
                                dict(learning_rate=0.0), dict(validation_fraction=1.0),
                                dict(lr_patience=0)])
def test_bad_options_are_refused(kw):
    with pytest.raises(core.TrainingError):
        core.TrainingOptions(**kw)


def test_checkpoint_refuses_another_run_naming_what_differs(tmp_path):
    path = tmp_path / "c.ckpt"
    identity = {"model": "dcf-checkpoint", "seed": 0, "n_train": {"Cu": 10},
                "data_sha256": "a" * 64}
    core.Checkpoint(path, identity).save({"epoch": 3}, {"w/0": np.ones(2)})
    meta, arrays = core.Checkpoint(path, identity).load()
    assert meta["epoch"] == 3 and core.unpack("w", arrays)[0].tolist() == [1, 1]
    with pytest.raises(core.TrainingError, match="another feature store or data set "
                                                 r"\(differs in data_sha256\)"):
        core.Checkpoint(path, {**identity, "data_sha256": "b" * 64}).load()
    with pytest.raises(core.TrainingError, match=r"another run \(differs in seed, n_train\)"):
        core.Checkpoint(path, {**identity, "seed": 1, "n_train": {"Cu": 11}}).load()
    assert core.Checkpoint(path, {**identity, "seed": 1}, restart=True).load() is None
    path.write_bytes(b"garbage")
    with pytest.raises(core.TrainingError, match="unreadable.*--restart"):
        core.Checkpoint(path, identity).load()


def test_data_hash_sees_content_not_only_counts():
    a = np.arange(12.0).reshape(4, 3)
    h1, h2, h3 = core.DataHash(), core.DataHash(), core.DataHash()
    h1.add(a)
    h2.add(a.copy())
    b = a.copy()
    b[2, 1] += 1e-12
    h3.add(b)
    assert h1.hexdigest() == h2.hexdigest() != h3.hexdigest()


def test_learning_curve_table_reads_back():
    training = {"fits": [
        {"stage": "nn1", "element": "Cu", "history": [[1, 0.5, 0.6, 0.12, 2e-3],
                                                      [2, 0.4, 0.5, 0.11, 2e-3]]},
        {"stage": "bp", "element": "all", "history": [[1, 0.3, None, None, 1e-3]]}]}
    rows = core.learning_curve(training)
    assert rows[2] == (1, "bp", "all", 0.3, None, None, 1e-3)
    text = core.format_learning_curve(rows)
    assert text.splitlines()[0].split() == ["#", *core.CURVE_COLUMNS]
    table = np.genfromtxt(text.splitlines(), dtype=None, names=True, encoding=None)
    assert list(table["stage"]) == ["nn1", "nn1", "bp"]
    np.testing.assert_allclose(table["val_loss"], [0.6, 0.5, np.nan])
    np.testing.assert_allclose(table["lr"], [2e-3, 2e-3, 1e-3])
