"""NVE energy drift of a trained B–P model (reproducible measurement, not a test).

1. Reference data: Langevin MD of a 32-atom fcc Cu–Au cell with ASE's EMT at 800 K;
   every 10th step is a frame (energy, forces). Held-out frames come from a second run.
2. Train a B–P model (Cu, Au; G2 + G4 features, 2x30 tanh networks) on energies and forces.
3. NVE (VelocityVerlet, 1 fs) with the B–P model from an equilibrated frame for 10+ ps;
   the drift is the slope of a least-squares line through the total energy, meV/atom/ps.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bp_nve_drift.py [--ps 10] [--out DIR]
"""
import argparse
import json
import time

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from dcf.training.bp import BPTrainConfig, train_bp
from dcf.analysis.evaluation import evaluate_frames
from dcf.descriptors.spec import FingerprintSpec

SPEC = FingerprintSpec(
    ["Cu", "Au"],
    [{"kind": "G2", "neighbors": "*", "eta": [0.3, 1.0, 3.0], "Rs": [2.4, 2.9, 3.4, 4.0, 4.6]},
     {"kind": "G4", "neighbors": "*", "zeta": [1, 4], "lambda": [1, -1], "eta": 0.02}],
    cutoff=5.5, name="cuau-md")


def cell(seed: int):
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.80, cubic=True).repeat((2, 2, 2))
    atoms.set_chemical_symbols(list(np.where(rng.random(len(atoms)) < 0.35, "Au", "Cu")))
    return atoms


def emt_md_frames(n_frames: int, seed: int, temperature=800.0, every=10, composition_seed=0):
    """Frames of one Cu–Au cell (the same composition for training and held-out frames; the
    fitted reference energies e_el are not determined by one composition, so another
    composition would test extrapolation, not accuracy)."""
    atoms = cell(composition_seed)
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature,
                                 rng=np.random.default_rng(seed))
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02,
                   rng=np.random.default_rng(seed + 1))
    frames = []
    dyn.run(200)                                    # equilibrate
    for _ in range(n_frames):
        dyn.run(every)
        a = atoms.copy()
        a.calc = SinglePointCalculator(a, energy=atoms.get_potential_energy(),
                                       forces=atoms.get_forces())
        frames.append(a)
    return frames, atoms


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ps", type=float, default=10.0)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    p.add_argument("--out", default=None, help="write the model and a JSON summary here")
    args = p.parse_args()

    t0 = time.perf_counter()
    train, start = emt_md_frames(args.frames, seed=0)
    test, _ = emt_md_frames(60, seed=7)
    t_data = time.perf_counter() - t0

    # 4 frames of 32 atoms per step; the rate halves after 10 stale epochs, no early stop
    cfg = BPTrainConfig(hidden=(30, 30), epochs=args.epochs, batch_size=128,
                        learning_rate=3e-3, patience=args.epochs, lr_patience=10,
                        force_weight=1.0, seed=0, max_minutes=args.max_minutes)
    model = train_bp(train, SPEC, cfg, log=print)
    history = model.training
    report = evaluate_frames(model, test)
    F_ref = np.concatenate([a.get_forces() for a in test])

    atoms = start.copy()
    atoms.calc = model.calculator()
    MaxwellBoltzmannDistribution(atoms, temperature_K=800, rng=np.random.default_rng(3))
    dt = 1.0 * units.fs
    n_steps = int(round(args.ps * 1000))
    dyn = VelocityVerlet(atoms, dt)
    times, energies = [], []

    def record():
        times.append(dyn.get_number_of_steps() * 1e-3)                 # ps
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())

    dyn.attach(record, interval=10)
    t1 = time.perf_counter()
    dyn.run(n_steps)
    t_md = time.perf_counter() - t1
    times, energies = np.array(times), np.array(energies)
    slope = np.polyfit(times, energies, 1)[0]
    n = len(atoms)
    summary = {
        "atoms": n, "ps": args.ps, "dt_fs": 1.0, "steps": n_steps,
        "drift_meV_per_atom_per_ps": 1000 * slope / n,
        "energy_fluctuation_meV_per_atom": 1000 * energies.std() / n,
        "max_minus_min_meV_per_atom": 1000 * np.ptp(energies) / n,
        "md_ms_per_step": 1000 * t_md / n_steps,
        "test_energy_rmse_meV_per_atom": 1000 * report["energy"]["rmse_per_atom"],
        "test_force_mae": {el: m["mae"] for el, m in report["forces"].items()},
        "test_mean_abs_force": float(np.linalg.norm(F_ref, axis=1).mean()),
        "train_minutes": history["minutes"], "data_minutes": t_data / 60,
        "best_epoch": history["best_epoch"],
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        from pathlib import Path
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "bp-cuau.dcf")
        (out / "nve-drift.json").write_text(json.dumps(summary, indent=1))
        np.savetxt(out / "nve-energy.txt", np.c_[times, energies], header="t_ps E_total_eV")


if __name__ == "__main__":
    main()
