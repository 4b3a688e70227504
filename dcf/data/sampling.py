"""Which atomic snapshots go into a feature store, and which frames are held out for testing.

As in Mailoa et al. 2019 (section 2, "Training"), the force models learn from *atomic snapshots*
sampled per element, not from whole frames: N snapshots per element drawn at random (with a
seed) from all atoms of that element, plus chosen snapshots - rare events such as a bond
breaking - that are always included and can be weighted up in the loss. This decouples the
training set from the trajectory's statistics.

Train/test splitting is by frame: every snapshot of a test frame is a test snapshot, so no test
atom has a training neighbour from the same configuration.

Random streams: the split uses ``default_rng([seed, 0])``; element Z uses
``default_rng([seed, 1, Z])``, so adding an element to a data set does not change the draws of
the others.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingPlan:
    """The snapshots of a store, in store order.

    test (n_frames,) bool: test frames. order (n_frames,) int64: frame ids in store order
    (training frames ascending, then test frames ascending). rows[el]: dict of frame (n,) int64,
    atom (n,) int64, weight (n,) float64, sorted by (position of frame in `order`, atom), so
    the training rows are rows[:n_train[el]].
    """

    test: np.ndarray
    order: np.ndarray
    rows: dict
    n_train: dict

    @property
    def n_frames(self) -> int:
        return len(self.test)

    @property
    def sha256(self) -> str:
        """Digest of the whole plan (split, rows, weights): equal plans, equal digests."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.test, dtype=np.uint8).tobytes())
        for el in sorted(self.rows):
            h.update(el.encode())
            for key in ("frame", "atom", "weight"):
                h.update(np.ascontiguousarray(self.rows[el][key]).tobytes())
        return h.hexdigest()

    def needed(self) -> np.ndarray:
        """(n_frames,) bool: frames with at least one sampled snapshot (those to featurize)."""
        need = np.zeros(self.n_frames, bool)
        for r in self.rows.values():
            need[r["frame"]] = True
        return need


def split_frames(n_frames: int, test_fraction: float, seed: int = 0) -> np.ndarray:
    """(n_frames,) bool, True for test frames: round(test_fraction * n_frames) frames at random,
    at least one and at most n_frames - 1 when test_fraction > 0 and there are 2+ frames."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    n_test = int(round(test_fraction * n_frames))
    if test_fraction > 0 and n_frames >= 2:
        n_test = min(max(n_test, 1), n_frames - 1)
    test = np.zeros(n_frames, bool)
    test[np.random.default_rng([seed, 0]).permutation(n_frames)[:n_test]] = True
    return test


def read_chosen(path) -> np.ndarray:
    """Chosen snapshots from a text file: one 'frame atom' or 'frame atom weight' per line
    ('#' comments). Returns (m, 3) float: frame, atom, weight (NaN: use the default weight)."""
    rows = []
    with open(path) as fh:
        for line_no, line in enumerate(fh, 1):
            words = line.split("#")[0].replace(",", " ").split()
            if not words:
                continue
            try:
                if len(words) not in (2, 3):
                    raise ValueError
                frame, atom = int(words[0]), int(words[1])
                weight = float(words[2]) if len(words) == 3 else float("nan")
            except ValueError:
                raise ValueError(f"{path} line {line_no}: expected 'frame atom [weight]', got "
                                 f"{line.strip()!r}") from None
            if len(words) == 3 and not (np.isfinite(weight) and weight > 0):
                raise ValueError(f"{path} line {line_no}: the weight {words[2]} must be a "
                                 f"finite number > 0")
            rows.append((frame, atom, weight))
    return np.array(rows, dtype=float).reshape(-1, 3)


def plan_snapshots(numbers: np.ndarray, first_atom: np.ndarray, elements,
                   test_fraction: float = 0.2, seed: int = 0, n_snapshots: int | None = None,
                   chosen=None, chosen_weight: float = 10.0) -> SamplingPlan:
    """Sample snapshots per element and split frames into train and test.

    numbers (n_atoms,) atomic numbers of all frames concatenated; first_atom (n_frames + 1,)
    frame offsets (as in dcf.data.frames.FrameData); elements: symbols to sample.
    n_snapshots: per element, drawn without replacement from all its atoms in all frames
    (train and test alike; all of them when None or when there are fewer).
    chosen: (m, 2) or (m, 3) array of frame, atom[, weight]: always included, with that weight
    or `chosen_weight`. Drawn snapshots weigh 1.
    """
    from ase.data import atomic_numbers

    first_atom = np.asarray(first_atom, np.int64)
    numbers = np.asarray(numbers)
    n_frames = len(first_atom) - 1
    if n_snapshots is not None and n_snapshots < 1:
        raise ValueError(f"number of snapshots must be >= 1, got {n_snapshots}")
    if not chosen_weight > 0:
        raise ValueError(f"chosen weight must be > 0, got {chosen_weight}")
    test = split_frames(n_frames, test_fraction, seed)
    order = np.concatenate([np.flatnonzero(~test), np.flatnonzero(test)]).astype(np.int64)
    pos = np.empty(n_frames, np.int64)
    pos[order] = np.arange(n_frames)

    chosen_global, chosen_w = _chosen_atoms(chosen, numbers, first_atom, chosen_weight)
    rows, n_train = {}, {}
    for el in elements:
        z = atomic_numbers[el]
        candidates = np.flatnonzero(numbers == z)
        if n_snapshots is not None and n_snapshots < len(candidates):
            rng = np.random.default_rng([seed, 1, z])
            candidates = candidates[rng.choice(len(candidates), n_snapshots, replace=False)]
        mine = numbers[chosen_global] == z
        picked, inverse = np.unique(np.concatenate([candidates, chosen_global[mine]]),
                                    return_inverse=True)
        weight = np.ones(len(picked))
        weight[inverse[len(candidates):]] = chosen_w[mine]
        frame = np.searchsorted(first_atom, picked, side="right") - 1
        atom = picked - first_atom[frame]
        key = np.lexsort((atom, pos[frame]))
        frame, atom, weight = frame[key], atom[key], weight[key]
        rows[el] = {"frame": frame.astype(np.int64), "atom": atom.astype(np.int64),
                    "weight": weight.astype(np.float64)}
        n_train[el] = int(np.count_nonzero(~test[frame]))
    return SamplingPlan(test, order, rows, n_train)


def _chosen_atoms(chosen, numbers, first_atom, default_weight):
    """Global atom indices (m,) and weights (m,) of chosen (frame, atom[, weight]) rows."""
    if chosen is None or len(chosen) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    chosen = np.asarray(chosen, dtype=float)
    if chosen.ndim != 2 or chosen.shape[1] not in (2, 3):
        raise ValueError(f"chosen snapshots must be rows of (frame, atom[, weight]), got shape "
                         f"{chosen.shape}")
    frame, atom = chosen[:, 0].astype(np.int64), chosen[:, 1].astype(np.int64)
    weight = chosen[:, 2] if chosen.shape[1] == 3 else np.full(len(chosen), np.nan)
    weight = np.where(np.isnan(weight), default_weight, weight)
    n_frames = len(first_atom) - 1
    for f, a, w in zip(frame, atom, weight):
        if not 0 <= f < n_frames:
            raise ValueError(f"chosen snapshot (frame {f}, atom {a}): frame out of range "
                             f"(0..{n_frames - 1} after selection)")
        if not 0 <= a < first_atom[f + 1] - first_atom[f]:
            raise ValueError(f"chosen snapshot (frame {f}, atom {a}): frame {f} has "
                             f"{first_atom[f + 1] - first_atom[f]} atoms")
        if not w > 0:
            raise ValueError(f"chosen snapshot (frame {f}, atom {a}): weight must be > 0")
    global_index = first_atom[frame] + atom
    global_index, first = np.unique(global_index, return_index=True)
    return global_index, weight[first]
