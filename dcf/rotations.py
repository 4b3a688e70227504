"""Uniformly random proper rotations, the one sampler used for augmentation and checks."""
from __future__ import annotations

import numpy as np


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """n rotation matrices (n, 3, 3), uniform on SO(3), from random unit quaternions."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], 1)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """One rotation matrix (3, 3), uniform on SO(3)."""
    return random_rotations(1, rng)[0]
