"""The HDF5 feature store: contents equal the fingerprints, splits, batches, frames, errors."""
import json

import h5py
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import random_atoms
from dcf import FingerprintSpec, featurize
from dcf.data.frames import FrameData
from dcf.data.pipeline import checkpoint_dir, featurize_to_store
from dcf.data.sampling import plan_snapshots
from dcf.data.store import FeatureStore, StoreError

SPEC = "mailoa2019-S4"


def labelled_frames(rng, n=6, energies=True):
    """Random Li-O-P frames with random forces (eV/A) and energies (eV)."""
    frames = []
    for k in range(n):
        atoms = random_atoms(rng, "Li4O6P2" if k % 2 else "Li3O5P2")
        results = {"forces": rng.normal(size=(len(atoms), 3))}
        if energies:
            results["energy"] = float(rng.normal())
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def make_store(path, frames, spec=SPEC, **plan_options):
    spec = FingerprintSpec.resolve(spec)
    data = FrameData.from_atoms(frames)
    plan = plan_snapshots(data.numbers, data.first_atom, spec.elements, **plan_options)
    featurize_to_store(path, spec, data, plan, {"test": True}, block_frames=2)
    return plan


def store_arrays(path) -> dict:
    """Every dataset of a store, by name (for exact comparisons)."""
    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                      if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.fixture
def frames(rng):
    return labelled_frames(rng)


def test_snapshots_are_the_fingerprints_and_forces(tmp_path, frames):
    path = tmp_path / "s.h5"
    make_store(path, frames, test_fraction=0.34, seed=3)
    with FeatureStore(path) as store:
        assert store.spec == FingerprintSpec.preset(SPEC)
        assert store.elements == ("Li", "O", "P")
        assert store.n_frames == 6
        assert store.provenance == {"test": True}
        for el in store.elements:
            snap = store.snapshots(el)
            assert snap["G"].dtype == np.float64 and snap["frame"].dtype == np.int64
            assert snap["A"].shape[1:] == (6, 3) and snap["F"].shape[1:] == (3,)
            n_all = sum(a.get_chemical_symbols().count(el) for a in frames)
            assert store.n_snapshots(el) == n_all == len(snap["G"])
            np.testing.assert_array_equal(snap["weight"], 1.0)
            for k, atoms in enumerate(frames):
                f = featurize(atoms, SPEC)
                rows = snap["frame"] == k
                np.testing.assert_array_equal(snap["atom"][rows], f.index[el])
                np.testing.assert_allclose(snap["G"][rows], f.G[el], rtol=0, atol=0)
                np.testing.assert_allclose(snap["A"][rows], f.A[el], rtol=0, atol=0)
                np.testing.assert_array_equal(snap["F"][rows], atoms.get_forces()[f.index[el]])


def test_split_is_by_frame_and_contiguous(tmp_path, frames):
    path = tmp_path / "s.h5"
    plan = make_store(path, frames, test_fraction=0.34, seed=1)
    with FeatureStore(path) as store:
        test_ids, train_ids = store.frame_ids("test"), store.frame_ids("train")
        assert len(test_ids) == 2 and len(train_ids) == 4
        assert sorted(np.concatenate([test_ids, train_ids])) == list(range(6))
        np.testing.assert_array_equal(test_ids, np.flatnonzero(plan.test))
        for el in store.elements:
            train, test = store.snapshots(el, "train"), store.snapshots(el, "test")
            assert set(train["frame"]) == set(train_ids)
            assert set(test["frame"]) == set(test_ids)
            assert store.n_snapshots(el, "train") + store.n_snapshots(el, "test") == \
                store.n_snapshots(el)
            both = store.snapshots(el)
            np.testing.assert_array_equal(np.concatenate([train["G"], test["G"]]), both["G"])


def test_frames_round_trip_with_energy_and_forces(tmp_path, rng):
    frames = labelled_frames(rng, 3) + labelled_frames(rng, 1, energies=False)
    path = tmp_path / "s.h5"
    make_store(path, frames, test_fraction=0.0)
    with FeatureStore(path) as store:
        got = dict(store.frames())
        assert list(got) == [0, 1, 2, 3]
        for k, atoms in enumerate(frames):
            np.testing.assert_array_equal(got[k].positions, atoms.positions)
            np.testing.assert_array_equal(got[k].numbers, atoms.numbers)
            np.testing.assert_array_equal(got[k].cell.array, atoms.cell.array)
            np.testing.assert_array_equal(got[k].pbc, atoms.pbc)
            np.testing.assert_array_equal(got[k].get_forces(), atoms.get_forces())
        assert got[0].get_potential_energy() == frames[0].get_potential_energy()
        assert "energy" not in got[3].calc.results
        assert np.isnan(store.frame_arrays(3)["energy"])
        with pytest.raises(IndexError):
            store.frame(4)


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_the_split_once(tmp_path, rng, shuffle):
    path = tmp_path / "s.h5"
    make_store(path, labelled_frames(rng, 12), test_fraction=0.25)
    with FeatureStore(path) as store:
        with h5py.File(path, "r") as h5:
            assert h5["snapshots/O/G"].compression == "gzip"
        for split in ("train", "test"):
            full = store.snapshots("O", split)
            batches = list(store.batches("O", 7, split=split, shuffle=shuffle, seed=5,
                                         buffer_chunks=1))
            assert all(len(b["G"]) == 7 for b in batches[:-1]) and 0 < len(batches[-1]["G"]) <= 7
            got = {k: np.concatenate([b[k] for b in batches]) for k in full}
            key = np.lexsort((got["atom"], got["frame"]))
            ref = np.lexsort((full["atom"], full["frame"]))
            for k in full:
                np.testing.assert_array_equal(got[k][key], full[k][ref])
            order_changed = not np.array_equal(got["frame"], full["frame"])
            assert order_changed == shuffle
        dropped = list(store.batches("O", 7, drop_last=True))
        assert all(len(b["G"]) == 7 for b in dropped)


def test_shuffled_batches_depend_on_the_seed(tmp_path, rng):
    path = tmp_path / "s.h5"
    make_store(path, labelled_frames(rng, 8), test_fraction=0.0)
    with FeatureStore(path) as store:
        def order(seed):
            return np.concatenate([b["frame"] * 100 + b["atom"]
                                   for b in store.batches("O", 5, seed=seed)])
        np.testing.assert_array_equal(order(1), order(1))
        assert not np.array_equal(order(1), order(2))


def test_batches_read_chunk_by_chunk(tmp_path, rng, monkeypatch):
    """batches() never asks for more than a buffer of chunks at once."""
    path = tmp_path / "s.h5"
    make_store(path, labelled_frames(rng, 8), test_fraction=0.0)
    with FeatureStore(path) as store:
        monkeypatch.setattr(store, "chunk_rows", lambda el: 4)
        reads = []
        original = store._read
        monkeypatch.setattr(store, "_read",
                            lambda el, lo, hi: reads.append(hi - lo) or original(el, lo, hi))
        n = sum(len(b["G"]) for b in store.batches("O", 3, buffer_chunks=2))
        assert n == store.n_snapshots("O") > 8
        assert max(reads) <= 4


def test_sampled_and_chosen_snapshots(tmp_path, rng):
    frames = labelled_frames(rng, 6)
    chosen = [[1, 0, np.nan], [5, 11, 3.0]]
    path = tmp_path / "s.h5"
    make_store(path, frames, n_snapshots=5, seed=2, chosen=chosen, chosen_weight=7.0,
               test_fraction=0.2)
    with FeatureStore(path) as store:
        li = store.snapshots("Li")          # frame 1 atom 0 is Li in Li4O6P2 (sorted symbols)
        p = store.snapshots("P")            # frame 5 atom 11 is the last P
        assert frames[1][0].symbol == "Li" and frames[5][11].symbol == "P"
        assert len(li["G"]) in (5, 6) and len(p["G"]) in (5, 6)
        assert li["weight"][(li["frame"] == 1) & (li["atom"] == 0)].tolist() == [7.0]
        assert p["weight"][(p["frame"] == 5) & (p["atom"] == 11)].tolist() == [3.0]
        assert store.n_snapshots("O") == 5
        assert np.sum(li["weight"] != 1) == 1


def test_store_does_not_depend_on_block_size(tmp_path, frames):
    spec = FingerprintSpec.preset(SPEC)
    data = FrameData.from_atoms(frames)
    plan = plan_snapshots(data.numbers, data.first_atom, spec.elements, 0.3, 0, n_snapshots=7)
    for b in (1, 4, 100):
        featurize_to_store(tmp_path / f"b{b}.h5", spec, data, plan, {}, block_frames=b)
    ref = store_arrays(tmp_path / "b1.h5")
    for b in (4, 100):
        got = store_arrays(tmp_path / f"b{b}.h5")
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    for compression in ("lzf", "none"):
        featurize_to_store(tmp_path / f"{compression}.h5", spec, data, plan, {},
                           compression=compression)
    with FeatureStore(tmp_path / "b1.h5") as a:
        for other in ("b4", "lzf", "none"):
            with FeatureStore(tmp_path / f"{other}.h5") as b:
                assert a.content_sha256() == b.content_sha256()
    with h5py.File(tmp_path / "lzf.h5", "r") as h5:
        assert h5["snapshots/Li/G"].compression == "lzf"
    assert not checkpoint_dir(tmp_path / "b1.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1.h5", "b100.h5", "b4.h5", "lzf.h5",
                                                         "none.h5"]


def test_a_frame_that_cannot_be_featurized_leaves_nothing(tmp_path, rng):
    frames = labelled_frames(rng, 4)
    frames[2].positions[1] = frames[2].positions[0]          # overlapping atoms
    with pytest.raises(ValueError, match="frame 2.*overlap"):
        make_store(tmp_path / "s.h5", frames)
    assert list(tmp_path.iterdir()) == []


def test_opening_bad_stores(tmp_path, frames):
    with pytest.raises(StoreError, match="no such"):
        FeatureStore(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(StoreError, match="text.h5"):
        FeatureStore(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.attrs["format"] = "something-else"
    with pytest.raises(StoreError, match="not a dcf feature store"):
        FeatureStore(tmp_path / "other.h5")
    good = tmp_path / "good.h5"
    make_store(good, frames)
    raw = good.read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StoreError, match="cut.h5"):
        FeatureStore(tmp_path / "cut.h5")
    for attr, value, message in (("version", 99, "version 99"), ("complete", False, "incomplete"),
                                 ("spec_sha256", "0" * 64, "sha256")):
        bad = tmp_path / f"bad-{attr}.h5"
        bad.write_bytes(raw)
        with h5py.File(bad, "r+") as h5:
            h5.attrs[attr] = value
        with pytest.raises(StoreError, match=message):
            FeatureStore(bad)
    with FeatureStore(good) as store:
        with pytest.raises(KeyError, match="Ti"):
            store.snapshots("Ti")
        with pytest.raises(ValueError, match="split"):
            store.n_snapshots("Li", "validation")
        assert json.loads(json.dumps(store.provenance)) == store.provenance


@pytest.mark.parametrize("dtype, row", [("float64", (6, 3)), ("int64", ()), ("int32", ())])
def test_encoded_chunks_are_the_bytes_h5py_writes(tmp_path, dtype, row):
    """encode_chunk (any rank) gives HDF5's own shuffle + deflate bytes, edge chunk included."""
    import h5py

    from dcf.data.store import ChunkedDataset, encode_chunk

    rng = np.random.default_rng(0)
    data = (rng.normal(size=(150,) + row) * 1000).astype(dtype)
    d = ChunkedDataset("x", data.shape, dtype, 64)
    with h5py.File(tmp_path / "ref.h5", "w") as f:
        ds = f.create_dataset("x", data=data, chunks=(64,) + row, compression="gzip",
                              compression_opts=1, shuffle=True)
        for c in range(d.n_chunks):
            lo, hi = d.rows(c)
            _, stored = ds.id.read_direct_chunk((lo,) + (0,) * len(row))
            assert encode_chunk(data[lo:hi], d, "gzip", 1) == stored
