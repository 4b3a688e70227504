"""Systems and options for the benchmarks: the paper's system B geometry and its replicas.

Options (after `pytest benchmarks`):
  --replicates 1,2,4          system B (208 atoms) and its 2x2x2 (1664) and 4x4x4 (13,312)
  --m-sweep 30,50,...         mean neighbor counts m of the density sweep (test_bench_scaling)

Each cost benchmark records extra_info: quantity (a name from dcf.bench.report), n_atoms,
steps (MD steps per round; 1 for single calls), and where it matters mean_neighbors; the
report (`dcf bench`) reads them from the JSON.
"""
import functools
import os
import time

import numpy as np
import pytest

from dcf.data.structures import system_b


def pytest_addoption(parser):
    group = parser.getgroup("dcf benchmarks")
    group.addoption("--replicates", default="1,2,4",
                    help="system B replicas n (n^3 x 208 atoms), comma-separated (default 1,2,4)")
    group.addoption("--m-sweep", default="30,50,75,100,130,160",
                    help="mean neighbor counts of the density sweep "
                         "(default 30,50,75,100,130,160)")


def _ints(text):
    return [int(x) for x in str(text).split(",") if x.strip()]


def _floats(text):
    return [float(x) for x in str(text).split(",") if x.strip()]


def pytest_generate_tests(metafunc):
    if "atoms" in metafunc.fixturenames:
        reps = _ints(metafunc.config.getoption("replicates"))
        metafunc.parametrize("atoms", reps, ids=[str(208 * r ** 3) for r in reps], indirect=True)
    if "m_target" in metafunc.fixturenames:
        ms = _floats(metafunc.config.getoption("m_sweep"))
        metafunc.parametrize("m_target", ms, ids=[f"m{m:g}" for m in ms])


def pytest_configure(config):
    config._dcf_load_start = os.getloadavg()
    config._dcf_start = time.time()


def pytest_benchmark_update_machine_info(config, machine_info):
    from dcf.bench.report import machine_info as dcf_machine_info
    info = dcf_machine_info()
    info["load_average_start"] = list(getattr(config, "_dcf_load_start", ()))
    info["suite_seconds"] = time.time() - getattr(config, "_dcf_start", time.time())
    machine_info["dcf"] = info


@functools.lru_cache(maxsize=None)
def system(replicate: int):
    return system_b(replicate=replicate, seed=0)


@pytest.fixture
def atoms(request):
    return system(request.param)


def tiled(per_atom_of_system_b, n_atoms: int):
    """A per-atom (or per-center, in atom order) array of system B repeated for its replica of
    `n_atoms` atoms: `system_b(replicate=r)` repeats the 208-atom cell, so every replica atom
    has the environment, fingerprints and forces of its original."""
    x = np.asarray(per_atom_of_system_b)
    return np.tile(x, (n_atoms // 208,) + (1,) * (x.ndim - 1))


def tag(benchmark, quantity: str, n_atoms: int, steps: int = 1, **extra):
    """Name a benchmark for the report and the terminal table."""
    benchmark.group = f"{quantity} ({n_atoms} atoms)"
    benchmark.extra_info.update(quantity=quantity, n_atoms=n_atoms, steps=steps, **extra)


def rounds_for(config, seconds_per_round: float, cap: int = 200) -> int:
    """Rounds of a pedantic benchmark under pytest-benchmark's --benchmark-max-time and
    --benchmark-min-rounds, like its own calibration."""
    max_time = float(config.getoption("benchmark_max_time"))
    min_rounds = int(config.getoption("benchmark_min_rounds"))
    return max(min_rounds, min(cap, int(max_time / max(seconds_per_round, 1e-9))))
