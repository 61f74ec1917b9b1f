import pytest

from lwpd import _config


@pytest.fixture(params=["serial", "threaded"])
def kernel_build(request, monkeypatch):
    """Run a test against both builds of every twin kernel (see ``lwpd._kernels.cpu._Twin``):
    the serial one (small inputs) and the threaded one (large inputs)."""
    threshold = 2**62 if request.param == "serial" else 0
    monkeypatch.setattr(_config, "PARALLEL_MIN_WORK", threshold)
    return request.param
