"""Reaction extraction on constructed trajectories with known events."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from dcf.analysis.reactions import (HMM, bonds, find_reactions, molecule_presence, presence_changes,
                           rare_event_occurrence, reaction_snapshots, viterbi)

BOX = 10.0


def viterbi_reference(obs, hmm):
    """Exhaustive search over all hidden paths of a short series."""
    def logp(path):
        lp = np.log(hmm.p_init if path[0] else 1 - hmm.p_init)
        for t, (s, o) in enumerate(zip(path, obs)):
            if t:
                lp += np.log(hmm.p_change if s != path[t - 1] else 1 - hmm.p_change)
            lp += np.log(hmm.p_match if s == o else 1 - hmm.p_match)
        return lp
    return np.array(max(itertools.product([0, 1], repeat=len(obs)), key=logp), dtype=bool)


def test_viterbi_equals_exhaustive_search(rng):
    hmm = HMM(p_change=0.05, p_match=0.7, p_init=0.3)
    obs = rng.random((40, 9)) < 0.5
    decoded = viterbi(obs, hmm)
    for o, d in zip(obs, decoded):
        np.testing.assert_array_equal(d, viterbi_reference(o, hmm))


def test_viterbi_removes_short_flickers_and_keeps_real_switches():
    obs = np.zeros((3, 200), dtype=bool)
    obs[0, :] = True
    obs[0, 50] = False                   # one-frame dropout
    obs[1, 120] = True                   # one-frame spurious molecule
    obs[2, 100:] = True                  # real appearance
    states = viterbi(obs)
    assert states[0].all() and not states[1].any()
    np.testing.assert_array_equal(states[2], obs[2])


def test_bad_hmm_parameters_are_refused():
    with pytest.raises(ValueError, match="p_match must exceed 0.5"):
        HMM(p_match=0.4)
    with pytest.raises(ValueError, match="p_change"):
        HMM(p_change=0.0)


def h2_f2_trajectory(rng, n_frames=240, react_at=120, flicker_at=60, contact=range(20, 35),
                     noise=0.02):
    """H2 + F2 -> 2 HF by interpolation, straddling the periodic boundary, with thermal noise,
    a one-frame H-F contact at `flicker_at`, a 15-frame spectator HF dissociation over
    `contact` (longer than max_lag, shorter than the HMM lets through), and otherwise a
    spectator HF that never reacts.

    Atoms: 0 H, 1 H, 2 F, 3 F (reacting), 4 H, 5 F (spectator).
    """
    before = np.array([[0.0, 0.0, 0.0], [0.74, 0.0, 0.0],           # H2
                       [0.0, 3.0, 0.0], [1.42, 3.0, 0.0]])          # F2, 3 A away
    after = np.array([[-0.6, 1.0, 0.0], [2.0, 1.0, 0.0],            # H0-F2 and H1-F3 at 0.92 A
                      [-0.6, 1.92, 0.0], [2.0, 1.92, 0.0]])
    spectator = np.array([[5.0, 5.0, 5.0], [5.0, 5.0, 5.92]])
    frames = []
    for t in range(n_frames):
        w = np.clip((t - (react_at - 4)) / 8.0, 0.0, 1.0)           # 8-frame transition
        pos = np.vstack([(1 - w) * before + w * after, spectator])
        if t == flicker_at:
            pos[2:4] = pos[1] + [[0.0, 1.0, 0.0], [1.42, 1.0, 0.0]]  # F2 touches H1 for one frame
        if t in contact:
            pos[5, 2] += 1.0                                         # spectator HF stretched apart
        pos = pos + rng.normal(scale=noise, size=pos.shape)
        pos[:4] += [BOX - 0.3, BOX - 1.5, 2.0]                      # across the x and y boundaries
        atoms = Atoms("H2F2HF", positions=pos, cell=[BOX] * 3, pbc=True)
        atoms.wrap()
        frames.append(atoms)
    return frames


def test_bonds_cross_the_periodic_boundary():
    atoms = Atoms("HF", positions=[[0.2, 1, 1], [BOX - 0.72, 1, 1]], cell=[BOX] * 3, pbc=True)
    i, j = bonds(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)
    assert list(zip(i, j)) == [(0, 1)]
    atoms.pbc = False
    assert len(bonds(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)[0]) == 0


def test_finds_exactly_the_known_reaction(rng):
    frames = h2_f2_trajectory(rng)
    presence = molecule_presence(frames)
    assert presence.observed().any(axis=0).all()
    # the raw graph sees the flicker; the HMM must remove it
    flicker = [m for m in presence.molecules if len(m) == 4]
    assert flicker, "the constructed trajectory should contain an H2F2 contact"
    reactions, unbalanced = find_reactions(presence, presence_changes(presence), max_lag=10)
    assert unbalanced == 0
    assert len(reactions) == 1
    r = reactions[0]
    numbers = frames[0].numbers
    assert r.equation(numbers) == "F2 + H2 -> 2 HF"
    assert [m.tolist() for m in r.reactants] == [[0, 1], [2, 3]]
    assert sorted(m.tolist() for m in r.products) == [[0, 2], [1, 3]]
    assert 112 <= r.frame <= 128
    np.testing.assert_array_equal(r.atoms, [0, 1, 2, 3])

    # decoding that just follows the observations sees the 15-frame dissociation as reactions
    follow = HMM(p_change=0.4, p_match=0.99)
    noisy, _ = find_reactions(presence, presence_changes(presence, follow), max_lag=10)
    assert len(noisy) == 3 and noisy[0].equation(numbers) == "HF -> F + H"

    snaps = reaction_snapshots(reactions, len(frames), window=5)
    assert set(np.unique(snaps[:, 1])) == {0, 1, 2, 3}
    assert snaps[:, 0].min() == r.frames[0] - 5 and snaps[:, 0].max() == r.frames[1] + 5
    occ = rare_event_occurrence(snaps, numbers, len(frames))
    n_frames_window = r.frames[1] - r.frames[0] + 11
    assert occ["H"]["snapshots"] == 2 * n_frames_window
    assert occ["H"]["occurrence"] == pytest.approx(2 * n_frames_window / (3 * len(frames)))


def test_no_reaction_without_a_change(rng):
    frames = h2_f2_trajectory(rng, react_at=10_000)
    presence = molecule_presence(frames)
    assert find_reactions(presence, presence_changes(presence)) == ([], 0)


def test_changing_composition_is_refused(rng):
    frames = h2_f2_trajectory(rng, n_frames=3)
    frames[2] = frames[2][:5]
    with pytest.raises(ValueError, match="frame 2 has different atoms"):
        molecule_presence(frames)


def test_cli_writes_reactions_and_snapshots(tmp_path, rng):
    traj = tmp_path / "hf.extxyz"
    write(traj, h2_f2_trajectory(rng))
    out = tmp_path / "events.json"
    chosen = tmp_path / "chosen.txt"
    res = subprocess.run([sys.executable, "-m", "dcf", "reactions", str(traj), "--out", str(out),
                          "--window", "3", "--snapshots", str(chosen)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "F2 + H2 -> 2 HF" in res.stdout
    report = json.loads(out.read_text())
    assert len(report["reactions"]) == 1
    assert report["reactions"][0]["atoms"] == [0, 1, 2, 3]
    assert set(report["snapshots"]["atom"]) == {0, 1, 2, 3}
    assert report["occurrence"]["F"]["snapshots"] > 0
    from dcf.data.sampling import read_chosen
    rows = read_chosen(chosen)
    np.testing.assert_array_equal(rows[:, :2], np.stack([report["snapshots"]["frame"],
                                                         report["snapshots"]["atom"]], 1))

    bad = subprocess.run([sys.executable, "-m", "dcf", "reactions", str(traj), "--out",
                          str(tmp_path / "x.json"), "--p-match", "0.3"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "p_match must exceed 0.5" in bad.stderr
    assert not (tmp_path / "x.json").exists()
