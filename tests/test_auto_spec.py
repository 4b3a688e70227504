"""`dcf spec --auto`: covariant axes at the data's neighbor shells."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from dcf import FingerprintSpec, featurize
from dcf.descriptors.auto_spec import auto_spec, find_shells, pair_distances

EMBEDDED = Path(__file__).parents[1] / "dcf" / "data" / "li4p2o7_xtb_3000K.extxyz"


def test_shells_of_a_known_distribution():
    """Two Gaussian shells at 1.5 A (sigma 0.05) and 2.6 A (sigma 0.1) and a uniform
    background: positions to the bin, widths to a few percent, counts per center."""
    rng = np.random.default_rng(0)
    n_centers = 1000
    d = np.concatenate([rng.normal(1.5, 0.05, 2 * n_centers), rng.normal(2.6, 0.1, 6 * n_centers),
                        rng.uniform(0.8, 4.0, 500)])
    shells = find_shells(d, n_centers, 4.0, 3, "A", "B")
    assert len(shells) == 2
    first, second = shells
    assert first.position == pytest.approx(1.5, abs=0.02)
    assert second.position == pytest.approx(2.6, abs=0.03)
    hwhm = np.sqrt(2 * np.log(2))          # of a unit Gaussian
    # the histogram is smoothed with a 0.04 A Gaussian: widths add in quadrature; g(r) = h/r^2
    assert first.hwhm == pytest.approx(hwhm * np.hypot(0.05, 0.04), rel=0.1)
    assert second.hwhm == pytest.approx(hwhm * np.hypot(0.1, 0.04), rel=0.12)
    # neighbors within the measured half width: 2 per center times the Gaussian's share
    assert first.count == pytest.approx(2 * math.erf(first.hwhm / 0.05 / np.sqrt(2)), rel=0.05)
    assert first.eta == pytest.approx(1 / (2 * (first.hwhm / hwhm) ** 2), rel=0.01)
    assert find_shells(np.zeros(0), 10, 4.0, 2) == []


def test_fcc_shells_are_at_the_lattice_distances():
    atoms = bulk("Cu", "fcc", a=3.6).repeat(3)
    atoms.rattle(0.02, seed=1)
    d = pair_distances([atoms], ["Cu"], 4.0)
    shells = find_shells(d[("Cu", "Cu")], float(d[("Cu", None)]), 4.0, 2, "Cu", "Cu")
    assert [round(s.position, 1) for s in shells] == [round(3.6 / np.sqrt(2), 1), 3.6]
    assert shells[0].count == pytest.approx(12, abs=1.5)


def test_auto_spec_is_valid_deterministic_and_adds_one_axis_per_shell():
    from ase.io import read
    frames = read(EMBEDDED, "::5")
    spec, shells = auto_spec(frames, "mailoa2019-S4")
    again, _ = auto_spec(read(EMBEDDED, "::5"), "mailoa2019-S4")
    assert spec.to_json() == again.to_json() and spec.fingerprint == again.fingerprint
    base = FingerprintSpec.preset("mailoa2019-S4")
    assert spec.elements == ("Li", "O", "P")           # by atomic number
    for el in spec.elements:
        mine = [s for s in shells if s.center == el]
        assert spec.n_features(el) == (base.n_features(el)[0], base.n_features(el)[1] + len(mine))
        for s in mine:
            assert any(t.kind == "A1" and t.neighbors == (s.neighbor,) and t["Rs"] == s.Rs
                       and t["eta"] == s.eta for t in spec.vector_terms(el))
    # the P-O bond of a phosphate: the first P-O shell near 1.5 A, narrow
    po = [s for s in shells if (s.center, s.neighbor) == ("P", "O")][0]
    assert 1.45 < po.position < 1.6 and po.eta > 10
    feats = featurize(frames[0], spec)
    assert feats.A["O"].shape[1] == spec.n_features("O")[1]
    # a loaded copy is the same spec
    assert FingerprintSpec.from_dict(spec.to_dict()).fingerprint == spec.fingerprint


def test_auto_spec_errors():
    with pytest.raises(ValueError, match="at least one frame"):
        auto_spec([], "mailoa2019-S4")
    with pytest.raises(ValueError, match="shells"):
        auto_spec([Atoms("Li2", positions=[[0, 0, 0], [2, 0, 0]])], "mailoa2019-S4", shells=0)


def test_cli(tmp_path):
    out = tmp_path / "auto.json"
    res = subprocess.run([sys.executable, "-m", "dcf", "spec", "--auto", str(EMBEDDED),
                          "--index", "::10", "--out", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "P-O: Rs 1.5" in res.stdout and "wrote" in res.stdout
    assert FingerprintSpec.load(out).elements == ("Li", "O", "P")
    res = subprocess.run([sys.executable, "-m", "dcf", "spec", "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "--elements" in res.stderr
