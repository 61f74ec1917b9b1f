"""Backend-neutral small dense linear algebra (private).

Plain Python functions written in the subset of Python that both Numba targets compile:
:mod:`lwpd._kernels.cpu` wraps them with ``njit`` and :mod:`lwpd._kernels.cuda` with
``cuda.jit(device=True)``, so the CPU and GPU decoders share one implementation. Each
function is self-contained (no calls to other Python functions), as a device function must
be compiled without the other target's wrappers.
"""

import math


def min_norm_solve(A, c, b, tol, piv, y, M, x):
    """Minimum-norm solution ``x = A^+ c`` of the PSD system ``A x = c`` (``c`` in range(A)).

    Pivoted Cholesky ``P^T A P = L L^T`` (L is ``b x r``) reveals the numerical rank ``r``;
    it stops when the largest remaining pivot is at most ``tol`` times the largest diagonal.
    Full rank: ``x = P L^-T L^-1 P^T c``. Rank deficient: with ``B = P L``,
    ``A^+ = B (B^T B)^-2 B^T``, solved through the Cholesky factor of ``M = L^T L``
    (``r x r``, stored with ``u = L^T P^T c`` in its column ``r``). Overwrites ``A``, ``M``,
    ``piv`` and ``y``; writes ``x[:b]`` and returns ``r``.
    """
    maxdiag = 0.0
    for i in range(b):
        piv[i] = i
        if A[i, i] > maxdiag:
            maxdiag = A[i, i]
    if maxdiag <= 0.0:
        for i in range(b):
            x[i] = 0.0
        return 0
    threshold = tol * maxdiag
    rank = b
    for k in range(b):
        p = k
        best = A[k, k]
        for i in range(k + 1, b):
            if A[i, i] > best:
                best = A[i, i]
                p = i
        if best <= threshold:
            rank = k
            break
        if p != k:
            for j in range(b):
                tmp = A[k, j]
                A[k, j] = A[p, j]
                A[p, j] = tmp
            for i in range(b):
                tmp = A[i, k]
                A[i, k] = A[i, p]
                A[i, p] = tmp
            ip = piv[k]
            piv[k] = piv[p]
            piv[p] = ip
        lkk = math.sqrt(A[k, k])
        A[k, k] = lkk
        for i in range(k + 1, b):
            A[i, k] /= lkk
        for j in range(k + 1, b):
            ajk = A[j, k]
            for i in range(j, b):
                v = A[i, j] - A[i, k] * ajk
                A[i, j] = v
                A[j, i] = v
    for i in range(b):
        y[i] = c[piv[i]]
    full = rank == b
    if not full:
        # u = L^T y goes to column ``rank`` of M, beside M = L^T L in its lower triangle.
        for i in range(rank):
            acc = 0.0
            for k in range(i, b):
                acc += A[k, i] * y[k]
            M[i, rank] = acc
        for i in range(rank):
            for j in range(i + 1):
                acc = 0.0
                for k in range(i, b):
                    acc += A[k, i] * A[k, j]
                M[i, j] = acc
        for k in range(rank):  # unpivoted Cholesky of the SPD M, in place
            d = M[k, k]
            for s in range(k):
                d -= M[k, s] * M[k, s]
            lkk = math.sqrt(d) if d > 0.0 else 1e-300
            M[k, k] = lkk
            for i in range(k + 1, rank):
                acc = M[i, k]
                for s in range(k):
                    acc -= M[i, s] * M[k, s]
                M[i, k] = acc / lkk
        for i in range(rank):
            y[i] = M[i, rank]
    # Full rank: one solve with L L^T (L in A). Rank deficient: two solves with M (= M^-2 u).
    n = b if full else rank
    for _ in range(1 if full else 2):
        for i in range(n):  # forward: L z = y
            acc = y[i]
            for k in range(i):
                acc -= (A[i, k] if full else M[i, k]) * y[k]
            y[i] = acc / (A[i, i] if full else M[i, i])
        for i in range(n - 1, -1, -1):  # backward: L^T w = z
            acc = y[i]
            for k in range(i + 1, n):
                acc -= (A[k, i] if full else M[k, i]) * y[k]
            y[i] = acc / (A[i, i] if full else M[i, i])
    if full:
        for i in range(b):
            x[piv[i]] = y[i]
        return rank
    for i in range(b):  # x = P L w
        acc = 0.0
        top = i + 1 if i + 1 < rank else rank
        for k in range(top):
            acc += A[i, k] * y[k]
        x[piv[i]] = acc
    return rank
