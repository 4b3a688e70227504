"""Build the Cython kernels in dcf/_ext (-O3, OpenMP where the compiler supports it).

On x86-64 the fingerprint kernels are built three times from one source: portable (SSE2),
for AVX2 + FMA (`fingerprints_avx2`) and for AVX-512F (`fingerprints_avx512`, 8-lane
vectors); dcf.descriptors.fingerprints uses the widest the CPU has. DCF_NO_AVX2=1 skips both vector
builds, DCF_NO_AVX512=1 the AVX-512 one.
"""
import glob
import os
import platform
import sys
import tempfile
import subprocess
import sysconfig

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiles(flags, program: str) -> bool:
    """Whether the C compiler builds `program` with `flags`."""
    cc = sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as fh:
            fh.write(program)
        try:
            res = subprocess.run(cc.split() + flags + [src, "-o", os.path.join(tmp, "t")],
                                 capture_output=True)
        except OSError:
            return False
    return res.returncode == 0


def _openmp_flags():
    """Return (compile, link) flags for OpenMP if a test program builds, else ([], [])."""
    if os.environ.get("DCF_NO_OPENMP"):
        return [], []
    if not _compiles(["-fopenmp"], "#include <omp.h>\n"
                     "int main(void){return omp_get_max_threads() < 1;}\n"):
        print("dcf: OpenMP not available, building serial kernels", file=sys.stderr)
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


def _x86_flags(flags, program):
    """`flags` on x86-64 where the compiler takes them for `program`, else None; None too
    with DCF_NO_AVX2=1 and for a macOS universal build."""
    if (os.environ.get("DCF_NO_AVX2", "") not in ("", "0")
            or platform.machine().lower() not in ("x86_64", "amd64")
            or "arm64" in os.environ.get("ARCHFLAGS", "")):
        return None
    return flags if _compiles(flags, program) else None


def _avx2_flags():
    """AVX2, FMA and fused multiply-adds, else None."""
    return _x86_flags(["-mavx2", "-mfma", "-ffp-contract=fast"],
                      "#include <immintrin.h>\nint main(void){__m256d x = _mm256_set1_pd(1.0);"
                      "return (int)_mm256_cvtsd_f64(_mm256_fmadd_pd(x, x, x)) != 2;}\n")


def _avx512_flags():
    """AVX-512F on top of the AVX2 flags, else None; DCF_NO_AVX512=1 skips it."""
    if os.environ.get("DCF_NO_AVX512", "") not in ("", "0"):
        return None
    return _x86_flags(["-mavx512f", "-mavx2", "-mfma", "-ffp-contract=fast"],
                      "#include <immintrin.h>\nint main(void){__m512d x = _mm512_set1_pd(1.0);"
                      "return (int)_mm512_reduce_add_pd(_mm512_fmadd_pd(x, x, x)) != 16;}\n")


omp_compile, omp_link = _openmp_flags()
avx2 = _avx2_flags()
avx512 = _avx512_flags() if avx2 else None
compile_args = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"] + omp_compile

kernels = [("neighbors", []), ("fingerprints", []), ("pairs", [])]
if avx2:
    kernels.append(("fingerprints_avx2", avx2))
if avx512:
    kernels.append(("fingerprints_avx512", avx512))

extensions = [
    Extension(
        f"dcf._ext.{name}",
        [f"dcf/_ext/{name}.pyx"],
        include_dirs=[np.get_include(), "dcf/_ext"],
        depends=sorted(glob.glob("dcf/_ext/*.h") + glob.glob("dcf/_ext/*.pxd")),
        extra_compile_args=compile_args + extra,
        extra_link_args=omp_link,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name, extra in kernels
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
