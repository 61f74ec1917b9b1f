"""CUDA backend: the same oracle checks as the CPU kernels.

By default these run in Numba's CUDA simulator (see conftest.py); with LWPD_TEST_CUDA=device
on a machine with an NVIDIA GPU they run unchanged on the device.
"""

import subprocess
import sys

import numpy as np
import pytest

import reference as ref
from lwpd import Codebook, Partition, _backend, _config, block_codebook, projective_codebook, random_codebook

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("small_launches")]

cuda = pytest.importorskip("numba.cuda")
if not _backend.cuda_available():  # a real-device run on a machine without one
    pytest.skip("no CUDA device and the CUDA simulator is off", allow_module_level=True)

CODEBOOKS = {
    "tiled": lambda: block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(4 * 3, 4)),
    "tiled+tail": lambda: block_codebook(projective_codebook(3), Partition.uniform(3 * 2 + 2, 3)),
    "csr": lambda: random_codebook(7, 5, kind="sparse", weight=2, seed=0),
    "dense": lambda: random_codebook(4, 6, seed=1),
}


@pytest.mark.parametrize("name", list(CODEBOOKS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [None, 2])
def test_cuda_encode_matches_cpu_and_oracle(name, dtype, batch):
    cb = CODEBOOKS[name]()
    shape = (cb.dim,) if batch is None else (batch, cb.dim)
    g = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    got = cb.encode(g, backend="cuda")
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == cb.encode(g).shape
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, cb.encode(g), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(got, ref.encode(cb.to_dense(), g.astype(np.float64)), rtol=rtol, atol=rtol)


def test_cuda_encode_keeps_device_input_on_the_device():
    cb = CODEBOOKS["tiled+tail"]()
    g = np.random.default_rng(4).standard_normal((2, cb.dim))
    dev = cuda.to_device(g)
    got = cb.encode(dev, backend="cuda")
    assert _backend.is_device_array(got)
    np.testing.assert_allclose(got.copy_to_host(), cb.encode(g), rtol=1e-12)
    out = cuda.device_array((2, len(cb)))
    assert cb.encode(dev, out=out, backend="cuda") is out
    np.testing.assert_allclose(out.copy_to_host(), cb.encode(g), rtol=1e-12)


def test_cuda_encode_into_host_out():
    cb = CODEBOOKS["tiled"]()
    g = np.arange(cb.dim, dtype=np.float64)
    out = np.empty(len(cb))
    assert cb.encode(g, out=out, backend="cuda") is out
    np.testing.assert_allclose(out, cb.encode(g), rtol=1e-12)


def test_large_base_pattern_falls_back_to_the_csr_kernel(monkeypatch):
    monkeypatch.setattr(_config, "CUDA_SHARED_PATTERN", 4)
    cb = block_codebook(projective_codebook(3), Partition.uniform(9, 3))
    g = np.random.default_rng(5).standard_normal(9)
    np.testing.assert_allclose(cb.encode(g, backend="cuda"), ref.encode(cb.to_dense(), g), rtol=1e-12)


def test_auto_backend_uses_the_device_when_there_is_one():
    cb = CODEBOOKS["csr"]()
    g = np.ones(cb.dim)
    np.testing.assert_allclose(cb.encode(g, backend="auto"), cb.encode(g), rtol=1e-12)
    assert _backend.resolve("auto") == "cuda"


@pytest.mark.parametrize(
    "g,exc,match",
    [
        (np.ones(4), ValueError, "g must have length 5"),
        (np.array([1.0, np.nan, 0.0, 0.0, 0.0]), ValueError, "g must be finite"),
        (np.ones((1, 1, 5)), ValueError, "g must be 1-D or 2-D"),
    ],
)
def test_cuda_encode_errors(g, exc, match):
    cb = CODEBOOKS["csr"]()
    with pytest.raises(exc, match=match):
        cb.encode(g, backend="cuda")
    with pytest.raises(exc, match=match):
        cb.encode(cuda.to_device(g), backend="cuda")


def test_device_input_must_be_floating():
    cb = CODEBOOKS["csr"]()
    with pytest.raises(TypeError, match="float32 or float64"):
        cb.encode(cuda.to_device(np.ones(5, dtype=np.int64)), backend="cuda")


def test_backend_name_is_validated():
    with pytest.raises(ValueError, match="backend must be one of 'cpu', 'cuda', 'auto'"):
        CODEBOOKS["csr"]().encode(np.ones(5), backend="gpu")


def test_no_device_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(_backend, "cuda_available", lambda: False)
    cb = CODEBOOKS["csr"]()
    with pytest.raises(RuntimeError, match="no CUDA device was found.*backend='cpu'"):
        cb.encode(np.ones(5), backend="cuda")
    np.testing.assert_allclose(cb.encode(np.ones(5), backend="auto"), cb.encode(np.ones(5)))


def test_import_lwpd_does_not_import_numba_cuda():
    code = "import sys, lwpd; lwpd.projective_codebook(3).encode([1.0, 2.0, 3.0]); print('numba.cuda' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
