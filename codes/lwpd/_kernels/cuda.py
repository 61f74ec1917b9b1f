"""numba.cuda kernels (private; imported lazily, never by ``import lwpd``).

They mirror :mod:`lwpd._kernels.cpu` and assume validated, device-resident input. The codebook
layout is the same: a tiled base pattern (ELL form, local coordinates) over the leading blocks,
then the remaining codewords in CSR form with global coordinates.

Under ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) the same kernels run in Numba's
CUDA simulator, which is how they are tested on machines without a GPU.
"""

from __future__ import annotations

from numba import cuda, float64, int32, int64

from lwpd._config import CUDA_MAX_DECODE_BLOCK, CUDA_SHARED_PATTERN
from lwpd._kernels import _dense

_MAXB = CUDA_MAX_DECODE_BLOCK

#: ``x = A^+ c`` for a block's information matrix; the CPU kernels compile the same code.
min_norm_solve = cuda.jit(device=True)(_dense.min_norm_solve)

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


@cuda.jit
def fill(a, value):
    """``a[:] = value`` for a 1-D device array (no host buffer, no transfer)."""
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[i] = value


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


@cuda.jit
def count_bad_indices(indices, upper, flag):
    """``flag[0]`` += the number of indices outside ``[0, upper)``."""
    bad = 0
    for t in range(cuda.grid(1), indices.shape[0], cuda.gridsize(1)):
        if indices[t] < 0 or indices[t] >= upper:
            bad += 1
    if bad:
        cuda.atomic.add(flag, 0, bad)


# ---------------------------------------------------------------------------- projection decode


@cuda.jit(device=True)
def block_of_codeword(j, m, tile_blocks, rest_block):
    base = m * tile_blocks
    if j < base:
        return j // m
    return rest_block[j - base]


@cuda.jit(device=True)
def _accumulate_row(ptr, idx, dat, r, shift, weight, total, A, c):
    """Add ``weight * v v^T`` to the shared ``A`` and ``total * v`` to ``c`` for row ``r``
    (local coordinates ``idx - shift``); atomics, as the block's threads share ``A``."""
    for p in range(ptr[r], ptr[r + 1]):
        vp = dat[p]
        cuda.atomic.add(c, idx[p] - shift, total * vp)
        for q in range(ptr[r], ptr[r + 1]):
            cuda.atomic.add(A, (idx[p] - shift, idx[q] - shift), weight * vp * dat[q])


@cuda.jit
def fold_in(indices, values, counts, sums, m, tile_blocks, rest_block, dirty):
    """Batched fold-in on the device: count and sum each arrival (atomics, so repeats in one
    batch are safe) and mark its block for re-solving. One thread per arrival."""
    for t in range(cuda.grid(1), indices.shape[0], cuda.gridsize(1)):
        j = indices[t]
        cuda.atomic.add(counts, j, 1)
        cuda.atomic.add(sums, j, values[t])
        dirty[block_of_codeword(j, m, tile_blocks, rest_block)] = 1


@cuda.jit
def solve_blocks(dirty, offsets, tptr, tidx, tdat, tile_blocks, rptr, ridx, rdat, order, gptr, counts, sums, tol, ranks, x):
    """Re-solve every marked block: one thread block per gradient block (grid-stride).

    The threads accumulate the block's information matrix ``A = sum_j k_j v_j v_j^T`` and
    ``c = sum_j s_j v_j`` in shared memory (each thread takes some of the block's received
    codewords; shared-memory atomics), then one thread factors the small ``b x b`` system
    (pivoted Cholesky, minimum norm on rank deficiency -- the CPU's code) and the block's
    threads write the solution.
    """
    A = cuda.shared.array((_MAXB, _MAXB), float64)
    M = cuda.shared.array((_MAXB, _MAXB + 1), float64)
    c = cuda.shared.array(_MAXB, float64)
    y = cuda.shared.array(_MAXB, float64)
    xb = cuda.shared.array(_MAXB, float64)
    piv = cuda.shared.array(_MAXB, int64)
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    m = tptr.shape[0] - 1
    n_blocks = offsets.shape[0] - 1
    for beta in range(cuda.blockIdx.x, n_blocks, cuda.gridDim.x):
        if dirty[beta] == 0:  # the same for every thread of the block: no divergent barrier
            continue
        o = offsets[beta]
        b = offsets[beta + 1] - o
        for e in range(tid, b * b, nthreads):
            A[e // b, e % b] = 0.0
        for e in range(tid, b, nthreads):
            c[e] = 0.0
        cuda.syncthreads()
        if beta < tile_blocks:
            for r in range(tid, m, nthreads):
                j = beta * m + r
                if counts[j] != 0:
                    _accumulate_row(tptr, tidx, tdat, r, 0, counts[j], sums[j], A, c)
        else:
            base = m * tile_blocks
            g = beta - tile_blocks
            for t in range(gptr[g] + tid, gptr[g + 1], nthreads):
                r = order[t]
                if counts[base + r] != 0:
                    _accumulate_row(rptr, ridx, rdat, r, o, counts[base + r], sums[base + r], A, c)
        cuda.syncthreads()
        if tid == 0:
            ranks[beta] = min_norm_solve(A, c, b, tol, piv, y, M, xb)
            dirty[beta] = 0
        cuda.syncthreads()
        for i in range(tid, b, nthreads):
            x[o + i] = xb[i]
        cuda.syncthreads()


# ---------------------------------------------------------------------------- peeling


@cuda.jit
def receive(indices, values, received, first_value):
    """Record arrivals for peeling: the first arrival of a codeword keeps its value."""
    for t in range(cuda.grid(1), indices.shape[0], cuda.gridsize(1)):
        j = indices[t]
        if cuda.atomic.cas(received, j, 0, 1) == 0:
            first_value[j] = values[t]


@cuda.jit
def peel_blocks(block_ptr, block_codewords, indptr, cols, data, received, first_value, known, coords):
    """Peeling per block until nothing changes: one thread per gradient block (grid-stride).

    A received codeword of the block with exactly one unknown coordinate determines it; sweeps
    repeat until a sweep recovers nothing. Reaches the same fixed point as the CPU's queue.
    """
    for blk in range(cuda.grid(1), block_ptr.shape[0] - 1, cuda.gridsize(1)):
        changed = True
        while changed:
            changed = False
            for t in range(block_ptr[blk], block_ptr[blk + 1]):
                j = block_codewords[t]
                if received[j] == 0:
                    continue
                unknown = 0
                last = -1
                coef = 0.0
                residual = first_value[j]
                for p in range(indptr[j], indptr[j + 1]):
                    i = cols[p]
                    if known[i]:
                        residual -= data[p] * coords[i]
                    else:
                        unknown += 1
                        last = i
                        coef = data[p]
                if unknown == 1:
                    coords[last] = residual / coef
                    known[last] = 1
                    changed = True
