"""DCF networks in float32 (`DCFModel.set_precision`): the accuracy it costs, measured against
float64 on the paper's system B with Table S4 networks, for both heads."""
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
