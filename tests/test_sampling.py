"""Snapshot sampling and the frame split."""
import numpy as np
import pytest
from ase.data import atomic_numbers
from hypothesis import given
from hypothesis import strategies as st

from dcf.data.sampling import plan_snapshots, read_chosen, split_frames

ELEMENTS = ("Li", "O", "P")


def system(rng, n_frames=10):
    """numbers and first_atom of n_frames frames of 5-15 random Li/O/P atoms."""
    counts = rng.integers(5, 16, n_frames)
    numbers = rng.choice([atomic_numbers[e] for e in ELEMENTS], counts.sum())
    return numbers, np.concatenate([[0], np.cumsum(counts)])


@given(st.integers(1, 60), st.floats(0, 0.95), st.integers(0, 2**31))
def test_split_sizes(n, fraction, seed):
    test = split_frames(n, fraction, seed)
    n_test = int(test.sum())
    if fraction == 0 or n == 1:
        assert n_test == 0 if fraction == 0 else n_test <= 1
    else:
        assert 1 <= n_test <= n - 1
        assert abs(n_test - fraction * n) <= max(1, 0.5 + 1e-9)
    np.testing.assert_array_equal(test, split_frames(n, fraction, seed))


def test_all_snapshots_by_default_in_store_order(rng):
    numbers, first = system(rng)
    plan = plan_snapshots(numbers, first, ELEMENTS, test_fraction=0.3, seed=4)
    assert plan.test.sum() == 3
    for el in ELEMENTS:
        r = plan.rows[el]
        frame, atom = r["frame"], r["atom"]
        assert len(frame) == np.sum(numbers == atomic_numbers[el])
        assert np.all(numbers[first[frame] + atom] == atomic_numbers[el])
        n_train = plan.n_train[el]
        assert not plan.test[frame[:n_train]].any() and plan.test[frame[n_train:]].all()
        for part in (slice(0, n_train), slice(n_train, None)):    # sorted by (frame, atom)
            key = frame[part] * 1000 + atom[part]
            assert np.all(np.diff(key) > 0)
        np.testing.assert_array_equal(r["weight"], 1.0)


def test_n_snapshots_is_a_seeded_random_subset(rng):
    numbers, first = system(rng, 30)
    a = plan_snapshots(numbers, first, ELEMENTS, n_snapshots=20, seed=1)
    b = plan_snapshots(numbers, first, ELEMENTS, n_snapshots=20, seed=1)
    c = plan_snapshots(numbers, first, ELEMENTS, n_snapshots=20, seed=2)
    assert a.sha256 == b.sha256 != c.sha256
    for el in ELEMENTS:
        assert len(a.rows[el]["frame"]) == 20
        assert len(set(zip(a.rows[el]["frame"], a.rows[el]["atom"]))) == 20     # no repeats
    # an element's draw does not depend on the other elements being sampled
    li_only = plan_snapshots(numbers, first, ("Li",), n_snapshots=20, seed=1)
    np.testing.assert_array_equal(li_only.rows["Li"]["atom"], a.rows["Li"]["atom"])
    # more than there are: all
    everything = plan_snapshots(numbers, first, ELEMENTS, n_snapshots=10**6)
    assert sum(len(r["frame"]) for r in everything.rows.values()) == len(numbers)
    assert everything.needed().all()
    few = plan_snapshots(numbers, first, ELEMENTS, n_snapshots=1)
    assert few.needed().sum() <= 3


def test_chosen_snapshots_are_included_and_weighted(rng):
    numbers, first = system(rng, 30)
    chosen_atoms = [(3, 0), (17, 2), (29, 4)]
    chosen = [(f, a, np.nan) for f, a in chosen_atoms[:2]] + [(29, 4, 2.5)]
    plan = plan_snapshots(numbers, first, ELEMENTS, n_snapshots=2, seed=0, chosen=chosen,
                          chosen_weight=6.0)
    found = {}
    for el, r in plan.rows.items():
        for f, a, w in zip(r["frame"], r["atom"], r["weight"]):
            found[(int(f), int(a))] = (el, w)
    for (f, a), w in zip(chosen_atoms, (6.0, 6.0, 2.5)):
        el, weight = found[(f, a)]
        assert weight == w and atomic_numbers[el] == numbers[first[f] + a]
    assert sum(len(r["frame"]) for r in plan.rows.values()) <= 2 * 3 + 3


@pytest.mark.parametrize("chosen, message", [
    ([(99, 0)], "frame out of range"),
    ([(0, 99)], "has .* atoms"),
    ([(0, 0, -1.0)], "weight must be > 0"),
])
def test_bad_chosen_snapshots(rng, chosen, message):
    numbers, first = system(rng)
    with pytest.raises(ValueError, match=message):
        plan_snapshots(numbers, first, ELEMENTS, chosen=chosen)


def test_bad_options(rng):
    numbers, first = system(rng)
    with pytest.raises(ValueError, match="test fraction"):
        plan_snapshots(numbers, first, ELEMENTS, test_fraction=1.0)
    with pytest.raises(ValueError, match="snapshots"):
        plan_snapshots(numbers, first, ELEMENTS, n_snapshots=0)


def test_read_chosen(tmp_path):
    path = tmp_path / "rare.txt"
    path.write_text("# frame atom weight\n3 5\n7, 1, 4.0  # bond breaks\n\n")
    got = read_chosen(path)
    np.testing.assert_array_equal(got[:, :2], [[3, 5], [7, 1]])
    assert np.isnan(got[0, 2]) and got[1, 2] == 4.0
    path.write_text("3 five\n")
    with pytest.raises(ValueError, match="rare.txt line 1"):
        read_chosen(path)
