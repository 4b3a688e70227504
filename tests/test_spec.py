"""Fingerprint spec format: expansion, validation, round trip, transfer to new elements."""
import json

import pytest

from dcf import FingerprintSpec, SpecError

BASE = {"format": "dcf-fingerprint-spec", "version": 1, "elements": ["Li", "O"], "cutoff": 5.0,
        "rules": [{"kind": "G2", "neighbors": "*", "eta": [0.1, 1.0], "Rs": 0.0}]}


def with_rule(**rule):
    data = json.loads(json.dumps(BASE))
    data["rules"].append(rule)
    return data


def test_expansion_order_and_pairs():
    spec = FingerprintSpec.from_dict(with_rule(kind="G4", neighbors="*", zeta=[1, 4],
                                               **{"lambda": [1, -1]}, eta=0.01))
    labels = [t.label() for t in spec.invariant_terms("Li")]
    assert labels[:2] == ["G2[Li](eta=0.1,Rs=0,Rc=5)", "G2[Li](eta=1,Rs=0,Rc=5)"]
    pairs = [t.neighbors for t in spec.invariant_terms("Li") if t.kind == "G4"]
    assert pairs == [("Li", "Li")] * 4 + [("Li", "O")] * 4 + [("O", "O")] * 4
    # an explicit pair is stored in the spec's element order, so O-Li means Li-O
    spec2 = FingerprintSpec.from_dict(with_rule(kind="G5", neighbors=["O-Li"], zeta=1,
                                                **{"lambda": 1}, eta=0.0))
    assert spec2.invariant_terms("O")[-1].neighbors == ("Li", "O")


@pytest.mark.parametrize("rule, message", [
    (dict(kind="G9", neighbors="*"), "unknown kind"),
    (dict(kind="G2", neighbors="*", eta=1.0), "missing parameter"),
    (dict(kind="G2", neighbors="*", eta=1.0, Rs=0, sigma=2), "unknown parameters"),
    (dict(kind="G2", neighbors=["Na"], eta=1.0, Rs=0), "not in 'elements'"),
    (dict(kind="G1", neighbors="*", Rc=0.0), "Rc must be > 0"),
    (dict(kind="G1", neighbors="*", Rc=-2.0), "Rc must be > 0"),
    (dict(kind="G1", neighbors="*", Rc=[]), "Rc is an empty list"),
    (dict(kind="G4", neighbors="*", zeta=0.5, eta=0.1, **{"lambda": 1}), "zeta must be >= 1"),
    (dict(kind="G4", neighbors="*", zeta=1, eta=0.1, **{"lambda": 0.5}), "lambda"),
    (dict(kind="G4", neighbors=["Li"], zeta=1, eta=0.1, **{"lambda": 1}), "2 element"),
    (dict(kind="G2", neighbors="*", eta="big", Rs=0), "must be a number"),
    (dict(kind="G2", neighbors="*", eta=0.1, Rs=0), "duplicate term"),
    (dict(kind="A1", centers=["Xx"], neighbors="*", eta=1, Rs=0), "not in 'elements'"),
])
def test_validation_errors(rule, message):
    with pytest.raises(SpecError, match=message):
        FingerprintSpec.from_dict(with_rule(**rule))


def test_document_level_errors(tmp_path):
    with pytest.raises(SpecError, match="unknown element"):
        FingerprintSpec.from_dict(dict(BASE, elements=["Li", "Qq"]))
    with pytest.raises(SpecError, match="version"):
        FingerprintSpec.from_dict(dict(BASE, version=99))
    with pytest.raises(SpecError, match="no fingerprint terms"):
        FingerprintSpec.from_dict(dict(BASE, rules=[{"kind": "G1", "centers": ["Li"]}]))
    with pytest.raises(SpecError, match="no Rc"):
        FingerprintSpec.from_dict({"elements": ["Li"], "rules": [{"kind": "G1"}]})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        FingerprintSpec.load(bad)
    with pytest.raises(SpecError, match="does not exist"):
        FingerprintSpec.load(tmp_path / "missing.json")
    with pytest.raises(SpecError, match="unknown preset"):
        FingerprintSpec.preset("mailoa2019-S9")


def test_round_trip_and_identity(tmp_path):
    spec = FingerprintSpec.preset("mailoa2019-S2")
    spec.save(tmp_path / "s.json")
    again = FingerprintSpec.load(tmp_path / "s.json")
    assert again == spec and again.fingerprint == spec.fingerprint
    assert FingerprintSpec.preset("mailoa2019-S4") != spec
    assert spec.element_cutoff("O") == 6.5 and spec.max_cutoff == 6.5


def test_like_follows_the_preset_pattern():
    s2 = FingerprintSpec.preset("mailoa2019-S2")
    spec, dropped = s2.like(["Li", "Ge", "P", "S"])
    # every wildcard rule over 4 elements: 4*12 G2, 10 pairs * 18 G4, 2 * 4 A1
    assert spec.n_features("Ge") == (48 + 180, 8)
    assert len(dropped) == 4 and all(r["centers"] == ["O"] for r in dropped)
    # explicit rules survive where their elements do
    spec_o, dropped_o = s2.like(["O", "P"])
    assert spec_o.n_features("O") == (2 * 12 + 3 * 18 + 16, 2 * 2 + 3)
    assert len(dropped_o) == 1
