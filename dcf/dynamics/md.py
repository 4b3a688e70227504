"""Molecular dynamics with a dcf model through ASE's integrators and thermostats.

DCF forces are not the gradient of an energy, so energy is not conserved with them: run them
under a thermostat (Langevin, Bussi stochastic velocity rescaling, Nose-Hoover chain), which
absorbs the small non-conservative work. NVE is offered for diagnostics; with a B–P model its
energy drift measures the integration and model quality.

`check_start` refuses a structure MD cannot start from (non-finite positions or momenta, atoms
closer than a floor, a degenerate periodic cell); `Watch` checks each step for what goes wrong
quietly (non-finite or exploding forces, atoms closer than the floor, a runaway temperature),
and `watch_dynamics` stops a run at the first bad step with `Runaway`; `out_of_band` tells a
temperature far above the thermostat's target, for a warning.

Units: temperature K, time step and times fs (ASE's internal time unit is converted here),
energies eV, forces eV/A, distances A.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units

from dcf.errors import CollectiveError

THERMOSTATS = ("langevin", "bussi", "nose-hoover", "nve")


class MDError(CollectiveError):
    """A structure or setting MD cannot run with (the same on every MPI rank)."""


class Runaway(MDError):
    """The dynamics went wrong at `step`: forces, distances or temperature out of bounds."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"step {step}: {reason}")
        self.step, self.reason = step, reason


def check_settings(thermostat: str, temperature: float, timestep: float, damping: float) -> None:
    """Refuse settings no integrator can run: MDError naming the option."""
    if not np.isfinite(temperature) or temperature < 0:
        raise MDError(f"--temperature {temperature:g} K: must be >= 0")
    if not np.isfinite(timestep) or timestep <= 0:
        raise MDError(f"--timestep {timestep:g} fs: must be > 0")
    if thermostat != "nve" and (not np.isfinite(damping) or damping <= 0):
        raise MDError(f"--damping {damping:g} fs: the thermostat time constant must be > 0")
    if thermostat == "bussi" and temperature == 0:
        raise MDError("--temperature 0 with the Bussi thermostat, which rescales velocities "
                      "and cannot start from rest: use langevin or a temperature > 0")


def closest_pair(atoms, within: float) -> tuple[int, int, float] | None:
    """The closest pair (i, j, distance A) of `atoms` closer than `within` A (periodic images
    included), or None."""
    from dcf.descriptors.neighbors import build_neighbor_list

    nl = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, within)
    if len(nl.d) == 0:
        return None
    k = int(np.argmin(nl.d))
    return int(nl.i[k]), int(nl.j[k]), float(nl.d[k])


def check_start(atoms, min_distance: float, source: str) -> None:
    """Refuse a starting structure (from `source`) that MD cannot run: MDError naming it."""
    if not np.all(np.isfinite(atoms.positions)):
        bad = int(np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))[0])
        raise MDError(f"{source}: atom {bad} has a non-finite position")
    if not np.all(np.isfinite(atoms.get_momenta())):
        raise MDError(f"{source}: the stored momenta are not finite")
    if atoms.pbc.all() and abs(atoms.cell.volume) < 1e-6:
        raise MDError(f"{source}: the periodic cell {atoms.cell.array.tolist()} has no volume")
    pair = closest_pair(atoms, min_distance)
    if pair is not None:
        i, j, d = pair
        raise MDError(f"{source}: atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}) "
                      f"are {d:.3f} A apart, closer than --min-distance {min_distance:g} A; "
                      f"relax the structure first")


@dataclass(frozen=True)
class Watch:
    """Bounds a sound MD step stays within.

    max_force: eV/A, the largest atomic force; min_distance: A, the closest pair;
    max_temperature: K, the kinetic temperature.
    """
    max_force: float = 50.0
    min_distance: float = 0.5
    max_temperature: float = 5000.0

    def problem(self, atoms) -> str | None:
        """What is wrong with `atoms` (its forces computed), or None."""
        forces = atoms.get_forces()
        if not np.all(np.isfinite(forces)):
            bad = int(np.flatnonzero(~np.isfinite(forces).all(axis=1))[0])
            return f"the force on atom {bad} is not finite"
        f = np.linalg.norm(forces, axis=1)
        if f.max() > self.max_force:
            return (f"the force on atom {int(f.argmax())} is {f.max():.3g} eV/A, above "
                    f"--max-force {self.max_force:g} eV/A")
        temperature = atoms.get_temperature()
        if not temperature <= self.max_temperature:
            return (f"the temperature is {temperature:.4g} K, above --max-temperature "
                    f"{self.max_temperature:g} K")
        pair = closest_pair(atoms, self.min_distance)
        if pair is not None:
            i, j, d = pair
            return (f"atoms {i} and {j} are {d:.3f} A apart, closer than --min-distance "
                    f"{self.min_distance:g} A")
        return None


def out_of_band(temperature: float, target: float, thermostat: str) -> bool:
    """Whether a kinetic temperature (K) is far above a thermostat's target (K): more than
    twice it plus 100 K, many standard deviations for any system of a few atoms or more.
    Never under NVE, which has no target."""
    return thermostat != "nve" and temperature > 2.0 * target + 100.0


def watch_dynamics(dyn, watch: Watch, first_step: int = 0) -> None:
    """Check every step of `dyn` with `watch`; the first bad one raises Runaway."""
    def check():
        reason = watch.problem(dyn.atoms)
        if reason is not None:
            raise Runaway(first_step + dyn.nsteps, reason)

    dyn.attach(check, interval=1)


def thermostat_seed(seed: int | None, step: int) -> int | list[int] | None:
    """The seed of the thermostat's random stream for a run starting at MD step `step`:
    `seed` itself at step 0, else [seed, step], so that a restart with the same seed draws
    fresh random forces instead of replaying those of the first segment (reproducible, but
    not the stream of an uninterrupted run)."""
    return seed if seed is None or step == 0 else [int(seed), int(step)]


def make_dynamics(atoms, thermostat: str, temperature: float, timestep: float,
                  damping: float = 100.0, seed: int | list[int] | None = None):
    """An ASE dynamics object for `atoms` (with its calculator set).

    temperature K; timestep fs; damping fs: the thermostat's time constant (Langevin friction
    1/damping, Bussi and Nose-Hoover relaxation time). seed (anything numpy's default_rng
    takes) fixes the stochastic thermostats.
    Langevin keeps the center of mass fixed through ASE's FixCom constraint, added to `atoms`.
    Bussi needs non-zero starting velocities.
    """
    dt = timestep * units.fs
    if thermostat == "langevin":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin
        if not any(isinstance(c, FixCom) for c in atoms.constraints):
            atoms.set_constraint([*atoms.constraints, FixCom()])
        return Langevin(atoms, dt, temperature_K=temperature, friction=1.0 / (damping * units.fs),
                        fixcm=False, rng=np.random.default_rng(seed))
    if thermostat == "bussi":
        from ase.md.bussi import Bussi
        return Bussi(atoms, dt, temperature_K=temperature, taut=damping * units.fs,
                     rng=np.random.default_rng(seed))
    if thermostat == "nose-hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT
        return NoseHooverChainNVT(atoms, dt, temperature_K=temperature,
                                  tdamp=damping * units.fs)
    if thermostat == "nve":
        from ase.md.verlet import VelocityVerlet
        return VelocityVerlet(atoms, dt)
    raise ValueError(f"unknown thermostat {thermostat!r}; choose one of {', '.join(THERMOSTATS)}")


def thermal_velocities(atoms, temperature: float, seed: int | None = None) -> None:
    """Maxwell–Boltzmann momenta at `temperature` K with zero total momentum (in place; under
    MPI, ASE broadcasts rank 0's draw)."""
    from ase.md import velocitydistribution as vd

    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):            # ASE >= 3.29
        vd.thermalize_momenta(atoms, temperature, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)


def element_temperatures(atoms) -> dict[str, float]:
    """Kinetic temperature (K) of each element's atoms, T = 2 KE / (3 N k_B)."""
    symbols = np.array(atoms.get_chemical_symbols())
    ke = 0.5 * np.sum(atoms.get_momenta() ** 2, axis=1) / atoms.get_masses()
    return {el: float(2.0 * ke[symbols == el].sum() / (3 * np.sum(symbols == el) * units.kB))
            for el in dict.fromkeys(symbols)}


def energy_drift(times_fs, total_energy, n_atoms: int) -> float:
    """Least-squares slope of the total energy, meV/atom/ps."""
    t = np.asarray(times_fs, float) / 1000.0
    if len(t) < 2:
        return float("nan")
    slope = np.polyfit(t, np.asarray(total_energy, float), 1)[0]
    return float(1000.0 * slope / n_atoms)
