"""Numba CPU kernels (private).

Kernels assume validated input: contiguous arrays, int64 indices in range, finite values.
Public functions in :mod:`lwpd.codebook` and :mod:`lwpd.decoders` check and dispatch.

The codebook as the kernels see it
-----------------------------------
A codebook is a *tile* -- a base pattern ``(tptr, tidx, tdat)`` with ``m`` rows in local
block coordinates, repeated over blocks ``0 .. tile_blocks - 1`` (codeword ``beta*m + r`` is
base row ``r`` in block ``beta``) -- followed by *rest* codewords ``(rptr, ridx, rdat)`` with
global coordinates, whose indices start at ``m * tile_blocks``. Rest codewords are grouped by
block through ``order``/``gptr`` (``gptr`` runs over blocks ``tile_blocks .. n_blocks-1``).
An untiled codebook has ``m = tile_blocks = 0``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

import types

from lwpd import _config
from lwpd._kernels import _dense
from lwpd._config import CACHE, FASTMATH

_STRICT = dict(cache=CACHE)  # no fast-math: used where NaN/inf must be seen exactly
_FAST = dict(cache=CACHE, fastmath=set(FASTMATH))


class _Twin:
    """A kernel compiled twice: threaded for large inputs, serial for small ones.

    Starting the thread pool costs far more than a small input's work (and much more on a
    busy machine), so callers pass a work estimate and the serial build runs below
    ``PARALLEL_MIN_WORK``. Under the serial build ``prange`` is a plain ``range``.
    """

    def __init__(self, fn, **options):
        # Distinct qualnames keep the two builds apart in Numba's on-disk cache.
        serial_fn = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__)
        serial_fn.__qualname__ = fn.__qualname__ + "_serial"
        self.parallel = njit(parallel=True, **options)(fn)
        self.serial = njit(**options)(serial_fn)
        self.__doc__ = fn.__doc__

    def __call__(self, *args, work):
        kernel = self.parallel if work >= _config.PARALLEL_MIN_WORK else self.serial
        return kernel(*args)


def _twin(**options):
    return lambda fn: _Twin(fn, **options)


# ---------------------------------------------------------------------------- checks
@njit(**_STRICT)
def all_finite(a):
    """True when every entry of the 1-D array ``a`` is finite.

    ``x * 0.0`` is NaN for NaN or +-inf and 0 otherwise; without fast-math the sum is not
    reassociated, so eight independent sums keep the adds from waiting on each other. Serial:
    the scan is memory-bound, and waking the thread pool cost more than the whole scan in
    every size measured on a shared 2-core machine (up to 16M entries).
    """
    n = a.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = 0
    while i + 8 <= n:
        s0 += a[i] * 0.0
        s1 += a[i + 1] * 0.0
        s2 += a[i + 2] * 0.0
        s3 += a[i + 3] * 0.0
        s4 += a[i + 4] * 0.0
        s5 += a[i + 5] * 0.0
        s6 += a[i + 6] * 0.0
        s7 += a[i + 7] * 0.0
        i += 8
    while i < n:
        s0 += a[i] * 0.0
        i += 1
    return (s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7) == 0.0


# ---------------------------------------------------------------------------- encode
# Tiled encode kernels are specialised on a small integer -- the padded width W of the
# sparse (ELL) form, or the block size b of the dense form -- baked in as a closure
# constant: with a constant trip count LLVM unrolls the inner product and vectorises across
# codewords (3-4x faster than a runtime bound). Each (form, constant, build) is compiled
# once, cached on disk, and kept in ``_TILED_KERNELS``.
_TILED_KERNELS: dict = {}


def _make_tiled_kernel(form, const, threaded):
    if form == "ell":

        def kernel(g3, ell_idx_t, ell_val_t, out3):
            """``out3[row, beta, r] = sum_k ell_val_t[k, r] * g3[row, beta, ell_idx_t[k, r]]``:
            the base pattern, transposed and zero-padded to ``const`` entries per codeword."""
            m = ell_idx_t.shape[1]
            for row in range(g3.shape[0]):
                for beta in prange(g3.shape[1]):
                    gb = g3[row, beta]
                    ob = out3[row, beta]
                    for r in range(m):
                        acc = ell_val_t[0, r] * gb[ell_idx_t[0, r]]
                        for k in range(1, const):
                            acc += ell_val_t[k, r] * gb[ell_idx_t[k, r]]
                        ob[r] = acc

    else:

        def kernel(g3, base_t, out3):
            """``out3[row, beta] = g3[row, beta] @ base_t`` with ``base_t`` the dense
            ``const x m`` transposed base pattern."""
            m = base_t.shape[1]
            for row in range(g3.shape[0]):
                for beta in prange(g3.shape[1]):
                    gb = g3[row, beta]
                    ob = out3[row, beta]
                    for r in range(m):
                        acc = gb[0] * base_t[0, r]
                        for c in range(1, const):
                            acc += gb[c] * base_t[c, r]
                        ob[r] = acc

    # A distinct qualname per specialisation keeps them apart in Numba's on-disk cache.
    kernel.__qualname__ = kernel.__name__ = f"encode_tiled_{form}_{const}_{'threaded' if threaded else 'serial'}"
    return njit(parallel=threaded, **_FAST)(kernel)


def encode_tiled(form, const, g3, pattern, out3, *, work):
    """Encode the tiled blocks with the ``form`` ("ell" or "dense") kernel specialised on
    ``const``; ``pattern`` is ``(ell_idx_t, ell_val_t)`` or ``(base_t,)``."""
    threaded = work >= _config.PARALLEL_MIN_WORK
    key = (form, int(const), threaded)
    if key not in _TILED_KERNELS:
        _TILED_KERNELS[key] = _make_tiled_kernel(form, int(const), threaded)
    _TILED_KERNELS[key](g3, *pattern, out3)


@_twin(**_FAST)
def encode_csr(g, indptr, indices, data, first, out):
    """``out[:, first + j] = <row j, g>`` for CSR rows with global coordinates."""
    n_codewords = indptr.shape[0] - 1
    n_rows = g.shape[0]
    for j in prange(n_codewords):
        for row in range(n_rows):
            acc = 0.0
            for p in range(indptr[j], indptr[j + 1]):
                acc += data[p] * g[row, indices[p]]
            out[row, first + j] = acc


# ---------------------------------------------------------------------------- packed-codebook helpers
@njit(inline="always", **_FAST)
def block_of_codeword(j, m, tile_blocks, rest_block):
    base = m * tile_blocks
    if j < base:
        return j // m
    return rest_block[j - base]


@njit(inline="always", **_FAST)
def _accumulate_row(ptr, idx, dat, r, shift, weight, total, A, c):
    """Add ``weight * v v^T`` to ``A`` and ``total * v`` to ``c`` for row ``r`` (local coords)."""
    for p in range(ptr[r], ptr[r + 1]):
        ip = idx[p] - shift
        vp = dat[p]
        c[ip] += total * vp
        for q in range(ptr[r], ptr[r + 1]):
            A[ip, idx[q] - shift] += weight * vp * dat[q]


@njit(inline="always", **_FAST)
def assemble_block(beta, offsets, tptr, tidx, tdat, tile_blocks, rptr, ridx, rdat, order, gptr, counts, sums, A, c):
    """Information matrix ``A = sum_j k_j v_j v_j^T`` and ``c = sum_j s_j v_j`` of block ``beta``.

    ``k_j`` counts the arrivals of codeword ``j`` and ``s_j`` sums their values, so repeated
    arrivals act as repeated rows of ``V_S`` (exactly as ``pinv`` of the stacked rows).
    Returns the block size.
    """
    o = offsets[beta]
    b = offsets[beta + 1] - o
    for i in range(b):
        c[i] = 0.0
        for j in range(b):
            A[i, j] = 0.0
    m = tptr.shape[0] - 1
    if beta < tile_blocks:
        j0 = beta * m
        for r in range(m):
            k = counts[j0 + r]
            if k != 0:
                _accumulate_row(tptr, tidx, tdat, r, 0, float(k), sums[j0 + r], A, c)
    else:
        base = m * tile_blocks
        g = beta - tile_blocks
        for t in range(gptr[g], gptr[g + 1]):
            r = order[t]
            k = counts[base + r]
            if k != 0:
                _accumulate_row(rptr, ridx, rdat, r, o, float(k), sums[base + r], A, c)
    return b


@njit(inline="always", **_FAST)
def assemble_tile_dense(j0, Vt, counts, sums, k, u, A, c):
    """``A`` and ``c`` of the tiled block whose codewords start at ``j0``, from the dense
    transposed base ``Vt`` (``b x m``): ``A = Vt diag(k) Vt^T`` and ``c = Vt s``.

    The same sums as :func:`assemble_block` (every product of a received row, plus zeros),
    in a different order, so the two agree to rounding. Each entry is a contiguous dot
    product over the ``m`` base rows, which vectorises and has no chain of ``+=`` on one
    entry. ``k`` and ``u`` are scratch of length ``m``. Returns the block size.
    """
    b, m = Vt.shape
    for r in range(m):
        k[r] = float(counts[j0 + r])
    for i in range(b):
        acc = 0.0
        for r in range(m):
            u[r] = k[r] * Vt[i, r]
            acc += sums[j0 + r] * Vt[i, r]
        c[i] = acc
        for j in range(i, b):
            acc = 0.0
            for r in range(m):
                acc += u[r] * Vt[j, r]
            A[i, j] = acc
            A[j, i] = acc
    return b


# ---------------------------------------------------------------------------- small dense solves
#: ``x = A^+ c`` for a block's information matrix; shared with the CUDA kernels.
min_norm_solve = njit(inline="always", **_FAST)(_dense.min_norm_solve)


@njit(**_FAST)
def unpack_codebook(ints, bounds, floats):
    """Views of a packed codebook (see ``lwpd.decoders._packing``).

    The kernels take the packed codebook as three arrays instead of eleven because Numba's dispatch
    costs about 0.13 us per array argument, which dominates a single-arrival update.
    """
    return (
        ints[bounds[0] : bounds[1]],  # offsets
        ints[bounds[1] : bounds[2]],  # tptr
        ints[bounds[2] : bounds[3]],  # tidx
        floats[: bounds[9]],  # tdat
        bounds[10],  # tile_blocks
        ints[bounds[3] : bounds[4]],  # rptr
        ints[bounds[4] : bounds[5]],  # ridx
        floats[bounds[9] :],  # rdat
        ints[bounds[5] : bounds[6]],  # order
        ints[bounds[6] : bounds[7]],  # gptr
        ints[bounds[7] : bounds[8]],  # rest_block
    )


@_twin(**_FAST)
def solve_blocks(blocks, ints, bounds, floats, tile_dense, counts, sums, tol, max_block, n_chunks, ranks, x):
    """Re-solve the listed blocks in parallel: ``x[block] = A^+ c`` and ``ranks[block] = rank``.

    Blocks are split into ``n_chunks`` contiguous chunks, each with its own scratch space.
    Tiled blocks are assembled by :func:`assemble_tile_dense` when ``tile_dense`` (the
    transposed dense base, ``b x m``) is not empty.
    """
    offsets, tptr, tidx, tdat, tile_blocks, rptr, ridx, rdat, order, gptr, _ = unpack_codebook(ints, bounds, floats)
    nb = blocks.shape[0]
    n_chunks = min(nb, n_chunks)
    m = tptr.shape[0] - 1
    dense = tile_dense.shape[0] > 0
    for ch in prange(n_chunks):
        A = np.empty((max_block, max_block))
        M = np.empty((max_block, max_block + 1))
        c = np.empty(max_block)
        y = np.empty(max_block)
        piv = np.empty(max_block, dtype=np.int64)
        xb = np.empty(max_block)
        k = np.empty(m)
        u = np.empty(m)
        for t in range(ch * nb // n_chunks, (ch + 1) * nb // n_chunks):
            beta = blocks[t]
            if dense and beta < tile_blocks:
                b = assemble_tile_dense(beta * m, tile_dense, counts, sums, k, u, A, c)
            else:
                b = assemble_block(beta, offsets, tptr, tidx, tdat, tile_blocks, rptr, ridx, rdat, order, gptr, counts, sums, A, c)
            ranks[beta] = min_norm_solve(A, c, b, tol, piv, y, M, xb)
            o = offsets[beta]
            for i in range(b):
                x[o + i] = xb[i]


# ---------------------------------------------------------------------------- shared patterns
# Tiled blocks share one base pattern, so two tiled blocks whose codewords arrived the same
# way (each at most once, the same rows) have the same information matrix A and the same
# operator P = A^+ V^T: the block's estimate is P times its value sums. A step's arrivals
# usually form far fewer distinct received sets than blocks, so factoring each set once and
# applying P per block replaces a factorisation per block by a small matrix-vector product.
@njit(**_FAST)
def tile_pattern_slots(blocks, ints, bounds, floats, counts, table):
    """The received-set slot of each listed block and the sets' bit masks.

    A tiled block whose codewords all arrived at most once gets the slot of its set of
    received base rows (bit ``r`` of the mask: row ``r`` arrived); other blocks get -1.
    ``table`` (length ``2**m``, all -1) maps masks to slots during the call and is left all
    -1 again.
    """
    _, tptr, _, _, tile_blocks, _, _, _, _, _, _ = unpack_codebook(ints, bounds, floats)
    m = tptr.shape[0] - 1
    nb = blocks.shape[0]
    slots = np.full(nb, -1, dtype=np.int64)
    masks = np.empty(min(nb, table.shape[0]), dtype=np.int64)
    n = 0
    for t in range(nb):
        beta = blocks[t]
        if beta >= tile_blocks:
            continue
        mask = 0
        j0 = beta * m
        for r in range(m):
            k = counts[j0 + r]
            if k > 1:
                mask = -1
                break
            if k == 1:
                mask |= 1 << r
        if mask < 0:
            continue
        slot = table[mask]
        if slot < 0:
            slot = n
            table[mask] = n
            masks[n] = mask
            n += 1
        slots[t] = slot
    for i in range(n):
        table[masks[i]] = -1
    return slots, masks[:n]


@njit(**_FAST)
def pattern_operators(masks, ints, bounds, floats, tol):
    """``P[s] = A_s^+ V^T`` (shape ``(b, m)``, zero columns for rows not received) and the
    rank of ``A_s`` for each received set ``masks[s]`` of the tile's base rows."""
    offsets, tptr, tidx, tdat, _, _, _, _, _, _, _ = unpack_codebook(ints, bounds, floats)
    m = tptr.shape[0] - 1
    b = offsets[1] - offsets[0]
    V = np.zeros((m, b))
    for r in range(m):
        for p in range(tptr[r], tptr[r + 1]):
            V[r, tidx[p]] = tdat[p]
    n = masks.shape[0]
    P = np.zeros((n, b, m))
    ranks = np.zeros(n, dtype=np.int64)
    A0 = np.empty((b, b))
    A = np.empty((b, b))
    M = np.empty((b, b + 1))
    y = np.empty(b)
    piv = np.empty(b, dtype=np.int64)
    xb = np.empty(b)
    for s in range(n):
        mask = masks[s]
        for i in range(b):
            for j in range(b):
                A0[i, j] = 0.0
        for q in range(m):
            if (mask >> q) & 1:
                for i in range(b):
                    for j in range(b):
                        A0[i, j] += V[q, i] * V[q, j]
        for r in range(m):
            if not (mask >> r) & 1:
                continue
            A[:, :] = A0  # min_norm_solve overwrites A
            ranks[s] = min_norm_solve(A, V[r].copy(), b, tol, piv, y, M, xb)
            for i in range(b):
                P[s, i, r] = xb[i]
    return P, ranks


@_twin(**_FAST)
def apply_patterns(blocks, slots, P, pattern_ranks, ints, bounds, floats, sums, ranks, x):
    """``x[block] = P[slot] @ sums[block's codewords]`` for every listed block with a slot."""
    offsets, tptr, _, _, _, _, _, _, _, _, _ = unpack_codebook(ints, bounds, floats)
    m = tptr.shape[0] - 1
    b = P.shape[1]
    for t in prange(blocks.shape[0]):
        s = slots[t]
        if s < 0:
            continue
        beta = blocks[t]
        o = offsets[beta]
        j0 = beta * m
        for i in range(b):
            acc = 0.0
            for r in range(m):
                acc += P[s, i, r] * sums[j0 + r]
            x[o + i] = acc
        ranks[beta] = pattern_ranks[s]


@njit(inline="always", **_FAST)
def _part(part, n, n_parts):
    """The items ``[lo, hi)`` of part ``part`` of ``n`` split into ``n_parts`` (codewords of a
    scatter, blocks of the received sets)."""
    return part * n // n_parts, (part + 1) * n // n_parts


@njit(inline="always", **_FAST)
def _first_at_or_after(blocks, lo, hi, block):
    """The first position ``t`` in ``[lo, hi)`` with ``blocks[t] >= block`` (``blocks[lo:hi]``
    sorted), or ``hi``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if blocks[mid] < block:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_twin(**_FAST)
def received_sets(full_masks, lost_chunks, starts, chunk_block, chunk_row, run_first, run_end, run_offset, n_sets,
                  n_parts):
    """Each block's received set, and how many blocks of each run have each set.

    ``masks = full_masks`` with bit ``chunk_row[t]`` of block ``chunk_block[t]`` cleared for
    every codeword ``t`` of the lost chunks (chunk ``c``: positions ``starts[c]`` to
    ``starts[c + 1] - 1``, sorted by block). ``counts[run_offset[r] + s]``: blocks of run ``r``
    (blocks ``run_first[r] .. run_end[r] - 1``) with set ``s``. Threads own block ranges and
    find their codewords in each chunk by bisection, so no two write one mask; each chunk's
    blocks and rows are read in order, not gathered through codeword indices."""
    n_blocks = full_masks.shape[0]
    masks = full_masks.copy()
    part_counts = np.zeros((n_parts, n_sets), dtype=np.int64)
    for part in prange(n_parts):
        lo, hi = _part(part, n_blocks, n_parts)
        for c in lost_chunks:
            t = _first_at_or_after(chunk_block, starts[c], starts[c + 1], lo)
            while t < starts[c + 1] and chunk_block[t] < hi:
                masks[chunk_block[t]] &= ~(1 << chunk_row[t])
                t += 1
        for r in range(run_first.shape[0]):
            for b in range(max(lo, run_first[r]), min(hi, run_end[r])):
                part_counts[part, run_offset[r] + masks[b]] += 1
    return masks, part_counts.sum(axis=0)


@_twin(**_FAST)
def project_in_place(grads, offsets, positions, first, size, masks, spans, Q, n_parts):
    """``g[block] = Q[masks[t]] @ g[block]`` for every block ``t`` of a run of equal blocks
    whose received set does not span it (``spans[s]`` false; the others' projector is the
    identity and they are not touched), in place, where ``g`` is held as the tuple of 1-D
    arrays ``grads`` (the run's coordinates from block-order position ``first``; block-order
    position ``p`` is flat place ``positions[p]``, which lies in array ``k`` at ``positions[p]
    - offsets[k]``). Threads own block ranges. Returns the squared norm of the change, as
    stored (in the arrays' dtype)."""
    n = masks.shape[0]
    last = offsets.shape[0] - 2  # the last array
    changes = np.zeros(n_parts)
    for part in prange(n_parts):
        lo, hi = _part(part, n, n_parts)
        g = np.empty(size)
        tensor = np.empty(size, dtype=np.int64)
        local = np.empty(size, dtype=np.int64)
        change = 0.0
        k = 0
        for t in range(lo, hi):
            s = masks[t]
            if spans[s]:
                continue
            o = first + t * size
            for i in range(size):
                place = positions[o + i]
                if not offsets[k] <= place < offsets[k + 1]:  # not in the last coordinate's array: bisect
                    a, z = 0, last
                    while a < z:
                        mid = (a + z + 1) // 2
                        if offsets[mid] <= place:
                            a = mid
                        else:
                            z = mid - 1
                    k = a
                tensor[i] = k
                local[i] = place - offsets[k]
                g[i] = grads[k][local[i]]
            for i in range(size):
                acc = 0.0
                for j in range(size):
                    acc += Q[s, i, j] * g[j]
                target = grads[tensor[i]]
                target[local[i]] = acc
                d = target[local[i]] - g[i]
                change += d * d
        changes[part] = change
    return changes.sum()


@_twin(**_FAST)
def project_by_patterns(first, size, masks, Q, whole, positions, g, out):
    """``out[block] = Q[masks[t]] @ g[block]`` for block ``t`` of a run of equal blocks, the
    run's coordinates starting at block-order position ``first`` (``Q[s]``: the projector of
    received set ``s``; ``whole[s]``: its received codewords span the block, so ``Q[s]`` is
    the identity and the block is copied). ``g`` and ``out`` are in another order:
    block-order position ``p`` is their entry ``positions[p]``."""
    for t in prange(masks.shape[0]):
        s = masks[t]
        o = first + t * size
        if whole[s]:
            for i in range(size):
                out[positions[o + i]] = g[positions[o + i]]
            continue
        for i in range(size):
            acc = 0.0
            for j in range(size):
                acc += Q[s, i, j] * g[positions[o + j]]
            out[positions[o + i]] = acc


@_twin(**_FAST)
def scatter_results(indices, values, counts, sums, n_parts):
    """Fold arrivals into per-codeword counts and value sums; return -1, or, when a count is
    full (its dtype's largest value), the position of an arrival that would overflow it,
    with nothing changed.

    Random-order arrivals make this a scatter bound by memory latency, not arithmetic. The
    codeword range is split into ``n_parts`` contiguous parts, each folded by one thread that
    reads every arrival and keeps those in its part: no two threads write one entry, and each
    entry's values are added in arrival order, so the result does not depend on ``n_parts``.
    Counts are added first and checked as they go, then the sums: a full count is found
    before any sum changes, and undoing the integer counts is exact.
    """
    n = counts.shape[0]
    limit = np.iinfo(counts.dtype).max
    stops = np.full(n_parts, indices.shape[0], dtype=np.int64)  # where each part stopped
    for part in prange(n_parts):
        lo, hi = _part(part, n, n_parts)
        for t in range(indices.shape[0]):
            j = indices[t]
            if lo <= j < hi:
                if counts[j] == limit:
                    stops[part] = t
                    break
                counts[j] += 1
    full = stops.min()
    if full < indices.shape[0]:
        for part in prange(n_parts):
            lo, hi = _part(part, n, n_parts)
            for t in range(stops[part]):
                j = indices[t]
                if lo <= j < hi:
                    counts[j] -= 1
        return full
    for part in prange(n_parts):
        lo, hi = _part(part, n, n_parts)
        for t in range(indices.shape[0]):
            j = indices[t]
            if lo <= j < hi:
                sums[j] += values[t]
    return -1


@njit(**_FAST)
def blocks_touched(indices, ints, bounds, floats):
    """Sorted distinct blocks of the given codewords."""
    offsets, tptr, _, _, tile_blocks, _, _, _, _, _, rest_block = unpack_codebook(ints, bounds, floats)
    m = tptr.shape[0] - 1
    n_blocks = offsets.shape[0] - 1
    if 8 * indices.shape[0] < n_blocks:  # few arrivals: sorting them beats a pass over the blocks
        out = np.empty(indices.shape[0], dtype=np.int64)
        for t in range(indices.shape[0]):
            out[t] = block_of_codeword(indices[t], m, tile_blocks, rest_block)
        return np.unique(out)
    # Many arrivals (a whole step's worth): mark blocks instead of sorting every index.
    seen = np.zeros(n_blocks, dtype=np.bool_)
    for t in range(indices.shape[0]):
        seen[block_of_codeword(indices[t], m, tile_blocks, rest_block)] = True
    return np.flatnonzero(seen).astype(np.int64)


@njit(**_FAST)
def fold_one(j, value, ints, bounds, floats, counts, sums, tol, ranks, x):
    """Fold one arrival and re-solve only its block; False (nothing changed) when the
    codeword's count is full. Work depends on that block alone.

    The block is assembled by scattering its received rows (not densely): a block being
    filled one arrival at a time has few received rows, and measured single updates were
    about 20% slower with the dense assembly.
    """
    if counts[j] == np.iinfo(counts.dtype).max:
        return False  # the count is full: nothing changed
    offsets, tptr, tidx, tdat, tile_blocks, rptr, ridx, rdat, order, gptr, rest_block = unpack_codebook(ints, bounds, floats)
    counts[j] += 1
    sums[j] += value
    beta = block_of_codeword(j, tptr.shape[0] - 1, tile_blocks, rest_block)
    o = offsets[beta]
    b = offsets[beta + 1] - o
    A = np.empty((b, b))
    M = np.empty((b, b + 1))
    c = np.empty(b)
    y = np.empty(b)
    piv = np.empty(b, dtype=np.int64)
    assemble_block(beta, offsets, tptr, tidx, tdat, tile_blocks, rptr, ridx, rdat, order, gptr, counts, sums, A, c)
    ranks[beta] = min_norm_solve(A, c, b, tol, piv, y, M, x[o : o + b])
    return True


@njit(**_STRICT)
def peel(indices, values, indptr, cols, data, cptr, crows, cdata, received, residual, unknown, known, coords, queue):
    """Fold arrivals into a peeling decoder; returns the number of coordinates newly recovered.

    A received codeword whose support has exactly one unknown coordinate determines it:
    ``x_i = (r_j - sum_{known k} v_jk x_k) / v_ji``. Each recovery is propagated through the
    codewords containing ``i`` (CSC adjacency) until nothing changes. A codeword that has
    already been received adds nothing and is skipped.
    """
    recovered = 0
    for t in range(indices.shape[0]):
        j = indices[t]
        if received[j]:
            continue
        received[j] = 1
        r = values[t]
        u = 0
        for p in range(indptr[j], indptr[j + 1]):
            i = cols[p]
            if known[i]:
                r -= data[p] * coords[i]
            else:
                u += 1
        residual[j] = r
        unknown[j] = u
        if u != 1:
            continue
        head = 0
        top = 1
        queue[0] = j
        while head < top:
            jj = queue[head]
            head += 1
            if unknown[jj] != 1:
                continue
            i = -1
            coef = 0.0
            for p in range(indptr[jj], indptr[jj + 1]):
                if not known[cols[p]]:
                    i = cols[p]
                    coef = data[p]
                    break
            xi = residual[jj] / coef
            known[i] = 1
            coords[i] = xi
            recovered += 1
            unknown[jj] = 0
            residual[jj] = 0.0
            for q in range(cptr[i], cptr[i + 1]):
                j2 = crows[q]
                if received[j2] and unknown[j2] > 0:
                    residual[j2] -= cdata[q] * xi
                    unknown[j2] -= 1
                    if unknown[j2] == 1:
                        queue[top] = j2
                        top += 1
    return recovered
