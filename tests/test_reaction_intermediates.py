"""Reactions that take tens of frames: H2 + F2 -> 2 HF with the bonds breaking at frames 53-54
and HF forming at frame 65, its free atoms too short-lived for the HMM to keep. With the
default --max-lag the reaction is found; a change that stays unbalanced is explained."""
import json

import numpy as np
from ase import Atoms
from ase.io import write

from dcf.analysis.reactions import find_reactions, molecule_presence, presence_changes
from test_errors import cli  # noqa: F401 - the fixture


def h2_f2_trajectory(n_frames=120, break_h=53, break_f=54, form=65):
    """H2 + F2 -> 2 HF: H-H breaks at `break_h`, F-F at `break_f`, both HF form at `form`."""
    frames = []
    for t in range(n_frames):
        if t < form:
            h_gap, f_gap = (0.74 if t < break_h else 3.0), (1.42 if t < break_f else 3.6)
            pos = [[0, 0, 0], [h_gap, 0, 0], [0, 4.0, 0], [f_gap, 4.0, 0]]
        else:
            pos = [[0, 0, 0], [3.0, 0, 0], [0, 0.92, 0], [3.0, 0.92, 0]]
        frames.append(Atoms("H2F2", positions=np.array(pos, float) + 5.0, cell=[20, 20, 20]))
    return frames


def test_a_slow_reaction_through_free_atoms_is_one_reaction():
    presence = molecule_presence(h2_f2_trajectory())
    events = presence_changes(presence)
    assert sorted(events.frame.tolist()) == [53, 54, 65, 65]   # the free atoms are denoised away
    reactions, unbalanced = find_reactions(presence, events)     # default max_lag 10
    assert unbalanced == 0 and len(reactions) == 1
    r = reactions[0]
    assert r.equation([1, 1, 9, 9]) == "F2 + H2 -> 2 HF"
    assert r.frame == 65 and r.frames == (53, 65) and r.atoms.tolist() == [0, 1, 2, 3]


def test_a_lasting_product_does_not_join_the_next_reaction():
    """HF formed at 65 lasts 220 frames, then goes back the same way: two reactions."""
    frames = h2_f2_trajectory(200) + h2_f2_trajectory(150)[::-1]
    reactions, unbalanced = find_reactions(*(lambda p: (p, presence_changes(p)))(
        molecule_presence(frames)))
    assert unbalanced == 0
    assert [r.equation([1, 1, 9, 9]) for r in reactions] == ["F2 + H2 -> 2 HF",
                                                              "2 HF -> F2 + H2"]


def test_the_cli_finds_it_and_explains_what_it_drops(cli, tmp_path):  # noqa: F811
    write(tmp_path / "hf.extxyz", h2_f2_trajectory())
    res = cli("reactions", tmp_path / "hf.extxyz", "--out", tmp_path / "hf.json")
    assert res.returncode == 0, res.stderr
    assert "1 reaction(s)" in res.stdout and "F2 + H2 -> 2 HF" in res.stdout
    assert json.loads((tmp_path / "hf.json").read_text())["unbalanced"] == []

    # ends 21 frames after HF forms: too few for the HMM to keep it
    write(tmp_path / "cut.extxyz", h2_f2_trajectory(86))
    res = cli("reactions", tmp_path / "cut.extxyz", "--out", tmp_path / "cut.json")
    assert res.returncode == 0, res.stderr
    assert "0 reaction(s)" in res.stdout
    assert "note: 2 change(s) dropped whose reactant and product atoms differ: frames 53-53 " \
           "(atoms [0, 1]), frames 54-54 (atoms [2, 3])" in res.stdout
    assert "cut off by the start or end of the trajectory" in res.stdout
    report = json.loads((tmp_path / "cut.json").read_text())
    assert report["unbalanced_groups"] == 2
    assert report["unbalanced"][0] == {"frames": [53, 53], "reactant_atoms": [0, 1],
                                       "product_atoms": []}
