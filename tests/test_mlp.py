"""The numpy network used at inference: values against Keras, input gradients against finite
differences, tanh against numpy's."""
import numpy as np
import pytest

from dcf.models.mlp import ACTIVATIONS, MLP, tanh


def random_mlp(rng, sizes, activation):
    return MLP([rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])],
               [rng.normal(size=b) * 0.1 for b in sizes[1:]], activation)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_input_gradient_matches_finite_differences(rng, activation):
    net = random_mlp(rng, [7, 11, 5, 1], activation)
    x = rng.normal(size=(4, 7))
    y, g = net.value_and_input_gradient(x)
    np.testing.assert_allclose(y, net(x)[:, 0], rtol=1e-14)
    h = 1e-6
    fd = np.stack([(net(x + h * e)[:, 0] - net(x - h * e)[:, 0]) / (2 * h) for e in np.eye(7)], 1)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_tanh_matches_numpy_everywhere(rng):
    z = np.concatenate([rng.normal(size=5000) * s for s in (1e-8, 0.1, 1.0, 5.0, 50.0)]
                       + [[0.0, -0.0, 17.0, -17.0, 355.0, 356.0, -1e300, 1e300, np.inf, -np.inf]])
    with np.errstate(all="raise"):              # no overflow warning escapes
        t = tanh(z)
    np.testing.assert_allclose(t, np.tanh(z), rtol=0, atol=4e-16)
    assert np.all(np.abs(t) <= 1.0) and t.dtype == np.float64
    assert np.isnan(tanh(np.array([np.nan]))[0])
    x = rng.normal(size=(3, 4))
    before = x.copy()
    tanh(x)
    np.testing.assert_array_equal(x, before)    # input untouched


def test_activations_match_keras(rng):
    keras = pytest.importorskip("keras")
    x = rng.normal(size=(6, 4)) * 3
    for name in ("tanh", "softplus", "silu", "linear"):
        ref = keras.ops.convert_to_numpy(keras.activations.get(name)(x.astype("float32")))
        np.testing.assert_allclose(ACTIVATIONS[name][0](x), ref, rtol=1e-5, atol=1e-6)


def test_round_trip_through_arrays_and_shape_errors(rng):
    net = random_mlp(rng, [3, 4, 2], "silu")
    back = MLP.from_arrays(net.to_arrays("Li/nn1"), "Li/nn1", "silu")
    x = rng.normal(size=(5, 3))
    np.testing.assert_array_equal(back(x), net(x))
    with pytest.raises(ValueError, match="layer 1 takes"):
        MLP([np.zeros((3, 4)), np.zeros((5, 1))], [np.zeros(4), np.zeros(1)])
    with pytest.raises(ValueError, match="unknown activation"):
        MLP([np.zeros((3, 1))], [np.zeros(1)], "relu6")
    with pytest.raises(ValueError, match="no network"):
        MLP.from_arrays({}, "O/nn1", "tanh")
