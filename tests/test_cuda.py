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


# ---------------------------------------------------------------------------- decoders
from lwpd import PeelingDecoder, ProjectionDecoder, decode, identity_codebook  # noqa: E402

DECODE_CODEBOOKS = {
    "tiled+tail": lambda: block_codebook(projective_codebook(3), Partition.uniform(3 * 2 + 2, 3)),
    "mixed": lambda: block_codebook(lambda s: projective_codebook(s, max_weight=2), Partition.from_sizes([2, 4, 3])),
    "csr": lambda: random_codebook(8, 4, kind="sparse", weight=2, seed=2),
}


def _host(arr):
    return arr.copy_to_host() if _backend.is_device_array(arr) else arr


@pytest.mark.parametrize("name", list(DECODE_CODEBOOKS))
@pytest.mark.slow
def test_cuda_projection_matches_cpu_and_pinv(name):
    cb = DECODE_CODEBOOKS[name]()
    V = cb.to_dense()
    rng = np.random.default_rng(6)
    for size in (1, len(cb) // 2, len(cb)):
        idx = rng.choice(len(cb), size=size, replace=False)
        idx = np.concatenate([idx, idx[:1]])  # a repeated arrival
        values = rng.standard_normal(idx.size)
        dec = ProjectionDecoder(cb, backend="cuda")
        dec.update(idx, values)
        expected = ref.decode_projection(V, idx, values)
        np.testing.assert_allclose(_host(dec.estimate()), expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(decode(cb, idx, values, backend="cuda"), decode(cb, idx, values), rtol=1e-9, atol=1e-12)
        assert dec.rank == np.linalg.matrix_rank(V[idx])
        np.testing.assert_array_equal(dec.block_ranks, _cpu_ranks(cb, idx, values))
        np.testing.assert_array_equal(dec.received, np.unique(idx))


def _cpu_ranks(cb, idx, values):
    dec = ProjectionDecoder(cb)
    dec.update(idx, values)
    return dec.block_ranks


@pytest.mark.slow
def test_cuda_projection_is_order_invariant_and_resets():
    cb = DECODE_CODEBOOKS["tiled+tail"]()
    rng = np.random.default_rng(7)
    idx = rng.choice(len(cb), size=12, replace=True)
    values = rng.integers(-4, 5, size=12).astype(float)
    batch = ProjectionDecoder(cb, backend="cuda")
    batch.update(idx, values)
    single = ProjectionDecoder(cb, backend="cuda")
    for j in rng.permutation(12):
        single.update(int(idx[j]), float(values[j]))
    np.testing.assert_allclose(_host(single.estimate()), _host(batch.estimate()), rtol=1e-10, atol=1e-10)
    assert single.n_received == 12
    single.reset()
    assert single.rank == 0 and single.n_received == 0
    np.testing.assert_array_equal(_host(single.estimate()), np.zeros(cb.dim))


def test_cuda_fold_in_takes_device_arrays_without_a_host_round_trip():
    cb = DECODE_CODEBOOKS["mixed"]()
    g = np.random.default_rng(8).standard_normal(cb.dim)
    idx = np.arange(len(cb))
    dec = ProjectionDecoder(cb, backend="cuda")
    dec.update(cuda.to_device(idx), cuda.to_device(cb.encode(g)))
    est = dec.estimate()
    assert _backend.is_device_array(est)
    np.testing.assert_allclose(est.copy_to_host(), g, atol=1e-10)
    on_device = decode(cb, cuda.to_device(idx), cuda.to_device(cb.encode(g)), backend="cuda")
    assert _backend.is_device_array(on_device)


@pytest.mark.parametrize("decoder", [ProjectionDecoder, PeelingDecoder])
@pytest.mark.parametrize(
    "indices,values,exc,match",
    [
        (np.array([1, 99]), np.array([1.0, 2.0]), IndexError, "indices must lie in"),
        (np.array([1, 2]), np.array([1.0, np.nan]), ValueError, "values must be finite"),
        (np.array([1, 2]), np.array([1.0]), ValueError, "one entry per index"),
    ],
)
@pytest.mark.slow
def test_cuda_rejected_updates_leave_the_decoder_unchanged(decoder, indices, values, exc, match):
    cb = projective_codebook(3, normalize=False)
    g = np.array([1.0, -2.0, 3.0])
    for to_device in (False, True):
        dec = decoder(cb, backend="cuda")
        dec.update([0, 4], cb.encode(g)[[0, 4]])
        before = _host(dec.estimate()).copy(), dec.n_received
        args = (cuda.to_device(indices), cuda.to_device(values)) if to_device else (indices, values)
        with pytest.raises(exc, match=match):
            dec.update(*args)
        np.testing.assert_array_equal(_host(dec.estimate()), before[0])
        assert dec.n_received == before[1]
        dec.update(np.arange(len(cb)), cb.encode(g))
        np.testing.assert_allclose(_host(dec.estimate()), g, atol=1e-12)


@pytest.mark.parametrize("name", ["projective-w2", "tiled+tail"])
def test_cuda_peeling_matches_the_oracle(name):
    cb = {
        "projective-w2": lambda: projective_codebook(5, max_weight=2, normalize=False),
        "tiled+tail": lambda: block_codebook(projective_codebook(3, max_weight=2), Partition.uniform(3 * 2 + 2, 3)),
    }[name]()
    V = cb.to_dense()
    rng = np.random.default_rng(9)
    for _ in range(4):
        g = rng.standard_normal(cb.dim)
        idx = rng.choice(len(cb), size=rng.integers(1, len(cb) + 1), replace=False)
        values = cb.encode(g)[idx]
        dec = PeelingDecoder(cb, backend="cuda")
        dec.update(idx, values)
        known, _ = ref.peel(V, idx, values)
        np.testing.assert_array_equal(dec.known, known)
        np.testing.assert_allclose(_host(dec.values())[known], g[known], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(decode(cb, idx, values, method="peeling", backend="cuda"), np.where(known, g, 0.0), atol=1e-10)


def test_cuda_decoders_reject_blocks_beyond_shared_memory():
    with pytest.raises(ValueError, match="at most 32"):
        ProjectionDecoder(identity_codebook(33), backend="cuda")


@pytest.mark.slow
def test_gpu_check_script_rehearses_in_the_simulator():
    import os
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "FAILED" not in out.stdout and "MISMATCH" not in out.stdout
    assert out.stdout.count(" ok") >= 10


def test_cuda_fold_in_accepts_float32_and_int32_device_arrays():
    cb = DECODE_CODEBOOKS["tiled+tail"]()
    g = np.random.default_rng(10).standard_normal(cb.dim)
    idx = np.arange(len(cb), dtype=np.int32)
    vals = cb.encode(g).astype(np.float32)
    dec = ProjectionDecoder(cb, backend="cuda")
    dec.update(cuda.to_device(idx), cuda.to_device(vals))
    expected = ref.decode_projection(cb.to_dense(), idx, vals.astype(np.float64))
    np.testing.assert_allclose(dec.estimate().copy_to_host(), expected, rtol=1e-9, atol=1e-9)
