"""Data-parallel training under a real `mpiexec -n 2` (dcf.training.core.DataParallel), for
B–P, the paper's DCF head (NN1, NN2, NN3) and the pairwise head:

* K = 1 through MPI (the flattened gradient, a Reduce + Bcast over one rank, the update from
  the flat vector) gives the same bits as the serial fused step;
* K = 2 gives the same weights, on both ranks, as an in-process serial run that sums the two
  shards' gradients, and the learning curve of the serial run;
* rank 0 alone writes the checkpoint and the model; a run killed after an epoch resumes under
  mpiexec to the uninterrupted run's weights;
* ranks that read different data, or a fault on one rank, end both ranks with one message.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

tf = pytest.importorskip("tensorflow")

from dcf.descriptors.fingerprints import Featurizer  # noqa: E402
from dcf.descriptors.spec import invariant_spec  # noqa: E402
from dcf.models.modelfile import read_model_file  # noqa: E402
from dcf.training import bp as bpt  # noqa: E402
from dcf.training import dcf as dct  # noqa: E402
from dcf.training import pairwise as pwt  # noqa: E402
from dcf.training.core import set_threads, validation_split  # noqa: E402
from test_bp_training import emt_frames  # noqa: E402
from test_dcf_model import cuau_spec  # noqa: E402

set_threads(1)
MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpiexec = pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside python")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
       "DCF_NUM_THREADS": "1"}
KINDS = ("bp", "paper", "pairwise")

#: one epoch of a few steps (batch 32 atoms: two 16-atom frames per step)
SETTINGS = {
    "bp": (bpt.BPTrainConfig, dict(hidden=(8, 8), batch_size=32)),
    "paper": (dct.DCFTrainingConfig, dict(head="paper", hidden=(8,), head_hidden=(8,),
                                          batch_size=24, rotations=1)),
    "pairwise": (pwt.PairwiseTrainingConfig, dict(hidden=(8,), pair_cutoff=4.5, n_basis=4,
                                                  rank=2, batch_size=32)),
}


def config_of(kind, **options):
    """The test's training config of `kind` (one epoch, seed 3, one thread), with `options`."""
    cls, base = SETTINGS[kind]
    return cls(**{"epochs": 1, "seed": 3, "threads": 1, **base, **options})


RUNNER = '''
import sys
import numpy as np
from ase.io import read
sys.path.insert(0, {tests!r})
from test_mpi_training import train_kind
from dcf.parallel import world, Comm
from dcf.training.core import set_threads

set_threads(1)
kinds, mode, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
frames = read(sys.argv[4], ":")
comm = world()
if mode == "self":                 # the exchange path with a one-rank MPI communicator
    from mpi4py import MPI
    comm = Comm(MPI.COMM_SELF)
options = eval(sys.argv[5]) if len(sys.argv) > 5 else {{}}
stop = options.pop("stop_after_epoch", None)
for kind in kinds:
    try:
        model = train_kind(kind, frames, comm, stop_after=stop and (lambda fit: fit.epoch == stop),
                           **options)
    except KeyboardInterrupt:
        continue
    model.save(f"{{out}}-{{kind}}.{{comm.rank}}.dcf")
'''

FAULTY = '''
import sys
import numpy as np
import dcf.data.store as store
import dcf.training.bp as bp
from dcf.cli import main
from dcf.parallel import world

fault, calls = sys.argv[1], []
if world().rank == 1 and fault == "data":         # rank 1 reads other forces
    frame = store.FeatureStore.frame

    def other(self, k):
        atoms = frame(self, k)
        atoms.calc.results["forces"] = atoms.calc.results["forces"] + 0.01
        return atoms
    store.FeatureStore.frame = other
if world().rank == 1 and fault == "memory":       # rank 1 fails in its third step
    shard_inputs = bp.BPFit.shard_inputs

    def failing(self, *args):
        calls.append(1)
        if len(calls) > 2:
            raise MemoryError("cannot allocate 48 GiB")
        return shard_inputs(self, *args)
    bp.BPFit.shard_inputs = failing
sys.exit(main(sys.argv[2:]))
'''


def train_kind(kind, frames, comm=None, stop_after=None, **options):
    """Train `kind` on `frames` through the library (as `dcf train` does), quietly."""
    config = config_of(kind, **options)
    if kind == "bp":
        return bpt.train_bp(frames, cuau_spec(), config, quiet, stop_after=stop_after, comm=comm)
    if kind == "pairwise":
        return pwt.train_pairwise(frames, cuau_spec(), config, quiet, stop_after=stop_after,
                                  comm=comm)
    return dct.train(dct.MemoryFeatures(frames, cuau_spec(), 0.0), config, quiet,
                     stop_after=stop_after, comm=comm)


def quiet(*_):
    """A log sink."""


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """10 EMT Cu-Au frames of 16 atoms (energies and forces) and their file."""
    frames = emt_frames(10, seed=5)
    path = tmp_path_factory.mktemp("frames") / "cuau.extxyz"
    write(path, frames)
    return read(path, ":"), path


def run_ranks(n, tmp, frames_path, mode, kinds=KINDS, options="{}", timeout=240):
    """Run the runner on `n` ranks (n = 0: a plain process); returns the CompletedProcess."""
    script = tmp / "runner.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent)))
    launcher = [str(MPIEXEC), "-n", str(n)] if n else []
    res = subprocess.run([*launcher, sys.executable, str(script), ",".join(kinds), mode,
                          str(tmp / mode), str(frames_path), options], capture_output=True,
                         text=True, timeout=timeout, env=ENV, cwd=tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def arrays(path) -> dict:
    return read_model_file(path)[1]


def assert_same_arrays(a: dict, b: dict, rtol=0.0):
    assert sorted(a) == sorted(b)
    for key in a:
        if rtol:
            np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=0, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def curves(path):
    """(stage, element, epoch, train loss, validation loss) of a model file's fits."""
    from dcf.models import load_model
    return [(f["stage"], f["element"], *h[:3]) for f in load_model(path).training["fits"]
            for h in f["history"]]


# ---- K = 1 -----------------------------------------------------------------------------------
@needs_mpiexec
def test_one_rank_exchange_path_equals_the_fused_serial_step_bit_for_bit(frames, tmp_path):
    _, path = frames
    run_ranks(0, tmp_path, path, "serial")
    run_ranks(0, tmp_path, path, "self")
    for kind in KINDS:
        serial = tmp_path / f"serial-{kind}.0.dcf"
        assert_same_arrays(arrays(serial), arrays(tmp_path / f"self-{kind}.0.dcf"))
        assert curves(serial) == curves(tmp_path / f"self-{kind}.0.dcf")


# ---- K = 2 against a serial sum of the two shards' gradients ----------------------------------
def summed_step(dp, shard_inputs):
    """One step of the serial reference: the gradients of shards 0 and 1 summed in float64,
    the update from the sum."""
    flat = np.zeros(dp.n_params + 1)
    for r in (0, 1):
        inputs = shard_inputs(r)
        if inputs is not None:
            flat += dp.gradient(*inputs).numpy()
    dp.apply(flat[:dp.n_params])


def reference_bp(frames):
    config = config_of("bp")
    bp, _ = bpt.prepare_fit(frames, cuau_spec(), config, quiet)
    for ids in bp.epoch_batches(0):
        summed_step(bp.dp, lambda r: bp.shard_inputs(ids, r, 2))
    return bpt.export_model(cuau_spec(), bp.nets, bp.data, config, {})


def reference_pairwise(frames):
    config, spec = config_of("pairwise"), cuau_spec()
    featurizer = Featurizer(invariant_spec(spec), 1)
    graphs = [pwt.frame_graph(featurizer, a, config.pair_cutoff, f"frame {k}")
              for k, a in enumerate(frames)]
    fit_ids, val_ids = validation_split(np.arange(len(graphs)), config.validation_fraction,
                                        config.seed)
    pf = pwt.PairwiseFit(graphs, spec.elements, config, fit_ids, val_ids)
    for q in pf.epoch_order(0):
        summed_step(pf.dp, lambda r: pf.shard_inputs(pf.batches[q], r, 2))
    return pwt.export_model(spec, pf.net, pf.g_mean, pf.g_std, config, {})


def reference_paper(frames):
    config = config_of("paper")
    store = dct.MemoryFeatures(frames, cuau_spec(), 0.0)
    data = dct.prepare(store, config, None, quiet)
    weights = {el: {"nn1": None, "head": None} for el in store.elements}
    for stage in config.stages:
        for el in store.elements:
            sf = dct.StageFit(config, data, stage, el, weights[el])
            for (part0, _), (part1, _) in zip(sf.epoch_batches(store, 0, 0, 2),
                                              sf.epoch_batches(store, 0, 1, 2)):
                summed_step(sf.dp, lambda r: (part0, part1)[r])
            weights[el].update(sf.parts())
    return dct.export_model(data.spec, config, data.norms, weights, config.stages)


@needs_mpiexec
def test_two_ranks_equal_a_serial_sum_of_the_two_shards_gradients(frames, tmp_path):
    atoms, path = frames
    run_ranks(2, tmp_path, path, "mpi")
    run_ranks(0, tmp_path, path, "serial")
    references = {"bp": reference_bp, "paper": reference_paper, "pairwise": reference_pairwise}
    for kind in KINDS:
        ranks = [arrays(tmp_path / f"mpi-{kind}.{r}.dcf") for r in (0, 1)]
        assert_same_arrays(ranks[0], ranks[1])                   # every rank: the same bits
        ref = tmp_path / f"ref-{kind}.dcf"
        references[kind](atoms).save(ref)
        assert_same_arrays(ranks[0], arrays(ref))
        # the shards' losses add up to the serial batch's loss (float32 round-off apart)
        mpi, serial = curves(tmp_path / f"mpi-{kind}.0.dcf"), curves(tmp_path /
                                                                      f"serial-{kind}.0.dcf")
        assert [c[:3] for c in mpi] == [c[:3] for c in serial]
        np.testing.assert_allclose([c[3:] for c in mpi], [c[3:] for c in serial], rtol=1e-5)


# ---- checkpoints, files, resume ---------------------------------------------------------------
@needs_mpiexec
def test_a_run_killed_after_an_epoch_resumes_under_mpiexec_to_the_same_weights(frames,
                                                                               tmp_path):
    _, path = frames
    ckpt = tmp_path / "bp.ckpt"
    options = f"dict(epochs=2, checkpoint={str(ckpt)!r}, checkpoint_every=0.0)"
    run_ranks(2, tmp_path, path, "killed", ["bp"], options[:-1] + ", stop_after_epoch=1)")
    assert ckpt.exists() and sorted(p.name for p in tmp_path.glob("*ckpt*")) == ["bp.ckpt"]
    assert not list(tmp_path.glob("killed-*"))
    run_ranks(2, tmp_path, path, "resumed", ["bp"], options)
    run_ranks(2, tmp_path, path, "straight", ["bp"], "dict(epochs=2)")
    assert_same_arrays(arrays(tmp_path / "resumed-bp.0.dcf"),
                       arrays(tmp_path / "straight-bp.0.dcf"))
    assert curves(tmp_path / "resumed-bp.0.dcf") == curves(tmp_path / "straight-bp.0.dcf")


@pytest.fixture(scope="module")
def store(frames, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    cuau_spec().save(tmp / "spec.json")
    subprocess.run([sys.executable, "-m", "dcf", "featurize", str(frames[1]), "--spec",
                    str(tmp / "spec.json"), "--out", str(tmp / "f.h5"), "--test-fraction",
                    "0.2", "--quiet"], check=True, env=ENV, timeout=120)
    return tmp / "f.h5"


TRAIN = ["--model", "bp", "--epochs", "2", "--hidden", "8,8", "--batch-size", "32"]


@needs_mpiexec
def test_dcf_train_on_two_ranks_prints_and_writes_once(store, tmp_path):
    res = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-m", "dcf", "train",
                          str(store), *TRAIN, "--out", "m.dcf"], capture_output=True,
                         text=True, timeout=240, env=ENV, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("bp epoch 2:") == 1 and res.stdout.count("wrote m.dcf") == 1
    assert "on 2 MPI ranks" in res.stdout and "2 rank(s)" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dcf", "m.lcurve.png",
                                                          "m.lcurve.txt"]


@needs_mpiexec
@pytest.mark.parametrize("fault, words", [
    ("data", "dcf train: the MPI ranks read different training frames: rank(s) 1 differ"),
    ("memory", "dcf train (rank 1 of 2): out of memory (cannot allocate 48 GiB)")])
def test_a_bad_input_or_a_fault_on_one_rank_ends_both_with_one_message(store, tmp_path,
                                                                       fault, words):
    (tmp_path / "faulty.py").write_text(FAULTY)
    res = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "faulty.py", fault, "train",
                          str(store), *TRAIN, "--out", "m.dcf"], capture_output=True,
                         text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.startswith("dcf train")]
    assert len(lines) == 1 and lines[0].startswith(words), res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faulty.py"]
