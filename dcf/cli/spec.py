"""`dcf spec`: a fingerprint spec for new elements, following a preset's pattern."""
from __future__ import annotations

import json

from dcf.cli._paths import refuse_overwriting_inputs
from dcf.files import write_atomic

HELP = "write a fingerprint spec for other elements, following a preset's pattern"


def add_arguments(p) -> None:
    p.add_argument("--elements", required=True, help="comma-separated symbols, e.g. Li,Ge,P,S")
    p.add_argument("--like", default="mailoa2019-S4", help="preset name or spec file")
    p.add_argument("--name", help="name stored in the spec")
    p.add_argument("--out", required=True, help="output JSON file")


def run(args) -> int:
    from dcf.descriptors.spec import FingerprintSpec
    refuse_overwriting_inputs([("--like", args.like)], [("--out", args.out)])
    base = FingerprintSpec.resolve(args.like)
    elements = [e.strip() for e in args.elements.split(",") if e.strip()]
    spec, dropped = base.like(elements, name=args.name or "")
    out = write_atomic(args.out, lambda tmp: spec.save(tmp))
    for rule in dropped:
        print(f"note: dropped rule {json.dumps(rule)} (names elements not in {elements})")
    for el in spec.elements:
        g, a = spec.n_features(el)
        print(f"{el:>3}: {g} G, {a} A vectors")
    print(f"wrote {out}")
    return 0
