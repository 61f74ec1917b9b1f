"""Independent brute-force oracles for the tests, in plain Python and NumPy, and the small
seeded problems several test modules share.

Nothing here calls lwpd's kernels: every function recomputes its answer from a dense
codebook matrix by the most direct method available.
"""

from __future__ import annotations

import itertools

import numpy as np


def projective_points(dim: int, q: int, max_weight: int | None = None) -> list[tuple[int, ...]]:
    """Canonical representatives of PG(dim-1, q) by brute force over all of F_q^dim.

    A nonzero vector is canonical when its first nonzero coordinate is 1; every projective
    point has exactly one canonical representative.
    """
    points = []
    for vec in itertools.product(range(q), repeat=dim):
        nonzero = [a for a in vec if a]
        if not nonzero or nonzero[0] != 1:
            continue
        if max_weight is not None and len(nonzero) > max_weight:
            continue
        points.append(vec)
    return points


def lift(vec: tuple[int, ...], q: int) -> np.ndarray:
    """Balanced lift of field elements to integers (q = 2 keeps {0, 1})."""
    if q == 2:
        return np.array(vec, dtype=float)
    return np.array([a if a <= (q - 1) // 2 else a - q for a in vec], dtype=float)


def encode(V: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Directional derivatives by a dense matrix product."""
    return g @ V.T


def decode_projection(V: np.ndarray, indices, values) -> np.ndarray:
    """Minimum-norm least squares over the stacked received rows (repeats included).

    Singular values at or below ``max(rows, columns) * eps`` of the largest are zero (the
    convention of ``np.linalg.matrix_rank``). ``pinv``'s default cutoff, ``1e-15`` of the
    largest, is below the rounding of an SVD of an exactly rank-deficient stack of a few
    dozen rows: one zero singular value came out at ``1.01e-15`` (seed 644 of
    ``test_few_blocks_at_a_time_decode_as_the_oracle``), and the "oracle" then put entries of
    0.06 on coordinates no received codeword touches."""
    indices = np.asarray(indices, dtype=int)
    if indices.size == 0:
        return np.zeros(V.shape[1])
    rows = V[indices]
    return np.linalg.pinv(rows, max(rows.shape) * np.finfo(float).eps) @ np.asarray(values, dtype=float)


def peel(V: np.ndarray, indices, values) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force peeling: sweep all received rows until no row has exactly one unknown.

    Returns ``(known_mask, coordinate_values)``. Only the first arrival of a codeword is used.
    """
    n = V.shape[1]
    known = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    rows: dict[int, float] = {}
    for j, v in zip(np.asarray(indices, dtype=int), np.asarray(values, dtype=float)):
        rows.setdefault(int(j), float(v))
    changed = True
    while changed:
        changed = False
        for j, v in rows.items():
            support = np.flatnonzero(V[j])
            unknown = [i for i in support if not known[i]]
            if len(unknown) == 1:
                i = unknown[0]
                rest = sum(V[j, k] * x[k] for k in support if known[k])
                x[i] = (v - rest) / V[j, i]
                known[i] = True
                changed = True
    return known, x


def correlations(V: np.ndarray) -> np.ndarray:
    """Correlation matrix of the rows of V."""
    U = V / np.linalg.norm(V, axis=1, keepdims=True)
    return U @ U.T


def pairs_off_diagonal(rho: np.ndarray) -> np.ndarray:
    return rho[np.triu_indices(rho.shape[0], 1)]


class FixedDelays:
    """A delay model (see ``lwpd.stragglers``) whose every round gives the same per-worker
    delays, so a test knows exactly when each task finishes."""

    def __init__(self, delays):
        self.delays = np.asarray(delays, dtype=float)

    def sample(self, n_workers, rng):
        return self.delays.copy()

    def reset(self):
        """Stateless: nothing to forget."""


def small_problems(m: int = 60) -> dict:
    """One small seeded problem of each kind (5 features): least squares, binary logistic,
    three-class softmax."""
    from lwpd.problems import LeastSquares, Logistic, Softmax

    rng = np.random.default_rng(0)
    X = rng.standard_normal((m, 5))
    return {
        "least-squares": LeastSquares(X, X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(m), alpha=0.1),
        "logistic": Logistic(X, (X[:, 0] + 0.3 * rng.standard_normal(m) > 0).astype(int), alpha=0.05),
        "softmax": Softmax(X, rng.integers(0, 3, m), alpha=0.05),
    }


def ill_conditioned_least_squares(seed: int = 0) -> tuple:
    """``(LeastSquares without intercept, X, y)``: 600 x 30, the columns scaled from 0.2 to 3
    (condition number of ``X^T X`` about 225), for the accelerated-training tests."""
    from lwpd.problems import LeastSquares

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((600, 30)) * np.geomspace(0.2, 3.0, 30)
    y = X @ rng.standard_normal(30) + 0.1 * rng.standard_normal(600)
    return LeastSquares(X, y, fit_intercept=False), X, y


def uneven_shards(m: int = 60, sizes: tuple = (3, 7, 10, 15, 5, 20), seed: int = 11) -> list[np.ndarray]:
    """Explicit, deliberately unequal shards of ``range(m)``, as unsorted int32 arrays."""
    assert sum(sizes) == m
    perm = np.random.default_rng(seed).permutation(m).astype(np.int32)
    return np.split(perm, np.cumsum(sizes)[:-1])
