"""Bad inputs and faults as a demanding user meets them: each gives one line naming the input
and what to do, a non-zero exit code, no traceback, and leaves every file as it was.

Real files and the real command line throughout: `dcf.cli.main` in this process (as the `dcf`
script calls it), or `python -m dcf` where the process itself matters (tracebacks).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from dcf.errors import DCFError
from test_md import gentle_model, li_p_o_cell, li_p_o_spec


def dcf(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "dcf", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def cli(capfd):
    """Run `dcf ARGS...` in this process as the console script does (a SystemExit message is
    printed to stderr, exit status 1); returns an object like subprocess.run's."""
    from dcf.cli import main

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as err:
            if isinstance(err.code, str):
                print(err.code, file=sys.stderr)
                code = 1
            else:
                code = err.code or 0
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return run


def snapshot(folder: Path) -> dict:
    """Every file below `folder`, name -> bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


#: what TensorFlow's C++ logging prints to stderr on import, beside dcf's own message
TENSORFLOW_LOG = ("WARNING: All log messages before absl", "I0000 ", "W0000 ", "To enable the")


def assert_refused(res, *words, code=None):
    assert res.returncode != 0 if code is None else res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()
             and not line.startswith(TENSORFLOW_LOG)]
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A gentle B–P model file, a 24-atom Li-P-O structure, its copy with two atoms 0.3 A
    apart, and a frame file with forces."""
    from ase.calculators.singlepoint import SinglePointCalculator

    folder = tmp_path_factory.mktemp("inputs")
    gentle_model("bp", li_p_o_spec(), np.random.default_rng(0)).save(folder / "bp.dcf")
    atoms = li_p_o_cell()
    write(folder / "init.extxyz", atoms)
    close = atoms.copy()
    close.positions[1] = close.positions[0] + [0.3, 0.0, 0.0]
    write(folder / "close.extxyz", close)
    frames = []
    for k in range(3):
        a = atoms.copy()
        a.rattle(0.02, seed=k)
        a.calc = SinglePointCalculator(a, forces=np.zeros((len(a), 3)))
        frames.append(a)
    write(folder / "frames.extxyz", frames)
    return folder


def test_the_errors_share_one_base():
    from dcf.data.frames import FrameError
    from dcf.data.store import StoreError
    from dcf.descriptors.spec import SpecError
    from dcf.dynamics.ipi import ServerError
    from dcf.models import ModelFileError
    from dcf.parallel import MPIUnavailable

    for kind in (FrameError, StoreError, SpecError, ServerError, ModelFileError, MPIUnavailable):
        assert issubclass(kind, DCFError)


@pytest.mark.parametrize("command", [
    ["featurize", "{d}/frames.extxyz", "--out", "{d}/frames.extxyz"],
    ["featurize", "{d}/frames.extxyz", "--out", "{d}/./link.extxyz"],
    ["reactions", "{d}/frames.extxyz", "--out", "{d}/frames.extxyz"],
    ["reactions", "{d}/frames.extxyz", "--out", "{d}/r.json", "--snapshots", "{d}/r.json"],
    ["train", "{d}/s.h5", "--out", "{d}/s.h5"],
    ["train", "{d}/s.h5", "--out", "{d}/m.dcf", "--checkpoint", "{d}/s.h5"],
    ["md", "{d}/bp.dcf", "{d}/init.extxyz", "--steps", "5", "--log", "{d}/init.extxyz",
     "--traj", "{d}/md.traj"],
    ["md", "{d}/bp.dcf", "{d}/init.extxyz", "--steps", "5", "--traj", "{d}/bp.dcf"],
    ["md", "{d}/bp.dcf", "{d}/init.extxyz", "--steps", "5", "--traj", "{d}/a.traj",
     "--log", "{d}/a.traj"],
    ["evaluate", "{d}/bp.dcf", "{d}/frames.extxyz", "--report", "{d}/frames.extxyz"],
    ["spec", "--elements", "Li", "--like", "{d}/spec.json", "--out", "{d}/spec.json"],
    ["lammps", "{d}/bp.dcf", "{d}/spec.json", "--log", "{d}/spec.json"],
])
def test_an_output_that_is_an_input_is_refused_before_any_work(files, tmp_path, command, cli):
    for name in ("frames.extxyz", "init.extxyz", "bp.dcf"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    (tmp_path / "link.extxyz").symlink_to(tmp_path / "frames.extxyz")
    (tmp_path / "s.h5").write_bytes(b"a feature store")
    (tmp_path / "spec.json").write_text("{}")
    before = snapshot(tmp_path)
    res = cli(*[c.format(d=tmp_path) for c in command])
    assert_refused(res, f"dcf {command[0]}: ")
    assert "would destroy the input" in res.stderr or "are the same file" in res.stderr
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["frames.extxyz", "init.extxyz", "bp.dcf", "link.extxyz", "s.h5", "spec.json"])


def md(cli, files, tmp_path, structure="init.extxyz", *options):
    return cli("md", files / "bp.dcf", files / structure, "--traj", tmp_path / "md.traj",
               "--interval", 5, "--seed", 1, *options)


@pytest.mark.parametrize("structure, options, words", [
    ("close.extxyz", ["--steps", 5], ["close.extxyz: atoms 0 (O) and 1 (O) are 0.300 A apart",
                                      "--min-distance 0.5 A; relax the structure first"]),
    ("init.extxyz", ["--steps", 5, "--temperature", -5], ["--temperature -5 K: must be >= 0"]),
    ("init.extxyz", ["--steps", 5, "--damping", 0], ["--damping 0 fs", "must be > 0"]),
    ("init.extxyz", ["--steps", 5, "--thermostat", "bussi", "--temperature", 0],
     ["cannot start from rest"]),
    ("nan.extxyz", ["--steps", 5], ["nan.extxyz: atom 3 has a non-finite position"]),
    ("init.extxyz", ["--steps", 5, "--max-temperature", 100],
     ["step 0: the temperature is", "above --max-temperature 100 K", "before any step"]),
    ("init.extxyz", ["--steps", 5, "--max-force", 1e-6],
     ["step 0: the force on atom", "above --max-force 1e-06 eV/A"]),
])
def test_md_refuses_a_bad_start_and_writes_nothing(files, tmp_path, structure, options, words,
                                                   cli):
    if structure == "nan.extxyz":
        atoms = read(files / "init.extxyz")
        atoms.positions[3, 1] = np.nan
        write(tmp_path / structure, atoms)
        structure = tmp_path / structure
    res = md(cli, files, tmp_path, structure, *options)
    assert_refused(res, *words, code=2)
    assert list(tmp_path.iterdir()) == ([] if structure != tmp_path / "nan.extxyz"
                                        else [tmp_path / "nan.extxyz"])
    # and a re-run with sane settings is not blocked by anything left behind
    if structure == "init.extxyz":
        assert md(cli, files, tmp_path, structure, "--steps", 5).returncode == 0


def test_md_stops_a_runaway_at_the_step_and_restarts_from_the_last_good_frame(files, tmp_path,
                                                                             cli):
    # T is 228 K at step 0 and 283 K at step 5 with this seed
    res = md(cli, files, tmp_path, "init.extxyz", "--steps", 30, "--max-temperature", 270)
    assert res.returncode == 2
    line = [x for x in res.stderr.splitlines() if x.startswith("dcf md")]
    assert len(line) == 1 and "Traceback" not in res.stderr
    step = int(line[0].split("step ")[1].split(":")[0])
    assert 1 <= step <= 5
    assert "above --max-temperature 270 K; stopped" in line[0]
    assert "ends at the last good frame (step 0): --restart continues from it" in line[0]
    traj, log = tmp_path / "md.traj", tmp_path / "md.log"
    assert [f.info["step"] for f in read(traj, ":")] == [0]
    assert [r.split()[0] for r in log.read_text().splitlines()[1:]] == ["0"]
    res = md(cli, files, tmp_path, "init.extxyz", "--steps", 10, "--restart")
    assert res.returncode == 0, res.stderr
    assert [f.info["step"] for f in read(traj, ":")] == [0, 5, 10]


def test_md_keeps_an_existing_log_and_starts_from_rest_at_zero_kelvin(files, tmp_path, cli):
    log = tmp_path / "md.log"
    log.write_text("a log of another run\n")
    res = md(cli, files, tmp_path, "init.extxyz", "--steps", 5)
    assert_refused(res, "--log", "md.log exists; pass --restart")
    assert log.read_text() == "a log of another run\n" and not (tmp_path / "md.traj").exists()
    log.unlink()

    hot = read(files / "init.extxyz")
    hot.set_momenta(np.random.default_rng(0).normal(size=(len(hot), 3)) * 20)   # ~1e4 K
    write(tmp_path / "hot.extxyz", hot)
    assert read(tmp_path / "hot.extxyz").get_temperature() > 3000
    res = md(cli, files, tmp_path, tmp_path / "hot.extxyz", "--steps", 0, "--temperature", 0)
    assert res.returncode == 0, res.stderr
    assert read(tmp_path / "md.traj", 0).get_temperature() == 0.0


def test_the_handler_prints_one_line_and_debug_shows_the_traceback(files, tmp_path):
    bad = tmp_path / "bad.dcf"
    bad.write_text("not a model")
    res = dcf("md", bad, files / "init.extxyz", "--steps", 1, "--traj", tmp_path / "t.traj")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert str(bad) in res.stderr
    for debug in (["--debug"], []):
        res = dcf("spec", "--elements", "Xx", "--out", tmp_path / "s.json", *debug,
                  env={} if debug else {"DCF_DEBUG": "1"})
        assert res.returncode != 0 and "Traceback" in res.stderr
    res = dcf("spec", "--elements", "Xx", "--out", tmp_path / "s.json")
    assert_refused(res, "dcf spec: ", "Xx", code=2)
    assert not (tmp_path / "s.json").exists()


@pytest.fixture(scope="module")
def store(files, tmp_path_factory):
    """A feature store of the 3 frames with the model's spec and no test frames."""
    from dcf.cli import main

    folder = tmp_path_factory.mktemp("store")
    li_p_o_spec().save(folder / "spec.json")
    assert main(["featurize", str(files / "frames.extxyz"), "--spec", str(folder / "spec.json"),
                 "--test-fraction", "0", "--out", str(folder / "s.h5"), "--quiet"]) == 0
    return folder / "s.h5"


def test_evaluate_on_an_empty_split_fails(files, store, cli):
    before = store.read_bytes()
    res = cli("evaluate", files / "bp.dcf", store, "--split", "test")
    assert_refused(res, f"{store}: the test split holds no frames", "--split")
    assert store.read_bytes() == before
    res = cli("evaluate", files / "bp.dcf", files / "frames.extxyz", "--index", "5:")
    assert_refused(res, "--index 5: selects no frames")


def test_a_zero_feature_std_in_a_model_file_is_refused(files, tmp_path, cli, rng=None):
    from dcf.models import ModelFileError, load_model
    from dcf.models.modelfile import read_model_file, write_model_file
    from test_dcf_model import random_model

    path = tmp_path / "dcf.dcf"
    random_model(li_p_o_spec(), "covariant", np.random.default_rng(1)).save(path)
    meta, arrays = read_model_file(path)
    arrays["O/norm/G_std"] = arrays["O/norm/G_std"].copy()
    arrays["O/norm/G_std"][1] = 0.0
    write_model_file(path, meta, arrays)           # a consistent checksum: only the value is bad
    before = path.read_bytes()
    with pytest.raises(ModelFileError, match=f"{path}: O/norm/G_std holds a value <= 0"):
        load_model(path)
    res = cli("md", path, files / "init.extxyz", "--steps", 1, "--traj", tmp_path / "md.traj")
    assert_refused(res, f"{path}: O/norm/G_std holds a value <= 0", "retrain")
    assert path.read_bytes() == before and not (tmp_path / "md.traj").exists()


def test_truncated_frames_and_bad_weights_are_named(files, tmp_path, cli):
    text = (files / "frames.extxyz").read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.extxyz"
    cut.write_text("".join(text[:2 * 26 + 10]))       # two frames and part of the third
    res = cli("featurize", cut, "--out", tmp_path / "s.h5", "--quiet")
    assert_refused(res, f"cannot read frame 2 of {cut}", "truncated")
    chosen = tmp_path / "chosen.txt"
    chosen.write_text("0 1 nan\n")
    res = cli("featurize", files / "frames.extxyz", "--chosen", chosen, "--out",
              tmp_path / "s.h5", "--quiet")
    assert_refused(res, f"{chosen} line 1: the weight nan must be a finite number > 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chosen.txt", "cut.extxyz"]


def test_train_on_a_store_with_a_damaged_chunk_fails_cleanly(store, tmp_path, cli):
    import h5py

    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(store.read_bytes())
    with h5py.File(damaged, "r") as h5:
        names = []
        h5.visit(lambda n: names.append(n) if n.endswith("/G") else None)
        chunk = h5[names[0]].id.get_chunk_info(0)
    raw = bytearray(damaged.read_bytes())
    raw[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xff" * chunk.size
    damaged.write_bytes(bytes(raw))
    before = damaged.read_bytes()
    res = cli("train", damaged, "--head", "covariant", "--out", tmp_path / "m.dcf",
              "--epochs", 1)                  # a head that reads the stored fingerprints
    assert_refused(res, f"dcf train: {damaged}: ", "damaged: run dcf featurize again")
    assert damaged.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.h5"]


def test_md_warns_once_when_the_temperature_leaves_the_band(files, tmp_path, cli):
    """A restart from a 1500 K frame under a 300 K thermostat: one warning, the run goes on."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io.trajectory import Trajectory

    from dcf.dynamics.md import out_of_band, thermal_velocities

    assert out_of_band(701, 300, "langevin") and not out_of_band(699, 300, "langevin")
    assert not out_of_band(1e4, 300, "nve")
    hot = read(files / "init.extxyz")
    thermal_velocities(hot, 1500.0, seed=0)
    hot.info["step"] = 0
    hot.calc = SinglePointCalculator(hot, forces=np.zeros((len(hot), 3)))
    with Trajectory(str(tmp_path / "md.traj"), "w") as traj:
        traj.write(hot)
    (tmp_path / "md.log").write_text("# step ...\n")
    res = md(cli, files, tmp_path, "init.extxyz", "--steps", 10, "--restart",
             "--temperature", 300)
    assert res.returncode == 0, res.stderr
    warnings = [x for x in res.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "far from the thermostat's 300 K" in warnings[0]
    assert "--max-temperature 3500 K" in warnings[0]
    assert [f.info["step"] for f in read(tmp_path / "md.traj", ":")] == [0, 5, 10]


def test_a_killed_md_run_logs_no_step_its_trajectory_lacks(files, tmp_path):
    """The frame is written before its log row: after a SIGKILL at any moment, every logged
    step has its frame in the trajectory (repeated kills at different moments)."""
    import signal
    import time

    for k, delay in enumerate((1.5, 2.5, 3.5)):
        traj, log = tmp_path / f"kill{k}.traj", tmp_path / f"kill{k}.log"
        args = ["md", files / "bp.dcf", files / "init.extxyz", "--traj", traj, "--interval", 1,
                "--steps", 100000, "--seed", 1, "--max-temperature", 1e9]
        proc = subprocess.Popen([sys.executable, "-m", "dcf", *map(str, args)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not log.exists() or len(
                    log.read_text().splitlines()) < 3):
                time.sleep(0.05)
            time.sleep(delay * 0.1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        rows = [r for r in log.read_text().splitlines() if r.strip() and not r.startswith("#")]
        assert len(rows) >= 2
        frames = read(traj, ":")
        assert len(frames) >= len(rows), (len(frames), len(rows))
