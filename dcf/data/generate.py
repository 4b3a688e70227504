"""Reference data from an ASE calculator: thermostatted molecular dynamics, frames with energies
and forces (the training data of a force field).

``structure(name, seed)`` builds a starting structure: "li4p2o7" (two formula units of
Li4P2O7, 26 atoms: two pyrophosphate P2O7 groups and eight Li in a periodic cell at the
crystal's density, the chemistry of the paper's system B), "system-b" (the paper's 208-atom
random packing), "cu3au" (a 32-atom fcc Cu-Au random alloy for EMT), or any file ase.io reads.
``calculator(name)`` gives ASE's EMT ("emt") or GFN1-xTB through tblite ("xtb").
``run_md(...)`` relaxes briefly, then runs Langevin MD and yields labelled frames.
Units: Angstrom, eV, fs, K.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dcf.rotations import random_rotation

# Li4P2O7: 201.8 g/mol, 2.33 g/cm^3 (triclinic P-1, Z = 2, V ~ 288 A^3): 143.9 A^3 per unit
LI4P2O7_VOLUME_PER_UNIT = 143.9
P_O_BRIDGE, P_O_TERMINAL, P_O_P_ANGLE = 1.60, 1.52, 130.0     # Angstrom, degrees
STRUCTURES = ("li4p2o7", "system-b", "cu3au")
CALCULATORS = ("emt", "xtb")


def pyrophosphate() -> np.ndarray:
    """Positions (9, 3) of a P2O7 group: P, P, bridging O, then 3 + 3 terminal O, centred.

    Corner-sharing PO4 tetrahedra: P-O(bridge) 1.60 A, P-O(terminal) 1.52 A, P-O-P 130 deg."""
    half = np.radians(P_O_P_ANGLE) / 2
    bridge = np.zeros(3)
    ps = [P_O_BRIDGE * np.array([s * np.sin(half), -np.cos(half), 0.0]) for s in (-1, 1)]
    pos = [ps[0], ps[1], bridge]
    for p in ps:
        u = (bridge - p) / np.linalg.norm(bridge - p)
        e1 = np.cross(u, [0.0, 0.0, 1.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        for phi in np.radians([0.0, 120.0, 240.0]):    # the other three tetrahedral directions
            d = -u / 3 + np.sqrt(8 / 9) * (np.cos(phi) * e1 + np.sin(phi) * e2)
            pos.append(p + P_O_TERMINAL * d)
    pos = np.array(pos)
    return pos - pos.mean(axis=0)


def _min_distance(a, b, cell) -> float:
    """Smallest minimum-image distance between point sets a (n, 3) and b (m, 3), cubic cell."""
    if len(a) == 0 or len(b) == 0:
        return np.inf
    d = a[:, None, :] - b[None, :, :]
    d -= cell * np.round(d / cell)
    return float(np.sqrt((d ** 2).sum(-1)).min())


def li4p2o7(formula_units: int = 2, seed: int = 0, min_distance: float = 1.8,
            max_tries: int = 100_000):
    """Li4P2O7 x `formula_units` in a cubic periodic cell at 2.33 g/cm^3: P2O7 groups at random
    orientations, then Li placed at random >= `min_distance` A from every atom placed so far."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    side = (LI4P2O7_VOLUME_PER_UNIT * formula_units) ** (1 / 3)
    cell = np.full(3, side)
    unit = pyrophosphate()
    symbols, positions = [], np.zeros((0, 3))
    todo = [("P2O7", unit)] * formula_units + [("Li", np.zeros((1, 3)))] * (4 * formula_units)
    for tries in range(max_tries):
        if not todo:
            break
        name, group = todo[0]
        trial = group @ random_rotation(rng).T + rng.uniform(size=3) * cell
        if _min_distance(trial, positions, cell) >= min_distance:
            positions = np.vstack([positions, trial])
            symbols += ["P", "P"] + ["O"] * 7 if name == "P2O7" else ["Li"]
            todo.pop(0)
    if todo:
        raise RuntimeError(f"could not pack {formula_units} Li4P2O7 units in a {side:.2f} A cell")
    atoms = Atoms(symbols, positions=positions, cell=np.diag(cell), pbc=True)
    atoms.wrap()
    return atoms


def cu3au(seed: int = 0):
    """A 2x2x2 conventional fcc supercell (32 atoms, a = 3.75 A) with 8 random Au, 24 Cu."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(2)
    au = np.random.default_rng(seed).choice(len(atoms), 8, replace=False)
    symbols = atoms.get_chemical_symbols()
    for i in au:
        symbols[i] = "Au"
    atoms.set_chemical_symbols(symbols)
    return atoms


def structure(name: str, seed: int = 0):
    """A built-in starting structure (see STRUCTURES) or the last frame of a file."""
    from dcf.data.structures import system_b

    if name == "li4p2o7":
        return li4p2o7(2, seed)
    if name == "system-b":
        return system_b(1, seed)
    if name == "cu3au":
        return cu3au(seed)
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"structure {name!r} is neither a built-in ({', '.join(STRUCTURES)}) "
                         f"nor a file")
    from ase.io import read

    try:
        return read(path, index=-1)
    except Exception as err:       # ase raises many kinds for unreadable files
        raise ValueError(f"cannot read structure {path}: {err}") from None


def calculator(name: str, **options):
    """An ASE calculator: "emt" (ase.calculators.emt.EMT) or "xtb" (GFN1-xTB via tblite;
    options go to tblite.ase.TBLite, e.g. electronic_temperature in K)."""
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if name == "xtb":
        try:
            from tblite.ase import TBLite
        except ImportError:
            raise ValueError("--calculator xtb needs tblite: pip install tblite "
                             "(or pip install 'dcf-forces[xtb]')") from None
        return TBLite(method="GFN1-xTB", verbosity=0, **options)
    raise ValueError(f"unknown calculator {name!r} (choose from {', '.join(CALCULATORS)})")


def check_supported(atoms, calc_name: str) -> None:
    """EMT knows few elements: refuse others with a clear message before running."""
    if calc_name == "emt":
        from ase.calculators.emt import parameters

        unknown = sorted(set(atoms.get_chemical_symbols()) - set(parameters))
        if unknown:
            raise ValueError(f"EMT has no parameters for {', '.join(unknown)} "
                             f"(it knows {', '.join(sorted(parameters))}); use --calculator xtb")


def labelled(atoms, info: dict):
    """A copy of `atoms` with its energy (eV) and forces (eV/A) in a SinglePointCalculator."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frame = atoms.copy()
    frame.set_constraint()
    frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                       forces=atoms.get_forces(apply_constraint=False))
    frame.info.update(info)
    return frame


def run_md(atoms, calc, temperature: float, steps: int, timestep: float = 1.0,
           interval: int = 10, friction: float = 0.02, relax_steps: int = 50,
           equilibration: int = 0, seed: int = 0, info: dict | None = None):
    """Yield labelled frames of Langevin MD (NVT) at `temperature` K.

    First up to `relax_steps` FIRE steps (fmax 0.2 eV/A) remove bad contacts of a built
    structure; then velocities from Maxwell-Boltzmann at `temperature`, `equilibration` steps
    unrecorded, and `steps` recorded MD steps of `timestep` fs, one frame every `interval`
    steps (steps // interval frames). friction in 1/fs. Frames carry info: step, time_fs,
    temperature_K (instantaneous) and `info`.
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:                      # ase < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    from ase.optimize import FIRE

    if steps < interval or interval < 1:
        raise ValueError(f"--steps ({steps}) must be at least --interval ({interval}) >= 1")
    if temperature <= 0 or timestep <= 0:
        raise ValueError("temperature and timestep must be positive")
    atoms = atoms.copy()
    atoms.calc = calc
    if relax_steps > 0:
        FIRE(atoms, logfile=None).run(fmax=0.2, steps=relax_steps)
    rng = np.random.default_rng(seed)
    atoms.set_constraint(FixCom())          # no drift; the thermostat then samples NVT exactly
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature,
                   friction=friction / units.fs, fixcm=False, rng=rng)
    if equilibration:
        dyn.run(equilibration)
    for block in range(steps // interval):
        dyn.run(interval)
        step = (block + 1) * interval
        yield labelled(atoms, {**(info or {}), "step": step, "time_fs": step * timestep,
                               "temperature_K": float(atoms.get_temperature())})
