"""Sampling a thermostatted MD run for the MD-fidelity checks (`dcf check-md`): species
temperatures in the centre-of-mass frame, frames for the RDFs, the NVE drift of an energy
model. The measures themselves are in `dcf.analysis.md_fidelity`.

Units: temperature K, times fs, energies eV.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import units

from dcf.dynamics.md import energy_drift, make_dynamics, thermal_velocities


def species_temperatures(atoms) -> dict[str, float]:
    """Kinetic temperature (K) of each element in the centre-of-mass frame.

    With the total momentum fixed, equipartition gives atom i the mean kinetic energy
    (3/2) k_B T (1 - m_i / M), M the total mass; dividing by that instead of (3/2) k_B T keeps
    the species temperatures unbiased in small cells (4 % for 26 atoms).
    """
    m = atoms.get_masses()
    v = atoms.get_velocities()
    v = v - (m @ v) / m.sum()
    ke = 0.5 * m * np.sum(v * v, axis=1)
    dof = 3.0 * (1.0 - m / m.sum())
    symbols = np.array(atoms.get_chemical_symbols())
    return {el: float(2.0 * ke[symbols == el].sum() / (dof[symbols == el].sum() * units.kB))
            for el in dict.fromkeys(symbols)}


@dataclass
class MDSample:
    """What `run_md_sample` records: times_fs (n,), T[el] (n,) species temperatures K, T_all
    (n,) K, E_pot (n,) eV (None without an energy), frames for the RDF (second half),
    blown_up_fs (time the run was stopped, or None), final atoms; trajectory: frames every
    rdf_every steps of the whole run and the last one before a stop (info["time_fs"])."""
    times_fs: np.ndarray
    T: dict
    T_all: np.ndarray
    E_pot: np.ndarray | None
    frames: list
    blown_up_fs: float | None
    atoms: object
    trajectory: list = field(default_factory=list)


def run_md_sample(model, start, temperature: float, steps: int, thermostat: str = "langevin",
                  timestep: float = 1.0, damping: float = 100.0, every: int = 5,
                  rdf_every: int = 50, seed: int = 0, blowup_factor: float = 3.0,
                  progress=None) -> MDSample:
    """Thermostatted MD with `model` from a copy of `start` (thermal velocities at
    `temperature` K, zero total momentum), recording species temperatures every `every` steps
    and frames for the RDF every `rdf_every` steps of the second half. Stops early, as blown
    up, when the temperature exceeds `blowup_factor` times the target or a force call fails
    (ValueError: atoms on top of each other). progress(step, T) is called at every record."""
    atoms = start.copy()
    atoms.calc = model.calculator()
    thermal_velocities(atoms, temperature, seed)
    dyn = make_dynamics(atoms, thermostat, temperature, timestep, damping, seed)
    has_energy = "energy" in model.implemented_properties
    times, temps, t_all, epot, frames, trajectory = [], [], [], [], [], []
    blown = None
    done = 0
    while done < steps:
        n = min(every, steps - done)
        try:
            dyn.run(n)
        except (ValueError, FloatingPointError):    # e.g. atoms on top of each other
            blown = (done + n) * timestep
            break
        done += n
        temps.append(species_temperatures(atoms))
        t_all.append(atoms.get_temperature())
        times.append(done * timestep)
        if has_energy:
            epot.append(atoms.get_potential_energy())
        if done % rdf_every < n:
            trajectory.append(_snapshot(atoms, done * timestep))
            if done > steps // 2:
                frames.append(atoms.copy())
        if progress is not None:
            progress(done, t_all[-1])
        if not np.isfinite(t_all[-1]) or t_all[-1] > blowup_factor * temperature:
            blown = done * timestep
            trajectory.append(_snapshot(atoms, blown))
            break
    if not temps:                   # the first force calls failed
        temps, t_all, times = [species_temperatures(atoms)], [atoms.get_temperature()], [0.0]
        epot = [np.nan] if has_energy else []
    els = list(temps[0])
    return MDSample(np.array(times), {el: np.array([t[el] for t in temps]) for el in els},
                    np.array(t_all), np.array(epot) if has_energy else None, frames, blown,
                    atoms, trajectory)


def _snapshot(atoms, time_fs: float):
    """A copy of `atoms` without its calculator, with info["time_fs"]."""
    out = atoms.copy()
    out.calc = None
    out.info["time_fs"] = float(time_fs)
    return out


def nve_drift(model, atoms, steps: int, timestep: float = 1.0, every: int = 5) -> float:
    """NVE (velocity Verlet) from `atoms` (positions and momenta kept); the least-squares slope
    of the total energy, meV/atom/ps."""
    atoms = atoms.copy()
    atoms.set_constraint()
    atoms.calc = model.calculator()
    dyn = make_dynamics(atoms, "nve", 0.0, timestep)
    times, totals = [0.0], [atoms.get_total_energy()]
    for k in range(steps // every):
        try:
            dyn.run(every)
        except (ValueError, FloatingPointError):    # blown up: the slope so far
            break
        times.append((k + 1) * every * timestep)
        totals.append(atoms.get_total_energy())
    return energy_drift(times, totals, len(atoms))
