"""`dcf spec`: a fingerprint spec for new elements, following a preset's pattern; with
`--auto DATA`, plus covariant axes at the neighbor shells of the data."""
from __future__ import annotations

import json

from dcf.cli._frames import add_format_arguments, read_input
from dcf.cli._paths import refuse_overwriting_inputs
from dcf.files import write_atomic

HELP = "write a fingerprint spec for other elements, following a preset's pattern"


def add_arguments(p) -> None:
    p.add_argument("--elements", default=None,
                   help="comma-separated symbols, e.g. Li,Ge,P,S (required without --auto; "
                        "with it, default: the data's elements by atomic number)")
    p.add_argument("--auto", default=None, metavar="DATA",
                   help="add one A1 axis per neighbor shell of each (center, neighbor) element "
                        "pair, at the peaks of the pair distances of the frames in DATA (any "
                        "format `dcf featurize` reads), as the paper tuned Table S2's O axes")
    p.add_argument("--shells", type=int, default=2,
                   help="with --auto: shells per element pair (default 2)")
    p.add_argument("--index", default=":", help="with --auto: frames of DATA to use (default all)")
    add_format_arguments(p)
    p.add_argument("--like", default="mailoa2019-S4", help="preset name or spec file")
    p.add_argument("--name", help="name stored in the spec")
    p.add_argument("--out", required=True, help="output JSON file")


def run(args) -> int:
    from dcf.descriptors.spec import FingerprintSpec
    inputs = [("--like", args.like)] + ([("--auto", args.auto)] if args.auto else [])
    refuse_overwriting_inputs(inputs, [("--out", args.out)])
    base = FingerprintSpec.resolve(args.like)
    elements = [e.strip() for e in args.elements.split(",") if e.strip()] \
        if args.elements else None
    if args.auto:
        from dcf.descriptors.auto_spec import auto_spec
        frames = read_input("spec", args.auto, args.index, args)
        try:
            spec, shells = auto_spec(frames, base, elements, args.shells, name=args.name or "")
        except ValueError as err:
            raise SystemExit(f"dcf spec: {args.auto}: {err}") from None
        print(f"{len(frames)} frame(s) of {args.auto}: {len(shells)} neighbor shell(s)")
        for sh in shells:
            print(f"  {sh.center}-{sh.neighbor}: Rs {sh.Rs:.2f} A, half width {sh.hwhm:.2f} A "
                  f"-> eta {sh.eta:g} A^-2 ({sh.count:.1f} neighbors per {sh.center})")
        dropped = []
    else:
        if elements is None:
            raise SystemExit("dcf spec: give --elements (or --auto DATA)")
        spec, dropped = base.like(elements, name=args.name or "")
    out = write_atomic(args.out, lambda tmp: spec.save(tmp))
    for rule in dropped:
        print(f"note: dropped rule {json.dumps(rule)} (names elements not in {elements})")
    for el in spec.elements:
        g, a = spec.n_features(el)
        print(f"{el:>3}: {g} G, {a} A vectors")
    print(f"wrote {out}")
    return 0
