"""Systems for the benchmarks: the paper's system B geometry and its replicas."""
import functools

import pytest

from dcf.structures import system_b


@functools.lru_cache(maxsize=None)
def system(replicate: int):
    return system_b(replicate=replicate, seed=0)


@pytest.fixture(params=[1, 2], ids=["208", "1664"])
def atoms(request):
    return system(request.param)
