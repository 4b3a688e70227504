"""Small fully connected networks evaluated in numpy, for inference without TensorFlow.

Training happens in TensorFlow/Keras; the trained weights are copied into an `MLP` and saved in
the model file. MD then evaluates the network with a few numpy matrix products per step and no
framework overhead. `MLP` also gives the gradient of a scalar output with respect to the inputs
(dE/dG for B–P forces).

The matrix products go through numpy's BLAS, whose thread pool is sized for the whole machine.
For matrices this small, extra threads only cost (and oversubscribe cores that MD ranks or other
jobs hold), so inference runs inside `blas_threads(n)` with the model's thread count.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController


def tanh(z: np.ndarray) -> np.ndarray:
    """tanh(z) = 1 - 2 / (exp(2z) + 1), to 4e-16 of np.tanh: numpy's float64 exp is about
    twice as fast as its float64 tanh, which dominates the cost of the small networks.
    exp(2z) = inf (z > 355) gives exactly 1."""
    e = np.multiply(z, 2.0)
    with np.errstate(over="ignore", under="ignore"):
        np.exp(e, out=e)
    e += 1.0
    np.divide(-2.0, e, out=e)
    e += 1.0
    return e


# network precision name -> numpy dtype of the evaluation
PRECISIONS = {"float64": np.float64, "float32": np.float32}


def precision_dtype(precision: str):
    """The numpy dtype of a network precision name ("float64" or "float32")."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown network precision {precision!r} "
                         f"(known: {', '.join(PRECISIONS)})")
    return PRECISIONS[precision]


# activation name -> (f(z), f'(z) written in terms of z and f(z))
ACTIVATIONS = {
    "tanh": (tanh, lambda z, a: 1.0 - a * a),
    "softplus": (lambda z: np.logaddexp(0.0, z), lambda z, a: 0.5 * (1.0 + np.tanh(0.5 * z))),
    "silu": (lambda z: z * 0.5 * (1.0 + np.tanh(0.5 * z)),
             lambda z, a: (s := 0.5 * (1.0 + np.tanh(0.5 * z))) * (1.0 + z * (1.0 - s))),
    "linear": (lambda z: z, lambda z, a: np.ones_like(z)),
}


def bias_activation(z: np.ndarray, b: np.ndarray, activation: str) -> np.ndarray:
    """f(z + b) for a layer's outputs z (n, m) or (K, n, m) and biases b broadcast to them;
    z is overwritten (it is the matrix product's fresh output). In float32, numpy's own tanh
    (vectorized there) is 2x faster than `tanh` above."""
    z += b
    if activation == "tanh" and z.dtype == np.float32:
        return np.tanh(z, out=z)
    return ACTIVATIONS[activation][0](z)


@functools.lru_cache(maxsize=None)
def _blas_libraries() -> tuple:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process (numpy's)."""
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def blas_threads(num_threads: int):
    """Inside the block numpy's BLAS uses `num_threads` threads; the previous count is restored
    on leaving. A library already at that count is not touched (one query per call)."""
    changed = []
    for lib in _blas_libraries():
        before = lib.get_num_threads()
        if before != num_threads:
            lib.set_num_threads(num_threads)
            changed.append((lib, before))
    try:
        yield
    finally:
        for lib, before in changed:
            lib.set_num_threads(before)


@dataclass
class MLP:
    """y = W_L f(... f(x W_1 + b_1) ...) + b_L, the last layer linear.

    weights[k] has shape (n_in_k, n_out_k), biases[k] (n_out_k,); `activation` names the hidden
    layers' function (ACTIVATIONS). Keras Dense layers use the same layout.
    """
    weights: list
    biases: list
    activation: str = "tanh"

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; "
                             f"known: {sorted(ACTIVATIONS)}")
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError("an MLP needs as many bias vectors as weight matrices (at least one)")
        self.weights = [np.ascontiguousarray(W, dtype=np.float64) for W in self.weights]
        self.biases = [np.ascontiguousarray(b, dtype=np.float64) for b in self.biases]
        for k, (W, b) in enumerate(zip(self.weights, self.biases)):
            if W.ndim != 2 or b.shape != (W.shape[1],):
                raise ValueError(f"layer {k}: weight {W.shape} and bias {b.shape} do not match")
            if k and W.shape[0] != self.weights[k - 1].shape[1]:
                raise ValueError(f"layer {k} takes {W.shape[0]} inputs, "
                                 f"layer {k - 1} gives {self.weights[k - 1].shape[1]}")

        self.set_precision("float64")

    def set_precision(self, precision: str) -> None:
        """Evaluate `__call__` in "float64" (default) or "float32" (single-precision copies of
        the weights; `weights` stay float64, as saved). `value_and_input_gradient` is always
        float64."""
        self.precision, dt = precision, precision_dtype(precision)
        self._layers = [(W.astype(dt, copy=False), b.astype(dt, copy=False))
                        for W, b in zip(self.weights, self.biases)]

    @property
    def n_inputs(self) -> int:
        return self.weights[0].shape[0]

    @property
    def n_outputs(self) -> int:
        return self.weights[-1].shape[1]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs (n, n_outputs) for inputs x (n, n_inputs)."""
        layers = self._layers
        h = np.asarray(x, dtype=layers[0][0].dtype)
        for W, b in layers[:-1]:
            h = bias_activation(h @ W, b, self.activation)
        y = h @ layers[-1][0]
        y += layers[-1][1]
        return y.astype(np.float64, copy=False)

    def value_and_input_gradient(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For a single-output network: y (n,) and dy/dx (n, n_inputs), by backpropagation."""
        if self.n_outputs != 1:
            raise ValueError("value_and_input_gradient needs a network with one output")
        f, df = ACTIVATIONS[self.activation]
        h = np.asarray(x, dtype=np.float64)
        slopes = []
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            if self.activation == "tanh":                   # f' = 1 - f^2 needs no z
                h = bias_activation(h @ W, b, "tanh")
                slopes.append(1.0 - h * h)
                continue
            z = h @ W + b
            h = f(z)
            slopes.append(df(z, h))
        y = (h @ self.weights[-1] + self.biases[-1])[:, 0]
        g = np.broadcast_to(self.weights[-1][:, 0], h.shape)
        for W, s in zip(reversed(self.weights[:-1]), reversed(slopes)):
            g = (g * s) @ W.T
        return y, np.ascontiguousarray(g)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays for a model file: {f"{prefix}/{k}/W": W_k, f"{prefix}/{k}/b": b_k}."""
        out = {}
        for k, (W, b) in enumerate(zip(self.weights, self.biases)):
            out[f"{prefix}/{k}/W"] = W
            out[f"{prefix}/{k}/b"] = b
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str, activation: str) -> "MLP":
        """Inverse of to_arrays."""
        weights, biases = [], []
        while f"{prefix}/{len(weights)}/W" in arrays:
            k = len(weights)
            weights.append(arrays[f"{prefix}/{k}/W"])
            biases.append(arrays[f"{prefix}/{k}/b"])
        if not weights:
            raise ValueError(f"no network {prefix!r} in the model file")
        return cls(weights, biases, activation)

    @classmethod
    def from_keras(cls, layers, activation: str) -> "MLP":
        """Copy the weights of a sequence of Keras Dense layers (the last one linear)."""
        weights, biases = zip(*(layer.get_weights() for layer in layers))
        return cls(list(weights), list(biases), activation)
