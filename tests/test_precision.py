"""DCF networks in float32 (`set_precision`): the accuracy it costs, measured against float64
on the paper's system B with Table S4 networks, for the paper, covariant and pairwise heads;
B-P refuses it; `--precision` of the run commands."""
import numpy as np
import pytest

from dcf.analysis.evaluation import rotate_atoms
from dcf.bench.costs import table_s4_model
from dcf.data.structures import system_b
from dcf.rotations import random_rotations


@pytest.fixture(scope="module")
def atoms():
    return system_b()


@pytest.mark.parametrize("head", ["paper", "covariant"])
def test_float32_forces_are_float64_forces_to_1e6(atoms, head):
    model = table_s4_model(head)
    F64 = model.forces(atoms)
    model.set_precision("float32")
    F32 = model.forces(atoms)
    assert F32.dtype == np.float64 and F32.shape == F64.shape
    scale = np.linalg.norm(F64, axis=1).mean()
    deviation = np.abs(F32 - F64).max()
    assert 0.0 < deviation < 1e-5 * scale            # single precision, and only that
    model.set_precision("float64")
    # as before, to round-off (later calls refresh the Verlet list instead of building it)
    np.testing.assert_allclose(model.forces(atoms), F64, rtol=0, atol=1e-12)


def test_float32_covariant_head_stays_covariant(atoms):
    model = table_s4_model("covariant")
    model.set_precision("float32")
    F = model.forces(atoms)
    for T in random_rotations(2, np.random.default_rng(3)):
        np.testing.assert_allclose(model.forces(rotate_atoms(atoms, T)), F @ T.T,
                                   rtol=0, atol=1e-5 * np.abs(F).max())


def test_unknown_precision_is_refused():
    model = table_s4_model("paper")
    with pytest.raises(ValueError, match="unknown network precision 'float16'"):
        model.set_precision("float16")


def test_float32_pairwise_head_keeps_newtons_third_law(atoms):
    """The pairwise head's embeddings in float32: forces within 1e-5 of float64, and the pair
    sum (float64, antisymmetric per pair) still has zero net force."""
    from dcf.bench.costs import S4
    from test_pairwise import random_pairwise
    model = random_pairwise(S4, np.random.default_rng(4))
    F64 = model.forces(atoms)
    model.set_precision("float32")
    F32 = model.forces(atoms)
    scale = np.linalg.norm(F64, axis=1).mean()
    assert 0.0 < np.abs(F32 - F64).max() < 1e-5 * scale
    np.testing.assert_allclose(F32.sum(axis=0), 0.0, atol=1e-12 * len(atoms) * scale)


def test_bp_model_runs_in_float64_only():
    from dcf.bench.costs import bp_model
    model = bp_model()
    model.set_precision("float64")
    with pytest.raises(ValueError, match="float64 only"):
        model.set_precision("float32")


def test_cli_precision_choices_are_the_networks():
    from dcf.cli._model import PRECISIONS as CLI
    from dcf.models.mlp import PRECISIONS
    assert CLI == tuple(PRECISIONS)
