"""The neighbor list against a brute-force search over images and against ASE."""
import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from hypothesis import given, strategies as st

from dcf import neighbor_list
from dcf.descriptors.neighbors import VerletList, build_neighbor_list, complete_cell
from reference import brute_force_neighbors


def as_set(i, j, S):
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, np.asarray(S).tolist())))


def check_against_brute_force(positions, cell, pbc, cutoff):
    nl = build_neighbor_list(positions, cell, pbc, cutoff)
    bi, bj, bS, bD, bd = brute_force_neighbors(positions, cell, pbc, cutoff)
    assert as_set(nl.i, nl.j, nl.S) == as_set(bi, bj, bS)
    # vectors and distances follow ASE's definition D = r_j - r_i + S @ cell
    D = positions[nl.j] - positions[nl.i] + nl.S @ np.asarray(cell)
    np.testing.assert_allclose(nl.D, D, atol=1e-9)
    np.testing.assert_allclose(nl.d, np.linalg.norm(D, axis=1), atol=1e-9)
    assert np.all(np.diff(nl.i) >= 0) and nl.first[-1] == len(nl)
    return nl


@st.composite
def periodic_systems(draw):
    """Random triclinic cells from cubic to very skewed, often thinner than the cutoff,
    with any mix of periodic and open axes and atoms outside the cell."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    diag = rng.uniform(0.8, 6.0, 3)
    skew = draw(st.sampled_from([0.0, 0.5, 2.5]))
    cell = np.diag(diag)
    cell[1, 0], cell[2, 0], cell[2, 1] = rng.uniform(-skew, skew, 3) * diag[[0, 0, 1]]
    n = draw(st.integers(1, 7))
    positions = rng.uniform(-0.5, 1.5, (n, 3)) @ cell
    pbc = tuple(draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    cutoff = draw(st.floats(0.3, 4.5))
    return positions, cell, pbc, cutoff


@given(periodic_systems())
def test_matches_brute_force_over_all_images(system):
    check_against_brute_force(*system)


@given(periodic_systems())
def test_matches_ase(system):
    positions, cell, pbc, cutoff = system
    atoms = Atoms(f"H{len(positions)}", positions=positions, cell=cell, pbc=pbc)
    i, j, S = neighbor_list("ijS", atoms, cutoff)
    ai, aj, aS, ad = ase_neighbor_list("ijSd", atoms, cutoff)
    keep = ad < cutoff          # ASE may include pairs at exactly d == cutoff
    assert as_set(i, j, S) == as_set(ai[keep], aj[keep], aS[keep])


def test_cell_thinner_than_cutoff_gives_self_images():
    atoms = Atoms("Ti", positions=[[0.3, 0.2, 0.1]], cell=[2.0, 2.5, 3.0], pbc=True)
    i, j, S, d = neighbor_list("ijSd", atoms, 5.0)
    assert np.all(i == 0) and np.all(j == 0)
    assert len(S) == len(as_set(i, j, S))            # every image once
    assert (0, 0, (0, 0, 0)) not in as_set(i, j, S)  # but never the atom itself
    brute = brute_force_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    assert len(S) == len(brute[0]) == 32


def test_isolated_molecule_with_zero_cell():
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    i, j, d = neighbor_list("ijd", atoms, 1.2)
    assert as_set(i, j, np.zeros((len(i), 3), int)) == {
        (0, 1, (0, 0, 0)), (1, 0, (0, 0, 0)), (0, 2, (0, 0, 0)), (2, 0, (0, 0, 0))}
    np.testing.assert_allclose(sorted(d), [0.96, 0.96, 0.9604686, 0.9604686], atol=1e-6)


def test_slab_with_zero_vacuum_vector_and_far_atoms():
    cell = np.array([[3.0, 0, 0], [1.0, 2.8, 0], [0, 0, 0]])
    positions = np.array([[0.1, 0.2, 0.0], [1.5, 1.0, 1.3], [7.0, -5.0, 40.0]])
    check_against_brute_force(positions, cell, (True, True, False), 3.5)


def test_large_random_cell_matches_ase(rng):
    atoms = Atoms("H300", positions=rng.uniform(size=(300, 3)) * 12.0,
                  cell=[[12, 0, 0], [3, 11, 0], [-2, 1, 10]], pbc=True)
    i, j, S = neighbor_list("ijS", atoms, 3.0)
    ai, aj, aS = ase_neighbor_list("ijS", atoms, 3.0)
    assert as_set(i, j, S) == as_set(ai, aj, aS)


def test_quantities_and_errors():
    atoms = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=[5, 5, 5], pbc=True)
    D, d = neighbor_list("Dd", atoms, 2.0)
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), d)
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_list("ijS", atoms, -1.0)
    with pytest.raises(ValueError, match="unknown quantities"):
        neighbor_list("ijX", atoms, 2.0)
    bad = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=[5, 0, 5], pbc=True)
    with pytest.raises(ValueError, match="periodic"):
        neighbor_list("ijS", bad, 2.0)
    atoms.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        neighbor_list("ijS", atoms, 2.0)


def test_complete_cell_keeps_periodic_vectors():
    cell = np.array([[2.0, 0.5, 0], [0, 0, 0], [0, 0, 0]])
    full = complete_cell(cell, (True, False, False))
    np.testing.assert_array_equal(full[0], cell[0])
    assert np.linalg.det(full) > 0


def test_huge_spread_and_huge_cells_do_not_overflow_the_bins():
    far = np.array([[0.0, 0, 0], [4194304.5] * 3])
    nl = build_neighbor_list(far, np.zeros((3, 3)), (False,) * 3, 1.0)
    assert len(nl) == 0
    nl = build_neighbor_list([[0.0, 0, 0], [1, 0, 0]], np.eye(3) * 1e8, (True,) * 3, 1.5)
    assert len(nl) == 2


def test_bad_thread_count():
    atoms = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="num_threads"):
        neighbor_list("ijS", atoms, 2.0, num_threads=-1)


@given(periodic_systems(), st.floats(0.1, 1.5), st.integers(0, 2**32 - 1))
def test_verlet_list_holds_every_pair_within_the_cutoff(system, skin, seed):
    """Random moves, some beyond skin / 2: the pairs within the cutoff, their vectors and
    distances equal a fresh build's, whether the list was reused or rebuilt."""
    positions, cell, pbc, cutoff = system
    rng = np.random.default_rng(seed)
    verlet = VerletList(cutoff, skin)
    for step in range(6):
        nl = verlet.update(positions, cell, pbc)
        keep = nl.d < cutoff
        fresh = check_against_brute_force(positions, cell, pbc, cutoff)
        assert as_set(nl.i[keep], nl.j[keep], nl.S[keep]) == as_set(fresh.i, fresh.j, fresh.S)
        D = positions[nl.j] - positions[nl.i] + nl.S @ cell
        np.testing.assert_allclose(nl.D, D, atol=1e-9)
        np.testing.assert_allclose(nl.d, np.linalg.norm(D, axis=1), atol=1e-9)
        positions = positions + rng.normal(size=positions.shape) * skin * (0.05 if step < 3 else 0.4)


def test_verlet_list_rebuilds_only_when_needed(rng):
    cell, pbc = np.diag([6.0, 7.0, 8.0]), (True, True, True)
    positions = rng.uniform(size=(20, 3)) @ cell
    verlet = VerletList(3.0, 1.0)
    verlet.update(positions, cell, pbc)
    moved = positions.copy()
    moved[3] += [0.3, 0.3, 0.0]                 # 0.42 A < skin / 2: reused
    verlet.update(moved, cell, pbc)
    assert verlet.builds == 1
    moved[3] += [0.05, 0.0, 0.0]                # 0.46 A from the build: still reused
    verlet.update(moved, cell, pbc)
    assert verlet.builds == 1
    moved[7] += [0.0, 0.0, 0.51]                # beyond skin / 2: rebuilt
    verlet.update(moved, cell, pbc)
    assert verlet.builds == 2
    verlet.update(moved, cell * 1.01, pbc)      # a new cell
    verlet.update(moved, cell * 1.01, (True, True, False))
    verlet.update(moved, cell * 1.01, (True, True, False), numbers=np.arange(20))
    assert verlet.builds == 5
    with pytest.raises(ValueError, match="skin"):
        VerletList(3.0, -0.5)


def test_featurizer_with_a_skin_follows_md_exactly(rng):
    """Fingerprints along a trajectory, with the Verlet list reused, equal fresh ones."""
    from dcf.descriptors.fingerprints import Featurizer
    from conftest import all_kinds_spec, random_atoms
    spec = all_kinds_spec()
    atoms = random_atoms(rng).repeat(2)
    cached, fresh = Featurizer(spec, skin=0.8), Featurizer(spec)
    for _ in range(8):
        atoms.positions += rng.normal(size=atoms.positions.shape) * 0.05
        a, b = cached(atoms), fresh(atoms)
        for el in spec.elements:
            np.testing.assert_allclose(a.G[el], b.G[el], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(a.A[el], b.A[el], rtol=1e-10, atol=1e-12)
    assert cached._verlet.builds < 8


def test_far_periodic_coordinates_and_tiny_cutoffs():
    """A coordinate too far out to wrap is an error naming the atom; a cutoff so small that
    its square underflows gives an empty list. Neither may corrupt the count/fill passes."""
    cell = np.eye(3) * 10.0
    far = np.vstack([np.random.default_rng(0).uniform(0, 10, (20, 3)), [[1e20, 0.0, 0.0]]])
    with pytest.raises(ValueError, match="atom 20 .* periodic axis 0"):
        build_neighbor_list(far, cell, [True] * 3, 3.0)
    open_z = build_neighbor_list(far[:, ::-1], cell, [True, True, False], 3.0)
    assert open_z.first[-1] == open_z.first[-2]          # the far atom on the open axis
    tiny = build_neighbor_list(far[:20], cell, [True] * 3, 1e-170)
    assert len(tiny) == 0 and np.all(tiny.first == 0)


def _as_sorted(*arrays):
    """Entries as a sorted list of tuples (i, j, S...), for comparing lists entry by entry."""
    return sorted(zip(*(np.asarray(x).tolist() for x in arrays)))


@pytest.mark.parametrize("cutoff", [
    2.6,
    {("Cu", "Au"): 2.7, ("Au", "Au"): 3.1},
    {(29, 29): 2.5},
    [1.2, 1.4, 1.3, 1.5, 1.2, 1.4, 1.3, 1.5],
], ids=["float", "symbol-pairs", "number-pairs", "per-atom-radii"])
@pytest.mark.parametrize("self_interaction", [False, True])
def test_drop_in_for_ase_neighbor_list(cutoff, self_interaction, rng):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[1, 3, 6]] = "Au"
    atoms.rattle(0.1, rng=rng)
    atoms.cell[1, 0] = 0.4                  # triclinic
    ours = neighbor_list("ijSdD", atoms, cutoff, self_interaction)
    theirs = ase_neighbor_list("ijSdD", atoms, cutoff, self_interaction)
    assert np.all(np.diff(ours[0]) >= 0)            # ordered by i, as ASE
    assert _as_sorted(*ours[:3]) == _as_sorted(*theirs[:3])
    order = np.lexsort((ours[2][:, 2], ours[2][:, 1], ours[2][:, 0], ours[1], ours[0]))
    order_ase = np.lexsort((theirs[2][:, 2], theirs[2][:, 1], theirs[2][:, 0], theirs[1],
                            theirs[0]))
    np.testing.assert_allclose(ours[3][order], theirs[3][order_ase], atol=1e-12)
    np.testing.assert_allclose(ours[4][order], theirs[4][order_ase], atol=1e-12)


def test_per_atom_radii_must_match_the_atoms():
    atoms = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="3 cutoff radii for 2 atoms"):
        neighbor_list("ij", atoms, [1.0, 1.0, 1.0])


def test_chosen_centers_get_the_full_lists_entries_and_the_others_none(rng):
    """centers= (the LAMMPS coupling: owned atoms among ghosts) keeps exactly the rows of
    the chosen atoms, with every atom still a neighbor."""
    positions = rng.uniform(0, 9.0, (120, 3))
    full = build_neighbor_list(positions, np.eye(3), (False,) * 3, 3.0)
    centers = np.sort(rng.choice(120, 30, replace=False))
    part = build_neighbor_list(positions, np.eye(3), (False,) * 3, 3.0, centers=centers)
    counts = np.diff(part.first)
    assert np.all(counts[np.setdiff1d(np.arange(120), centers)] == 0)
    for i in centers:
        a, b = full.first[i], full.first[i + 1]
        c, d = part.first[i], part.first[i + 1]
        np.testing.assert_array_equal(part.j[c:d], full.j[a:b])
        np.testing.assert_array_equal(part.D[c:d], full.D[a:b])
    assert counts.sum() > 0 and len(part) == counts[centers].sum()
