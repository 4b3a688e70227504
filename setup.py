"""Build the Cython kernels in dcf/_ext (-O3, OpenMP where the compiler supports it)."""
import os
import sys
import tempfile
import subprocess
import sysconfig

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _openmp_flags():
    """Return (compile, link) flags for OpenMP if a test program builds, else ([], [])."""
    if os.environ.get("DCF_NO_OPENMP"):
        return [], []
    cc = sysconfig.get_config_var("CC") or "cc"
    flag = "-fopenmp"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as fh:
            fh.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            res = subprocess.run(cc.split() + [flag, src, "-o", os.path.join(tmp, "t")],
                                 capture_output=True)
        except OSError:
            return [], []
    if res.returncode != 0:
        print("dcf: OpenMP not available, building serial kernels", file=sys.stderr)
        return [], []
    return [flag], [flag]


omp_compile, omp_link = _openmp_flags()
compile_args = ["-O3", "-ffp-contract=off"] + omp_compile

extensions = [
    Extension(
        f"dcf._ext.{name}",
        [f"dcf/_ext/{name}.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=compile_args,
        extra_link_args=omp_link,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in ("neighbors", "fingerprints")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
