"""Molecular dynamics with a dcf model through ASE's integrators and thermostats.

DCF forces are not the gradient of an energy, so energy is not conserved with them: run them
under a thermostat (Langevin, Bussi stochastic velocity rescaling, Nose-Hoover chain), which
absorbs the small non-conservative work. NVE is offered for diagnostics; with a B–P model its
energy drift measures the integration and model quality.

Units: temperature K, time step and times fs (ASE's internal time unit is converted here),
energies eV.
"""
from __future__ import annotations

import numpy as np
from ase import units

THERMOSTATS = ("langevin", "bussi", "nose-hoover", "nve")


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
