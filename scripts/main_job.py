"""The main job on the embedded data, end to end (run by scripts/main; `--quick` for a short
version). Every step is a `dcf` command, printed before it runs so that it can be repeated by
hand; its output goes to the terminal and to OUT/logs/. At the end OUT/summary.md collects the
accuracy table, the MD runs and the cost table.

    data -> fingerprints -> DCF (pairwise head; paper head: NN1, NN2, NN3; covariant head)
         and B–P models -> accuracy (Table 1, parity plots) -> Langevin MD through ASE and
         through a real i-PI server -> `dcf check-md` -> cost per atom-step on system B
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "dcf" / "data" / "li4p2o7_xtb_3000K.extxyz"
DCF = [sys.executable, "-m", "dcf"]

#                         training minutes per model, MD steps (ASE, i-PI), cost repeats
SETTINGS = {"full": dict(minutes=2.5, ase_steps=5000, ipi_steps=1000, check_steps=5000,
                         repeats=5),
            "quick": dict(minutes=0.3, ase_steps=200, ipi_steps=200, check_steps=200,
                          repeats=3)}
MODELS = {"dcf-pairwise": ["--model", "dcf", "--head", "pairwise"],
          "dcf-paper": ["--model", "dcf", "--head", "paper"],
          "dcf-covariant": ["--model", "dcf", "--head", "covariant"],
          "bp": ["--model", "bp"]}
MD_MODEL = "dcf-pairwise"
MD_TEMPERATURE = 3000.0        # K, the temperature of the training trajectory
MD_DAMPING = 100.0             # fs: the standard Langevin coupling


class Job:
    """Runs the steps, prints their commands and keeps their output in OUT/logs/."""

    def __init__(self, out: Path):
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.steps: list[dict] = []

    def header(self, text: str) -> None:
        print(f"\n=== [{time.monotonic() - self.t0:6.0f} s] {text}", flush=True)

    def run(self, name: str, args, cwd=None, ok=(0,)) -> str:
        """Run `dcf ARGS`, streaming stdout (progress bars on stderr pass through); an exit
        code outside `ok` stops the job."""
        cmd = [*DCF, *map(str, args)]
        print("$ dcf " + " ".join(map(str, args)), flush=True)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd or self.out, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines = []
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        rc = proc.wait()
        text = "".join(lines)
        (self.logs / f"{name}.log").write_text(text)
        self.steps.append({"step": name, "command": "dcf " + " ".join(map(str, args)),
                           "seconds": round(time.monotonic() - start, 1)})
        if rc not in ok:
            raise SystemExit(f"main job: step {name!r} failed (exit {rc}); see the output above")
        return text


def run_ipi(job: Job, model: Path, steps: int) -> dict:
    """drivers/ipi-nvt-svr.xml with i-PI's Langevin thermostat instead of SVR (a global
    thermostat cannot take away DCF's local non-conservative heating), at MD_TEMPERATURE with
    tau MD_DAMPING, shortened to `steps`, with a real i-pi server and `dcf ipi`."""
    ipi = shutil.which("i-pi", path=os.path.dirname(sys.executable)) or shutil.which("i-pi")
    if ipi is None:
        raise SystemExit("main job: the i-pi command is missing (pip install ipi)")
    folder = job.out / "ipi"
    folder.mkdir(exist_ok=True)
    address = f"dcf-main-{uuid.uuid4().hex[:8]}"
    text = (ROOT / "drivers" / "ipi-nvt-svr.xml").read_text()
    text = text.replace(text[text.index("<total_steps>"):text.index("</total_steps>")],
                        f"<total_steps>{steps}")
    text = text.replace("<address>dcf-nvt</address>", f"<address>{address}</address>")
    text = text.replace('units="kelvin">1000<', f'units="kelvin">{MD_TEMPERATURE:g}<')
    text = text.replace('<tau units="femtosecond">100<', f'<tau units="femtosecond">{MD_DAMPING:g}<')
    text = text.replace('<thermostat mode="svr">', '<thermostat mode="langevin">')
    (folder / "input.xml").write_text(text)
    from ase.io import read, write
    write(folder / "init.extxyz", read(DATA, index=-1))
    print(f"$ (cd {folder} && i-pi input.xml &)", flush=True)
    with open(job.logs / "ipi-server.log", "w") as log:
        server = subprocess.Popen([ipi, "input.xml"], cwd=folder, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            job.run("md-ipi", ["ipi", model.resolve(), "--structure", "init.extxyz", "--unix",
                               address, "--wait", 60], cwd=folder)
            server.wait(timeout=120)
        finally:
            if server.poll() is None:
                server.kill()
            Path(f"/tmp/ipi_{address}").unlink(missing_ok=True)
    return md_summary(folder / "nvt.out")


def md_summary(log: Path) -> dict:
    """Steps and mean T over the second half of an MD log whose columns are step, time, T, ...
    (`dcf md`'s log and i-PI's properties file both are)."""
    rows = [r.split() for r in log.read_text().splitlines()
            if r.strip() and not r.startswith("#")]
    temps = [float(r[2]) for r in rows]
    half = temps[len(temps) // 2:]
    return {"steps": int(float(rows[-1][0])), "mean_T_second_half_K": sum(half) / len(half),
            "target_K": MD_TEMPERATURE}


def costs(models: dict[str, Path], repeats: int) -> list[dict]:
    """Cost per MD step (ASE Langevin, one thread) of the trained models on the paper's
    system B (208 atoms, the same elements and Table S4 features)."""
    from dcf.bench.costs import md_step_cost
    from dcf.models import load_model
    from dcf.data.structures import system_b

    atoms = system_b(replicate=1, seed=0)
    rows = []
    for name, path in models.items():
        model = load_model(path)
        model.set_threads(1)
        c = md_step_cost(atoms, model.calculator(), steps=5, repeats=repeats)
        rows.append({"model": name, "n_atoms": len(atoms), "ms_per_step": 1e3 * c["median"],
                     "iqr_ms": 1e3 * c["iqr"], "us_per_atom_step": c["median_us_per_atom"]})
    return rows


def write_summary(out: Path, mode: str, job: Job, accuracy: str, ase_md: dict, ipi_md: dict,
                  check_md: str, cost_rows: list[dict]) -> Path:
    lines = [f"# dcf main job ({mode})", "",
             f"Data: `{DATA.relative_to(ROOT)}` (250 frames of 26-atom Li8P4O14 at 3000 K, "
             f"GFN1-xTB), Table S4 fingerprints, 20 % of the frames held out for testing.", "",
             "## Accuracy on the held-out frames (Table 1 style; forces in eV/A)", "",
             "```", accuracy.strip(), "```", "",
             "Parity plots: `plots/`. Full report: `accuracy.json`.", "",
             f"## Thermostatted MD with the DCF model ({MD_MODEL})", "",
             f"Langevin thermostats with a {MD_DAMPING:g} fs time constant, started from the "
             f"last frame of the data with fresh {MD_TEMPERATURE:g} K velocities. DCF forces "
             f"are not conservative: a mean T above the target measures the model's "
             f"non-conservative work.", "",
             f"- ASE, Langevin, {ase_md['steps']} steps of 1 fs: mean T over the second half "
             f"{ase_md['mean_T_second_half_K']:.0f} K (target {MD_TEMPERATURE:.0f} K); "
             f"`md-ase.traj`, `md-ase.log`.",
             f"- i-PI, Langevin thermostat (`drivers/ipi-nvt-svr.xml` with mode=\"langevin\"), "
             f"{ipi_md['steps']} steps: mean "
             f"T over the second half {ipi_md['mean_T_second_half_K']:.0f} K (target "
             f"{MD_TEMPERATURE:.0f} K); `ipi/`.", "",
             "## Fit for MD? (`dcf check-md`)", "", "```", check_md.strip(), "```", "",
             "## Cost per MD step on the paper's system B (208 atoms, one thread, ASE Langevin)",
             "", "| model | ms/step (median) | IQR ms | us/atom/step |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['ms_per_step']:.2f} | {r['iqr_ms']:.2f} | "
              f"{r['us_per_atom_step']:.1f} |" for r in cost_rows]
    by = {r["model"]: r["ms_per_step"] for r in cost_rows}
    if "bp" in by and MD_MODEL in by:
        lines += ["", f"B–P / DCF ({MD_MODEL}) per step: {by['bp'] / by[MD_MODEL]:.2f}x. "
                  f"The full comparison with a classical force field: `dcf bench` "
                  f"(docs/benchmarks.md)."]
    lines += ["", "## Steps", "", "| step | seconds | command |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['seconds']} | `{s['command']}` |" for s in job.steps]
    lines += ["", f"Total: {time.monotonic() - job.t0:.0f} s."]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="the dcf main job on the embedded data")
    p.add_argument("--quick", action="store_true", help="short training and MD (~2 minutes)")
    p.add_argument("--out", default=None, help="output folder (default out/main or out/quick)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    s = SETTINGS[mode]
    out = Path(args.out or ROOT / "out" / ("quick" if args.quick else "main")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    job = Job(out)
    threads = str(os.cpu_count() or 1)

    job.header("1/7 fingerprints of the embedded trajectory (Table S4)")
    job.run("featurize", ["featurize", DATA, "--spec", "mailoa2019-S4", "--out", "features.h5",
                          "--test-fraction", 0.2, "--seed", 0])

    models = {}
    for k, (name, extra) in enumerate(MODELS.items(), 1):
        job.header(f"2/7 training {name} ({k}/{len(MODELS)}, {s['minutes']} min budget)")
        job.run(f"train-{name}", ["train", "features.h5", *extra, "--out", f"{name}.dcf",
                                  "--max-minutes", s["minutes"], "--threads", threads,
                                  "--restart"])
        models[name] = out / f"{name}.dcf"

    job.header("3/7 accuracy on the held-out frames, side by side")
    job.run("evaluate", ["evaluate", *(f"{n}.dcf" for n in models), "features.h5",
                         "--report", "accuracy.json", "--plots", "plots"])
    accuracy = (job.logs / "evaluate.log").read_text()
    accuracy = accuracy[:accuracy.find("\nwrote")] if "\nwrote" in accuracy else accuracy

    job.header(f"4/7 Langevin MD through ASE with {MD_MODEL}")
    for stale in ("md-ase.traj", "md-ase.log"):
        (out / stale).unlink(missing_ok=True)
    job.run("md-ase", ["md", f"{MD_MODEL}.dcf", DATA, "--thermostat", "langevin",
                       "--temperature", MD_TEMPERATURE, "--damping", MD_DAMPING,
                       "--steps", s["ase_steps"],
                       "--timestep", 1.0, "--interval", 20, "--seed", 0,
                       "--traj", "md-ase.traj"])
    ase_md = md_summary(out / "md-ase.log")

    job.header(f"5/7 Langevin MD through a real i-PI server with {MD_MODEL}")
    ipi_md = run_ipi(job, models[MD_MODEL], s["ipi_steps"])

    job.header(f"6/7 are {MD_MODEL} and bp fit for MD? dcf check-md")
    check_md = "\n\n".join(
        job.run(f"check-md-{name}", ["check-md", f"{name}.dcf", DATA, "--steps",
                                     s["check_steps"], "--report", f"check-md-{name}.json",
                                     "--plot", f"check-md-{name}.png",
                                     "--extrapolating", f"extrapolating-{name}.extxyz"],
                ok=(0, 1))
        for name in (MD_MODEL, "bp"))

    job.header("7/7 cost per MD step on system B (208 atoms), one thread")
    cost_rows = costs(models, s["repeats"])
    for r in cost_rows:
        print(f"{r['model']:>14s}: {r['ms_per_step']:8.2f} ms/step  "
              f"{r['us_per_atom_step']:7.1f} us/atom/step")
    (out / "costs.json").write_text(json.dumps(cost_rows, indent=1))

    path = write_summary(out, mode, job, accuracy, ase_md, ipi_md, check_md, cost_rows)
    print(f"\n{path.read_text()}")
    print(f"main job done in {time.monotonic() - job.t0:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
