"""Encoding and decoding matrices of gradient coding over the reals.

Gradient coding (Tandon, Lei, Dimakis and Karampatziakis, "Gradient Coding: Avoiding
Stragglers in Distributed Learning", ICML 2017) splits the data into ``n`` partitions with
partial gradients ``g_0, ..., g_{n-1}`` and gives worker ``i`` the partitions in the support
of row ``i`` of an ``n x n`` encoding matrix ``B``.  Worker ``i`` returns the coded gradient
``sum_j B[i, j] g_j``.  ``B`` is built so that for *any* set of ``n - s`` arrived workers
there is a decoding vector ``a`` with ``a^T B[arrived] = 1^T``; then
``a^T (B[arrived] @ G) = sum_j g_j``, the exact full gradient, whatever ``s`` stragglers
are missing.

These are pure functions; the training loop lives elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from lwpd._validation import as_index_array, as_real_array, as_rng, check_finite, check_int, check_real

__all__ = ["frc_matrix", "cyclic_matrix", "partition_assignment", "decoding_vector"]


def _check_sizes(n_workers: Any, s: Any) -> tuple[int, int]:
    n = check_int("n_workers", n_workers, minimum=1)
    s = check_int("s", s, minimum=0, maximum=n - 1)
    return n, s


def frc_matrix(n_workers: int, s: int) -> np.ndarray:
    """Fractional repetition encoding matrix (Tandon et al., 2017, Section 3).

    The ``n`` workers are split into ``n / (s + 1)`` groups of ``s + 1`` consecutive
    workers; every worker of group ``g`` holds the ``s + 1`` partitions
    ``g (s + 1), ..., (g + 1)(s + 1) - 1`` with coefficient 1, so its coded gradient is the
    sum of its group's partition gradients.  Any ``n - s`` workers include at least one
    worker of every group, so the full gradient is recovered.

    Parameters
    ----------
    n_workers : int
        Number of workers (= number of data partitions), ``>= 1``.
    s : int
        Number of stragglers tolerated, ``0 <= s < n_workers``; ``s + 1`` must divide
        ``n_workers``.

    Returns
    -------
    numpy.ndarray
        The ``(n_workers, n_workers)`` float64 0/1 encoding matrix ``B``.

    Raises
    ------
    ValueError
        If a size is out of range or ``s + 1`` does not divide ``n_workers``.

    Examples
    --------
    >>> frc_matrix(4, 1)
    array([[1., 1., 0., 0.],
           [1., 1., 0., 0.],
           [0., 0., 1., 1.],
           [0., 0., 1., 1.]])
    """
    n, s = _check_sizes(n_workers, s)
    size = s + 1
    if n % size:
        raise ValueError(
            f"the fractional repetition scheme needs s + 1 to divide n_workers; got s + 1 = {size} "
            f"and n_workers = {n} (use the cyclic scheme, or choose s + 1 among the divisors "
            f"{[d for d in range(1, n + 1) if n % d == 0]})"
        )
    group = np.arange(n) // size
    return (group[:, None] == group[None, :]).astype(np.float64)


def cyclic_matrix(n_workers: int, s: int, rng: Any = None) -> np.ndarray:
    """Cyclic-MDS encoding matrix (Tandon et al., 2017, Algorithm 2).

    Row ``i`` is supported on the ``s + 1`` cyclically consecutive partitions
    ``i, i + 1, ..., i + s (mod n)``.  A random ``(s, n)`` Gaussian matrix ``H`` is drawn
    with its last column set so that ``H @ 1 = 0``; each row ``b_i`` of ``B`` has
    ``b_i[i] = 1`` and its other ``s`` support entries solve ``H b_i = 0``.  Every row then
    lies in the ``(n - s)``-dimensional null space of ``H``, which contains the all-ones
    vector, and with probability 1 any ``n - s`` rows are linearly independent and so span
    it.

    Parameters
    ----------
    n_workers : int
        Number of workers (= number of data partitions), ``>= 1``.
    s : int
        Number of stragglers tolerated, ``0 <= s < n_workers``.
    rng : None, int or numpy.random.Generator, optional
        Source of the random matrix ``H``; ``None`` uses the fixed seed 0 so that the
        matrix is reproducible.

    Returns
    -------
    numpy.ndarray
        The ``(n_workers, n_workers)`` float64 encoding matrix ``B``.

    Examples
    --------
    >>> B = cyclic_matrix(5, 2, rng=1)
    >>> [int(k) for k in (B != 0).sum(axis=1)]
    [3, 3, 3, 3, 3]
    >>> a = decoding_vector(B, [0, 2, 4])
    >>> bool(np.allclose(a @ B[[0, 2, 4]], 1.0))
    True
    """
    n, s = _check_sizes(n_workers, s)
    gen = as_rng("rng", rng, default=0)
    B = np.zeros((n, n), dtype=np.float64)
    if s == 0:
        np.fill_diagonal(B, 1.0)
        return B
    H = gen.standard_normal((s, n))
    H[:, -1] = -H[:, :-1].sum(axis=1)
    for i in range(n):
        others = (i + np.arange(1, s + 1)) % n
        # H[:, others] is s x s and invertible with probability 1.
        coeffs = np.linalg.solve(H[:, others], -H[:, i])
        B[i, i] = 1.0
        B[i, others] = coeffs
    return B


def _as_encoding_matrix(B: Any) -> np.ndarray:
    arr = as_real_array("B", B, ndim=(2,), keep_float32=False)
    if arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"B must be a non-empty square (n_workers, n_workers) matrix, got shape {arr.shape}")
    check_finite("B", arr)
    return arr


def partition_assignment(B: Any) -> list[np.ndarray]:
    """Data partitions held by each worker: the support of each row of ``B``.

    Parameters
    ----------
    B : array_like
        A square ``(n_workers, n_workers)`` encoding matrix.

    Returns
    -------
    list of numpy.ndarray
        ``out[i]`` is the sorted int64 array of partitions that worker ``i`` holds.

    Examples
    --------
    >>> [p.tolist() for p in partition_assignment(frc_matrix(4, 1))]
    [[0, 1], [0, 1], [2, 3], [2, 3]]
    """
    arr = _as_encoding_matrix(B)
    return [np.flatnonzero(row).astype(np.int64) for row in arr]


def decoding_vector(B: Any, arrived: Any, *, tol: float = 1e-8) -> np.ndarray:
    """Decoding vector ``a`` with ``a^T B[arrived] = 1^T``.

    Solves the system by least squares (:func:`scipy.linalg.lstsq`, the minimum-norm
    solution when several exist) and checks that the all-ones vector really lies in the
    row space of the arrived rows.

    Parameters
    ----------
    B : array_like
        A square ``(n_workers, n_workers)`` encoding matrix.
    arrived : array_like of int
        Distinct indices of the workers whose coded gradients arrived.
    tol : float, optional
        Largest accepted absolute error of any entry of ``a^T B[arrived]``.

    Returns
    -------
    numpy.ndarray
        The float64 vector ``a`` of length ``len(arrived)``, in the order of ``arrived``;
        ``a @ (B[arrived] @ G)`` is the sum of the rows of ``G``.

    Raises
    ------
    ValueError
        If ``arrived`` is empty or repeats a worker, or the arrived rows do not span the
        all-ones vector (for instance fewer than ``n_workers - s`` workers arrived).
    IndexError
        If an index of ``arrived`` is out of range.

    Examples
    --------
    >>> B = frc_matrix(4, 1)
    >>> decoding_vector(B, [1, 2, 3])
    array([1. , 0.5, 0.5])
    """
    arr = _as_encoding_matrix(B)
    n = arr.shape[0]
    tol = check_real("tol", tol, positive=True)
    idx = as_index_array("arrived", arrived, n)
    if idx.size == 0:
        raise ValueError("arrived is empty; at least one worker must have arrived to decode")
    if np.unique(idx).size != idx.size:
        raise ValueError(f"arrived must hold distinct workers, got {idx.tolist()}")
    rows = arr[idx]
    ones = np.ones(n)
    # the minimum-norm solution by a complete orthogonal factorisation (LAPACK gelsy): the
    # same solution as the SVD-based default (gelsd) to rounding, twice as fast at 1,024
    # workers, where this solve is most of a simulated step
    # (the rank cut-off is numpy.linalg.lstsq's default, eps * max(shape): scipy's own would
    # keep the rounding-level directions of repeated rows and miss the minimum norm)
    a = scipy.linalg.lstsq(rows.T, ones, cond=np.finfo(np.float64).eps * max(rows.shape), lapack_driver="gelsy",
                           check_finite=False)[0]
    err = float(np.abs(a @ rows - ones).max())
    if not np.isfinite(err) or err > tol:
        raise ValueError(
            f"the rows of B for arrived = {idx.tolist()} do not span the all-ones vector "
            f"(max error {err:.3g} > tol = {tol:g}); too few workers arrived to recover the full "
            f"gradient (a scheme tolerating s stragglers needs n_workers - s of them)"
        )
    return a
