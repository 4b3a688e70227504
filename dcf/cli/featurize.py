"""`dcf featurize`: fingerprints (G, A) of structure files."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dcf.cli._common import write_atomic

HELP = "fingerprints (G, A) of structure files"


def add_arguments(p) -> None:
    p.add_argument("structures", nargs="+", help="files ase.io can read (extxyz, OUTCAR, ...)")
    p.add_argument("--spec", default="mailoa2019-S4", help="preset name or spec JSON file")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--index", default=":", help="frames to read, ase syntax (default ':')")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads (default 1)")


def run(args) -> int:
    from ase.io import read

    from dcf.fingerprints import Featurizer

    try:
        featurizer = Featurizer(args.spec, num_threads=args.threads)
    except ValueError as err:
        raise SystemExit(f"dcf featurize: {err}") from None
    spec = featurizer.spec
    out = Path(args.out)
    if out.suffix != ".npz":
        raise SystemExit(f"dcf featurize: --out must end in .npz (got {out}); "
                         f"the HDF5 feature store is not available yet")
    frames = []
    for path in args.structures:
        if not Path(path).exists():
            raise SystemExit(f"dcf featurize: {path} does not exist")
        try:
            selected = read(path, index=args.index)
        except Exception as err:       # ase raises many kinds for unreadable files
            raise SystemExit(f"dcf featurize: cannot read {path}: {err}") from None
        selected = [selected] if hasattr(selected, "get_chemical_symbols") else selected
        frames += [(path, k, a) for k, a in enumerate(selected)]
    if not frames:
        raise SystemExit(f"dcf featurize: --index {args.index} selects no frames")

    parts: dict[str, dict[str, list]] = {el: {"G": [], "A": [], "frame": [], "atom": []}
                                         for el in spec.elements}
    n_atoms = 0
    start = time.perf_counter()
    for frame_id, (path, k, atoms) in enumerate(frames):
        try:
            f = featurizer(atoms)
        except ValueError as err:
            raise SystemExit(f"dcf featurize: {path} frame {k}: {err}") from None
        n_atoms += len(atoms)
        for el in spec.elements:
            parts[el]["G"].append(f.G[el])
            parts[el]["A"].append(f.A[el])
            parts[el]["frame"].append(np.full(len(f.index[el]), frame_id))
            parts[el]["atom"].append(f.index[el])
    elapsed = time.perf_counter() - start

    arrays = {"spec": np.array(spec.to_json()), "spec_sha256": np.array(spec.fingerprint),
              "sources": np.array([f"{p}@{k}" for p, k, _ in frames])}
    for el in spec.elements:
        for key, chunks in parts[el].items():
            arrays[f"{key}/{el}"] = np.concatenate(chunks) if chunks else np.zeros(0)
    write_atomic(out, lambda tmp: np.savez_compressed(tmp, **arrays))

    print(f"spec {spec.name or args.spec}: max Rc {spec.max_cutoff:g} A")
    print(f"{len(frames)} frame(s), {n_atoms} atoms in {elapsed:.3f} s "
          f"({len(frames) / max(elapsed, 1e-12):.1f} frames/s, "
          f"{n_atoms / max(elapsed, 1e-12):.0f} atoms/s, {featurizer.num_threads} thread(s))")
    print(f"{'element':>7} {'atoms':>7} {'nG':>5} {'nA':>4} {'<|G|>':>10} {'<|A|>':>7}")
    for el in spec.elements:
        G, A = arrays[f"G/{el}"], arrays[f"A/{el}"]
        if not len(G):
            continue
        print(f"{el:>7} {len(G):>7} {G.shape[1]:>5} {A.shape[1]:>4} "
              f"{np.abs(G).mean():>10.4g} {np.linalg.norm(A, axis=-1).mean():>7.3f}")
    print(f"wrote {out}")
    return 0
