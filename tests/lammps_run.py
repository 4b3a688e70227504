"""Worker of tests/test_lammps.py: DCF and B–P models in LAMMPS, serial or under mpiexec.

    [mpiexec -n K] python tests/lammps_run.py OUT.npz [--processors "2 1 1"] [--steps 100]

For each structure of `structures()` and each model of `models()`: forces (by atom ID),
B–P energy, per-atom energies and virial pressure tensor (bar: xx, yy, zz, xy, xz, yz)
after `run 0`, then the unwrapped
positions after `steps` Nose–Hoover NVT steps. Rank 0 writes OUT.npz.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from ase import Atoms

sys.path.insert(0, str(Path(__file__).parent))
from conftest import all_kinds_spec  # noqa: E402

from dcf.bench.costs import bp_model, table_s4_model  # noqa: E402
from dcf.dynamics import lammps as dl  # noqa: E402
from dcf.parallel import world  # noqa: E402

ELEMENTS = ["Li", "O", "P"]


def structures() -> dict:
    """A triclinic periodic Li-O-P cell smaller than 2 Rc (8 A for B–P) in every direction,
    and a thin one, 3.1 A thick, smaller than Rc (4 A)."""
    rng = np.random.default_rng(3)
    grid = (np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
            + 0.5) / 3
    tri = Atoms("Li8O12P4", scaled_positions=grid[:24] + rng.uniform(-0.04, 0.04, (24, 3)),
                cell=[[7.5, 0, 0], [1.2, 7.0, 0], [-0.8, 0.9, 6.8]], pbc=True)
    rng.shuffle(tri.numbers)
    flat = grid[grid[:, 2] < 0.34][:, :2]
    thin = Atoms("Li3O4P2", cell=[[6.2, 0, 0], [0.9, 5.8, 0], [0.4, -0.5, 3.1]], pbc=True,
                 scaled_positions=np.c_[flat, np.full(9, 0.5)] + rng.uniform(-0.05, 0.05, (9, 3)))
    rng.shuffle(thin.numbers)
    return {"triclinic": tri, "thin": thin}


def models() -> dict:
    from test_pairwise import random_pairwise
    spec = all_kinds_spec()
    return {"dcf": table_s4_model("covariant", spec=spec), "bp": bp_model(spec=spec),
            "pairwise": random_pairwise(spec, np.random.default_rng(5), r_pair=3.5)}


def run(atoms, model, processors, steps) -> dict:
    lmp = dl.new_lammps()
    dl.create_system(lmp, atoms, ELEMENTS, processors)
    coupling = dl.attach(lmp, model)
    lmp.commands_string("""
        compute eatom all pe/atom
        compute virial all pressure NULL virial
        thermo_style custom step pe c_virial[1]
        run 0""")
    coupling.check()
    n = len(atoms)
    out = {"F": np.array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3),
           "E": lmp.get_thermo("pe"),
           "P": np.array(lmp.numpy.extract_compute("virial", 0, 1)),
           "eatom": np.array(lmp.gather("c_eatom", 1, 1))}
    lmp.commands_string(f"""
        velocity all create 1500 4928 dist gaussian loop geom
        fix nvt all nvt temp 1500 1500 0.05
        timestep 0.0005
        run {steps}""")
    coupling.check()
    x = np.array(lmp.gather_atoms("x", 1, 3)).reshape(n, 3)
    image = np.array(lmp.gather_atoms("image", 0, 3)).reshape(n, 3)
    out["X"] = x + image @ atoms.cell.array
    out["ranks"] = coupling.comm.size
    lmp.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--processors", default=None)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    results = {}
    for name, atoms in structures().items():
        for kind, model in models().items():
            for key, value in run(atoms, model, args.processors, args.steps).items():
                results[f"{name}/{kind}/{key}"] = value
    if world().rank == 0:
        np.savez(args.out, **results)


if __name__ == "__main__":
    main()
