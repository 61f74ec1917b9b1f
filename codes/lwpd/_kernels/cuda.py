"""numba.cuda kernels (private; imported lazily, never by ``import lwpd``).

They mirror :mod:`lwpd._kernels.cpu` and assume validated, device-resident input. The codebook
layout is the same: a tiled base pattern (ELL form, local coordinates) over the leading blocks,
then the remaining codewords in CSR form with global coordinates.

Under ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) the same kernels run in Numba's
CUDA simulator, which is how they are tested on machines without a GPU.
"""

from __future__ import annotations

from numba import cuda, float64, int32

from lwpd._config import CUDA_SHARED_PATTERN

# ---------------------------------------------------------------------------- checks


@cuda.jit
def count_non_finite(a, flag):
    """``flag[0]`` += the number of NaN or inf entries of the 1-D array ``a`` (grid-stride)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    bad = 0
    for i in range(start, a.shape[0], stride):
        if a[i] * 0.0 != 0.0:  # NaN for NaN or +-inf, 0 otherwise
            bad += 1
    if bad:
        cuda.atomic.add(flag, 0, bad)


# ---------------------------------------------------------------------------- encode


@cuda.jit
def encode_csr(g, indptr, indices, data, first, out):
    """``out[row, first + j] = <row j, g[row]>``: one thread per codeword, grid-stride."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n_codewords = indptr.shape[0] - 1
    for row in range(g.shape[0]):
        for j in range(start, n_codewords, stride):
            acc = 0.0
            for p in range(indptr[j], indptr[j + 1]):
                acc += data[p] * g[row, indices[p]]
            out[row, first + j] = acc


@cuda.jit
def encode_tiled(g, ell_idx_t, ell_val_t, block_size, tile_blocks, out):
    """Uniform-block fast path: ``out[row, beta*m + r] = sum_k val[k, r] g[row, beta*b + idx[k, r]]``.

    Each thread block first stages the small base pattern (``W x m``, at most
    ``CUDA_SHARED_PATTERN`` entries) in shared memory, then its threads stride over
    consecutive outputs -- consecutive codewords of consecutive gradient blocks -- so the
    writes are coalesced and each gradient block is read from cache. No per-nonzero index of
    the full codebook is ever read.
    """
    sh_idx = cuda.shared.array(CUDA_SHARED_PATTERN, int32)
    sh_val = cuda.shared.array(CUDA_SHARED_PATTERN, float64)
    width = ell_idx_t.shape[0]
    m = ell_idx_t.shape[1]
    for t in range(cuda.threadIdx.x, width * m, cuda.blockDim.x):
        sh_idx[t] = ell_idx_t[t // m, t % m]
        sh_val[t] = ell_val_t[t // m, t % m]
    cuda.syncthreads()
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    total = tile_blocks * m
    for row in range(g.shape[0]):
        for k in range(start, total, stride):
            beta = k // m
            r = k - beta * m
            base = beta * block_size
            acc = 0.0
            for w in range(width):
                acc += sh_val[w * m + r] * g[row, base + sh_idx[w * m + r]]
            out[row, k] = acc
