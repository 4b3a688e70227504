"""Inference runs numpy's BLAS on the model's threads, not on the pool sized for the machine.

A fresh Python process (no thread variables in its environment) sets its BLAS pool to 3 threads,
a default different from every model setting used here on any machine (OpenBLAS caps its own
default at the core count); inside every network evaluation of DCF and B-P calls it records the
BLAS thread count that threadpoolctl reports (a fresh scan of the loaded libraries, not the
controller the models use), and after each call the default again.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

DEFAULT = 3
CHILD = r"""
import json
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
from dcf.bench.costs import bp_model, table_s4_model
from dcf.data.structures import system_b
from dcf.models.dcf import NetworkStack
from dcf.models.mlp import MLP

seen = []

def blas_threads():
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

def recording(fn):
    def wrapped(*args, **kwargs):
        seen.append(blas_threads())
        return fn(*args, **kwargs)
    return wrapped

for cls, name in ((MLP, "__call__"), (MLP, "value_and_input_gradient"),
                  (NetworkStack, "__call__")):
    setattr(cls, name, recording(getattr(cls, name)))

threadpool_limits(DEFAULT, user_api="blas")
atoms = system_b()
out = {"before": blas_threads()}
for label, model, call in (
        ("dcf forces", table_s4_model("paper", num_threads=1), lambda m: m.forces(atoms)),
        ("dcf predict", table_s4_model("covariant", num_threads=2),
         lambda m: m.predict("Li", np.ones((4, 36)), np.ones((4, 6, 3)))),
        ("bp", bp_model(num_threads=2), lambda m: m.compute(atoms, ("energy", "forces")))):
    seen.clear()
    call(model)
    out[label] = list(seen)
    out[label + " after"] = blas_threads()
model = table_s4_model("paper", num_threads=1)
model.set_threads(2)
seen.clear()
model.forces(atoms)
out["dcf after set_threads(2)"] = list(seen)
print(json.dumps(out))
"""


def test_force_calls_run_blas_on_the_models_threads():
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    child = CHILD.replace("DEFAULT", str(DEFAULT))
    run = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["before"] == [DEFAULT]
    expected = {"dcf forces": 1, "dcf predict": 2, "bp": 2, "dcf after set_threads(2)": 2}
    for label, threads in expected.items():
        assert out[label], f"{label}: no network evaluation was seen"
        assert all(t == [threads] for t in out[label]), (label, out[label])
    for label in ("dcf forces", "dcf predict", "bp"):
        assert out[label + " after"] == [DEFAULT], label
