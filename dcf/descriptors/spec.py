"""Fingerprint specifications: which G and A terms each central element gets.

A spec is declarative JSON (see docs/fingerprint-spec.md)::

    {"format": "dcf-fingerprint-spec", "version": 1, "name": "my-system",
     "elements": ["Li", "O", "P"], "cutoff": 6.5,
     "rules": [
        {"centers": "*", "kind": "G2", "neighbors": "*", "eta": [0.05, 4], "Rs": 0},
        {"centers": "*", "kind": "G4", "neighbors": "*", "zeta": [1, 4], "lambda": [1, -1],
         "eta": 0.005},
        {"centers": ["O"], "kind": "A1", "neighbors": ["P"], "eta": 100, "Rs": [1.6, 1.8]}]}

Each rule expands, for every center, over its neighbors ("*" = every element, or every
unordered element pair for the angular kinds G4/G5) and over the Cartesian product of
its list-valued parameters (in the kind's parameter order, the last varying fastest).
Column order of G and A follows the expansion order. ``Rc`` (Angstrom) defaults to the
spec's ``cutoff``.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ase.data import atomic_numbers

from dcf.errors import DCFError

FORMAT = "dcf-fingerprint-spec"
VERSION = 1


@dataclass(frozen=True)
class Kind:
    params: tuple[str, ...]          # required parameters besides Rc
    optional: dict                   # optional parameter -> default
    n_neighbors: int                 # 1: one neighbor element; 2: an element pair
    vector: bool                     # covariant (A) rather than invariant (G)


KINDS = {
    "G1": Kind((), {}, 1, False),
    "G2": Kind(("eta", "Rs"), {}, 1, False),
    "G3": Kind(("kappa",), {}, 1, False),
    "G4": Kind(("zeta", "lambda", "eta"), {}, 2, False),
    "G5": Kind(("zeta", "lambda", "eta"), {}, 2, False),
    "V1": Kind(("eta", "Rs"), {}, 1, True),
    "A1": Kind(("eta", "Rs"), {"delta": 0.0}, 1, True),
}


class SpecError(DCFError, ValueError):
    """An invalid fingerprint spec, or a structure the spec cannot describe."""


@dataclass(frozen=True)
class Term:
    """One fingerprint term of a central element.

    kind: "G1".."G5" (invariant) or "V1"/"A1" (covariant vector).
    neighbors: one element symbol, or two for G4/G5 (an unordered pair).
    Rc: cutoff radius, Angstrom. params: (name, value) pairs in the kind's order.
    """

    kind: str
    neighbors: tuple[str, ...]
    Rc: float
    params: tuple[tuple[str, float], ...]

    def __getitem__(self, name: str) -> float:
        return dict(self.params)[name]

    @property
    def vector(self) -> bool:
        return KINDS[self.kind].vector

    def to_dict(self) -> dict:
        return {"kind": self.kind, "neighbors": list(self.neighbors), "Rc": self.Rc,
                **dict(self.params)}

    def label(self) -> str:
        ps = ",".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.kind}[{'-'.join(self.neighbors)}]({ps},Rc={self.Rc:g})"


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise SpecError(f"{what} must be finite, got {value!r}")
    return value


class FingerprintSpec:
    """Per-central-element lists of fingerprint terms, built from declarative rules.

    Use ``FingerprintSpec.preset(name)``, ``FingerprintSpec.load(path)`` or
    ``FingerprintSpec.from_dict(data)``. ``spec.terms[el]`` lists the expanded terms;
    ``spec.invariant_terms(el)`` are the columns of G, ``spec.vector_terms(el)`` the
    rows of A.
    """

    def __init__(self, elements, rules, cutoff: float | None = None, name: str = ""):
        self.name = str(name)
        self.elements = tuple(elements)
        self.cutoff = None if cutoff is None else _number(cutoff, "cutoff")
        self.rules = [dict(r) for r in rules]
        self._validate_elements()
        self.terms = self._expand()

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, source: str = "spec") -> "FingerprintSpec":
        if not isinstance(data, dict):
            raise SpecError(f"{source}: a fingerprint spec must be a JSON object")
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise SpecError(f"{source}: format is {fmt!r}, expected {FORMAT!r}")
        version = data.get("version", VERSION)
        if version != VERSION:
            raise SpecError(f"{source}: spec version {version!r} is not supported "
                            f"(this dcf reads version {VERSION})")
        unknown = set(data) - {"format", "version", "name", "elements", "cutoff", "rules",
                               "description"}
        if unknown:
            raise SpecError(f"{source}: unknown keys {sorted(unknown)}")
        for key in ("elements", "rules"):
            if key not in data:
                raise SpecError(f"{source}: missing {key!r}")
        try:
            return cls(data["elements"], data["rules"], data.get("cutoff"), data.get("name", ""))
        except SpecError as err:
            raise SpecError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path) -> "FingerprintSpec":
        """Read a spec from a JSON file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SpecError(f"fingerprint spec file {str(path)!r} does not exist") from None
        except json.JSONDecodeError as err:
            raise SpecError(f"{path}: not valid JSON ({err})") from None
        except OSError as err:
            raise SpecError(f"cannot read fingerprint spec {str(path)!r}: {err}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def presets(cls) -> list[str]:
        """Names of the shipped presets (the paper's Tables S1-S4)."""
        folder = resources.files("dcf.descriptors") / "presets"
        return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))

    @classmethod
    def preset(cls, name: str) -> "FingerprintSpec":
        """A shipped preset, e.g. ``"mailoa2019-S4"``."""
        if name not in cls.presets():
            raise SpecError(f"unknown preset {name!r}; available: {', '.join(cls.presets())}")
        text = (resources.files("dcf.descriptors") / "presets" / f"{name}.json").read_text()
        return cls.from_dict(json.loads(text), source=f"preset {name}")

    @classmethod
    def resolve(cls, name_or_path) -> "FingerprintSpec":
        """A preset name or the path of a JSON spec file."""
        if isinstance(name_or_path, FingerprintSpec):
            return name_or_path
        if str(name_or_path) in cls.presets():
            return cls.preset(str(name_or_path))
        if Path(name_or_path).is_file():
            return cls.load(name_or_path)
        raise SpecError(f"{str(name_or_path)!r} is neither a preset "
                        f"({', '.join(cls.presets())}) nor an existing spec file")

    def like(self, elements, name: str = "") -> tuple["FingerprintSpec", list[dict]]:
        """The same rules over other `elements`: wildcards expand over the new elements,
        explicit centers/neighbors are kept where they are among them.

        Returns (spec, dropped_rules): rules left with no center or no neighbor.
        """
        elements = tuple(elements)
        kept, dropped = [], []
        for rule in self.rules:
            new = dict(rule)
            if rule.get("centers", "*") != "*":
                new["centers"] = [c for c in _as_list(rule["centers"]) if c in elements]
            if rule.get("neighbors", "*") != "*":
                new["neighbors"] = [nb for nb in _as_list(rule["neighbors"])
                                    if all(e in elements for e in _split_pair(nb))]
            if new.get("centers") == [] or new.get("neighbors") == []:
                dropped.append(rule)
            else:
                kept.append(new)
        spec = FingerprintSpec(elements, kept, self.cutoff,
                               name or f"{'-'.join(elements)}-like-{self.name}")
        return spec, dropped

    # ---- queries ------------------------------------------------------------------
    def invariant_terms(self, element: str) -> tuple[Term, ...]:
        return tuple(t for t in self.terms[element] if not t.vector)

    def vector_terms(self, element: str) -> tuple[Term, ...]:
        return tuple(t for t in self.terms[element] if t.vector)

    def n_features(self, element: str) -> tuple[int, int]:
        """(number of G columns, number of A vectors) of `element`."""
        return len(self.invariant_terms(element)), len(self.vector_terms(element))

    def element_cutoff(self, element: str) -> float:
        """The largest Rc among `element`'s terms, Angstrom."""
        return max(t.Rc for t in self.terms[element])

    @property
    def max_cutoff(self) -> float:
        return max(self.element_cutoff(el) for el in self.elements)

    def check_symbols(self, symbols, source: str = "structure") -> None:
        """Raise SpecError if `symbols` contain an element the spec lacks."""
        missing = sorted(set(symbols) - set(self.elements))
        if missing:
            raise SpecError(f"{source} contains {', '.join(missing)}, which the fingerprint spec "
                            f"{self.name or ''} does not cover (elements: "
                            f"{', '.join(self.elements)})")

    def to_dict(self) -> dict:
        data = {"format": FORMAT, "version": VERSION, "name": self.name,
                "elements": list(self.elements)}
        if self.cutoff is not None:
            data["cutoff"] = self.cutoff
        data["rules"] = self.rules
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path) -> None:
        """Write the spec as JSON (atomically: a temporary name, then renamed)."""
        from dcf.files import write_atomic

        write_atomic(path, lambda tmp: tmp.write_text(self.to_json() + "\n"))

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the expanded terms: equal for specs that compute the same features."""
        canon = {el: [t.to_dict() for t in self.terms[el]] for el in self.elements}
        text = json.dumps({"elements": self.elements, "terms": canon}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def __eq__(self, other) -> bool:
        return isinstance(other, FingerprintSpec) and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{el}: {g} G + {a} A" for el in self.elements
                          for g, a in [self.n_features(el)])
        return f"FingerprintSpec({self.name!r}; {sizes})"

    # ---- expansion and validation -------------------------------------------------
    def _validate_elements(self) -> None:
        if not self.elements:
            raise SpecError("'elements' is empty")
        for el in self.elements:
            if el not in atomic_numbers or el == "X":
                raise SpecError(f"unknown element {el!r} in 'elements'")
        if len(set(self.elements)) != len(self.elements):
            raise SpecError(f"'elements' lists an element twice: {list(self.elements)}")
        if not isinstance(self.rules, list) or not self.rules:
            raise SpecError("'rules' must be a non-empty list")

    def _expand(self) -> dict[str, tuple[Term, ...]]:
        terms: dict[str, list[Term]] = {el: [] for el in self.elements}
        for n, rule in enumerate(self.rules):
            where = f"rule {n} ({rule.get('kind', '?')})"
            for center, term in self._expand_rule(rule, where):
                if term in terms[center]:
                    raise SpecError(f"{where}: duplicate term {term.label()} for center {center}")
                terms[center].append(term)
        for el, ts in terms.items():
            if not ts:
                raise SpecError(f"element {el} has no fingerprint terms")
        return {el: tuple(ts) for el, ts in terms.items()}

    def _expand_rule(self, rule: dict, where: str):
        if not isinstance(rule, dict):
            raise SpecError(f"{where}: a rule must be a JSON object")
        kind_name = rule.get("kind")
        if kind_name not in KINDS:
            raise SpecError(f"{where}: unknown kind {kind_name!r}; known: {', '.join(KINDS)}")
        kind = KINDS[kind_name]
        allowed = {"kind", "centers", "neighbors", "Rc", *kind.params, *kind.optional}
        unknown = set(rule) - allowed
        if unknown:
            raise SpecError(f"{where}: unknown parameters {sorted(unknown)} for {kind_name} "
                            f"(takes {', '.join(kind.params + tuple(kind.optional)) or 'none'}"
                            f" and Rc)")
        missing = [p for p in kind.params if p not in rule]
        if missing:
            raise SpecError(f"{where}: missing parameter(s) {', '.join(missing)} for {kind_name}")
        centers = self._elements_of(rule.get("centers", "*"), where, "centers")
        neighbors = self._neighbors_of(rule.get("neighbors", "*"), kind, where)
        if "Rc" not in rule and self.cutoff is None:
            raise SpecError(f"{where}: no Rc and the spec has no default 'cutoff'")
        rcs = [_number(v, f"{where}: Rc") for v in _as_list(rule.get("Rc", self.cutoff))]
        if not rcs:
            raise SpecError(f"{where}: Rc is an empty list")
        for rc in rcs:
            if rc <= 0:
                raise SpecError(f"{where}: Rc must be > 0, got {rc}")
        names = kind.params + tuple(k for k in kind.optional if k in rule)
        values = []
        for p in names:
            vals = [_number(v, f"{where}: {p}") for v in _as_list(rule[p])]
            if not vals:
                raise SpecError(f"{where}: {p} is an empty list")
            for v in vals:
                self._check_param(kind_name, p, v, where)
            values.append(vals)
        for center in centers:
            for nb in neighbors:
                for rc in rcs:
                    for combo in itertools.product(*values):
                        yield center, Term(kind_name, nb, rc, tuple(zip(names, combo)))

    def _elements_of(self, value, where: str, key: str) -> list[str]:
        if value == "*":
            return list(self.elements)
        out = _as_list(value)
        for el in out:
            if el not in self.elements:
                raise SpecError(f"{where}: {key} names {el!r}, which is not in 'elements' "
                                f"({', '.join(self.elements)})")
        if not out:
            raise SpecError(f"{where}: {key} is empty")
        return out

    def _neighbors_of(self, value, kind: Kind, where: str) -> list[tuple[str, ...]]:
        if value == "*":
            if kind.n_neighbors == 1:
                return [(el,) for el in self.elements]
            return list(itertools.combinations_with_replacement(self.elements, 2))
        out = []
        for entry in _as_list(value):
            els = _split_pair(entry)
            if len(els) != kind.n_neighbors:
                raise SpecError(f"{where}: neighbor entry {entry!r} must name "
                                f"{kind.n_neighbors} element(s)")
            self._elements_of(list(els), where, "neighbors")
            if len(els) == 2:   # canonical order of an unordered pair
                els = tuple(sorted(els, key=self.elements.index))
            out.append(tuple(els))
        if not out:
            raise SpecError(f"{where}: neighbors is empty")
        return out

    @staticmethod
    def _check_param(kind: str, name: str, value: float, where: str) -> None:
        if name == "eta" and value < 0:
            raise SpecError(f"{where}: eta must be >= 0, got {value}")
        if name == "zeta" and value < 1:
            raise SpecError(f"{where}: zeta must be >= 1, got {value}")
        if name == "lambda" and value not in (1.0, -1.0):
            raise SpecError(f"{where}: lambda must be +1 or -1, got {value}")
        if name == "delta" and value < 0:
            raise SpecError(f"{where}: delta must be >= 0, got {value}")


def _split_pair(entry) -> tuple[str, ...]:
    if isinstance(entry, str):
        return tuple(entry.split("-"))
    return tuple(entry)


def invariant_spec(spec: FingerprintSpec) -> FingerprintSpec:
    """`spec` without its covariant (V1, A1) rules: the same G columns in the same order, and
    often a shorter neighbor cutoff. B–P and the pairwise DCF head need only G, so they featurize
    with this."""
    rules = [r for r in spec.rules if not KINDS[str(r["kind"]).upper()].vector]
    return FingerprintSpec(spec.elements, rules, spec.cutoff, f"{spec.name} (G only)")
