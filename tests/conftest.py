import os

# The CUDA kernels run in Numba's CUDA simulator unless LWPD_TEST_CUDA=device (a real GPU).
# The switch must be set before numba is first imported, hence here, above every import.
if os.environ.get("LWPD_TEST_CUDA", "simulator") == "simulator":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# scikit-learn's estimator checks include an array-API check that runs only when SciPy was
# imported with array-API support switched on; the adapters must pass it too.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest  # noqa: E402

from lwpd import _config  # noqa: E402


@pytest.fixture(params=["serial", "threaded"])
def kernel_build(request, monkeypatch):
    """Run a test against both builds of every twin kernel (see ``lwpd._kernels.cpu._Twin``):
    the serial one (small inputs) and the threaded one (large inputs)."""
    threshold = 2**62 if request.param == "serial" else 0
    monkeypatch.setattr(_config, "PARALLEL_MIN_WORK", threshold)
    return request.param


@pytest.fixture
def small_launches(monkeypatch):
    """Tiny CUDA grids: the simulator runs every thread as a Python thread, so keep launches
    to a couple of blocks of 32 threads (the kernels are grid-stride, so any grid is correct)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 32)
        monkeypatch.setattr(_config, "CUDA_MAX_BLOCKS", 2)


@pytest.fixture(scope="session")
def dask_session():
    """One Dask LocalCluster (two worker processes) for the whole session, started on first use."""
    from lwpd.cluster import dask_cluster

    with dask_cluster(n_workers=2) as cluster:
        yield cluster


@pytest.fixture
def dask(dask_session):
    """The session's Dask cluster, reset (clock, seed, scattered data) for each test."""
    dask_session.reset()
    yield dask_session
    dask_session.reset()
