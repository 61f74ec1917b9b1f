"""Lagrange coded computing (LCC) over the reals for the least-squares gradient.

Pure functions implementing the scheme of Yu, Raviv, So, Hadi, Avestimehr and Li,
"Lagrange Coded Computing: Optimal Design for Resiliency, Security and Privacy"
(AISTATS 2019), specialised to the gradient of :class:`lwpd.problems.LeastSquares`.
There is no training-loop code here; a scheme object wraps these functions.

The construction
----------------
The data ``[X 1 | y]`` (features, the intercept column of ones, targets) is split into
``K`` row blocks ``B_k = [X_k | y_k]`` (``X_k`` already holding the intercept column),
padded with zero rows to a common row count. For ``theta = [w, b]`` the per-block gradient

    ``f(B_k) = X_k^T (X_k theta - y_k)``

is a polynomial of degree 2 in the entries of ``B_k``, and a zero row (zero features,
zero intercept entry, zero target) contributes ``0 * (0 - 0) = 0`` to it, so padding
changes nothing. The full least-squares gradient is

    ``grad = (1/m) * sum_k f(B_k) + alpha * [w, 0]``

(:func:`full_gradient`), with ``m`` the number of real (unpadded) rows.

Pick distinct data points ``beta_1..beta_K`` and distinct evaluation points
``alpha_1..alpha_N``. The Lagrange polynomial ``u(z) = sum_k B_k l_k(z)`` (degree
``K - 1``) passes through ``(beta_k, B_k)``; worker ``i`` stores ``u(alpha_i)``
(:func:`encode`) and returns ``f(u(alpha_i))`` (:func:`worker_result`). Since
``f(u(z))`` is a polynomial of degree ``2 (K - 1)``, any ``2 (K - 1) + 1`` results
(:func:`recovery_threshold`) determine it; the master interpolates it, evaluates it at
every ``beta_k`` (``f(u(beta_k)) = f(B_k)``) and sums (:func:`decode`).

Points and conditioning
-----------------------
Over the reals the code is exact only in exact arithmetic; its numerical error is set
by the conditioning of the encode (extrapolation from the betas to the alphas) and of
the decode (interpolation from the arrived alphas). Both sets are Chebyshev nodes on
``[-1, 1]`` (:func:`lcc_points`): the betas are the ``K`` first-kind nodes, whose
Lagrange basis has a Lebesgue constant of ``O(log K)`` on the interval, and the alphas
are the ``N`` first-kind nodes, rotated by a fraction of their spacing if one would
coincide with a beta, so the two sets are disjoint. The decoder fits the
``2 (K - 1)``-degree polynomial by least squares in the Chebyshev basis
(:mod:`numpy.polynomial.chebyshev`), which is well conditioned for points spread over
``[-1, 1]``; using every arrived result (not only ``threshold`` many) further damps the
error. :func:`reconstruction_error` measures the relative error against the exact
gradient: on random Gaussian data with ``N = threshold + 3`` workers, the worst case over
every arrival subset was ``4e-15`` (``K = 2``), ``6e-15`` (``K = 3``), ``3.5e-14``
(``K = 4``) and ``6.7e-13`` (``K = 6``); it grows with ``K`` (ill-conditioning of
real-valued polynomial codes), so LCC over the reals suits small ``K``. With many more
workers than the threshold, the subset that arrives matters: the first workers' points
cluster near ``+1``, and ``K = 5`` of ``N = 60`` decoded from workers 0..8 had a relative
error of 0.3. :func:`decode_error_bound` estimates the error of a subset before decoding, and
the scheme (:class:`lwpd.schemes.LCC`) declines to decode above ``_config.LCC_MAX_ERROR``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.polynomial import chebyshev as _cheb

from lwpd import _config
from lwpd._validation import as_index_array, as_real_array, check_finite, check_int, check_real

__all__ = [
    "chebyshev_points",
    "decode",
    "decode_error_bound",
    "encode",
    "encoding_matrix",
    "exact_block_sum",
    "full_gradient",
    "lcc_points",
    "recovery_threshold",
    "reconstruction_error",
    "split_blocks",
    "worker_result",
]

#: Two points closer than this (relative to the interval length 2) count as coinciding.
_COLLISION_TOL = 1e-9


def chebyshev_points(n: int) -> np.ndarray:
    """Chebyshev nodes of the first kind on ``[-1, 1]``.

    Parameters
    ----------
    n : int
        Number of nodes (>= 1).

    Returns
    -------
    ndarray, shape (n,)
        ``cos((2 j + 1) pi / (2 n))`` for ``j = 0..n-1``, in decreasing order: the roots
        of the Chebyshev polynomial ``T_n``.

    Examples
    --------
    >>> chebyshev_points(3).round(4).tolist()
    [0.866, 0.0, -0.866]
    >>> chebyshev_points(1).tolist()
    [0.0]
    """
    n = check_int("n", n, minimum=1)
    x = _chebyshev_angles(n, 0.0, cos=True)
    return (x - x[::-1]) / 2.0  # exactly antisymmetric: the middle node (odd n) is exactly 0


def _chebyshev_angles(n: int, shift: float, *, cos: bool) -> np.ndarray:
    """Angles ``(2 j + 1 + shift) pi / (2 n)`` (or their cosines)."""
    angles = (2.0 * np.arange(n) + 1.0 + shift) * np.pi / (2.0 * n)
    return np.cos(angles) if cos else angles


def lcc_points(K: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Data points (betas) and worker evaluation points (alphas) for LCC.

    Parameters
    ----------
    K : int
        Number of data blocks (>= 1).
    N : int
        Number of workers (>= 1). Decoding needs ``N >= recovery_threshold(K)``; fewer
        workers are allowed here but can never decode.

    Returns
    -------
    betas : ndarray, shape (K,)
        The ``K`` Chebyshev nodes of the first kind (:func:`chebyshev_points`).
    alphas : ndarray, shape (N,)
        ``cos((2 i + 1 + s) pi / (2 N))``: the ``N`` first-kind nodes, with angle shift
        ``s = 0`` unless a node would coincide with a beta (which happens, e.g., at
        ``0`` when ``K`` and ``N`` are both odd); then the first of ``s = 1/2, 1/4,
        3/4, ...`` that keeps every alpha at least ``1e-9`` from every beta. A shift
        ``s < 1`` keeps all alphas strictly inside ``(-1, 1)`` and equally spaced in
        angle, so the decoding conditioning is essentially that of the Chebyshev nodes.

    Examples
    --------
    >>> betas, alphas = lcc_points(3, 5)
    >>> betas.round(3).tolist()
    [0.866, 0.0, -0.866]
    >>> bool(np.min(np.abs(alphas[:, None] - betas[None, :])) > 1e-3)
    True
    """
    K = check_int("K", K, minimum=1)
    N = check_int("N", N, minimum=1)
    betas = chebyshev_points(K)
    shifts = [0.0] + [num / 2.0**e for e in range(1, 8) for num in range(1, 2**e, 2)]
    for s in shifts:
        alphas = _chebyshev_angles(N, s, cos=True)
        if np.min(np.abs(alphas[:, None] - betas[None, :])) > _COLLISION_TOL:
            return betas, alphas
    raise RuntimeError(f"could not choose evaluation points disjoint from the data points for K={K}, N={N}")


def recovery_threshold(K: int) -> int:
    """Number of worker results LCC needs for the degree-2 least-squares gradient.

    ``f(u(z))`` has degree ``2 (K - 1)``, so ``2 (K - 1) + 1`` evaluations determine it.

    Parameters
    ----------
    K : int
        Number of data blocks (>= 1).

    Returns
    -------
    int
        ``2 (K - 1) + 1``.

    Examples
    --------
    >>> [recovery_threshold(k) for k in (1, 2, 3, 4)]
    [1, 3, 5, 7]
    """
    K = check_int("K", K, minimum=1)
    return 2 * (K - 1) + 1


def split_blocks(X: Any, y: Any, K: int) -> np.ndarray:
    """Split ``[X 1 | y]`` into ``K`` row blocks of equal height, zero-padded.

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (m, d)
        Real, finite features (densified).
    y : array_like, shape (m,)
        Real, finite targets.
    K : int
        Number of blocks, ``1 <= K <= m``.

    Returns
    -------
    ndarray, shape (K, ceil(m / K), d + 2)
        Block ``k`` holds the contiguous rows of ``numpy.array_split(range(m), K)[k]``
        as ``[x_i, 1, y_i]``, followed by all-zero rows up to the common height. A zero
        row (including a zero intercept entry) adds nothing to the block gradient
        ``X_k^T (X_k theta - y_k)``, so padding leaves the gradient unchanged.

    Examples
    --------
    >>> B = split_blocks([[1.0], [2.0], [3.0]], [4.0, 5.0, 6.0], 2)
    >>> B.shape
    (2, 2, 3)
    >>> B[1].tolist()
    [[3.0, 1.0, 6.0], [0.0, 0.0, 0.0]]
    """
    if hasattr(X, "toarray"):
        X = X.toarray()
    X = as_real_array("X", X, ndim=(2,), keep_float32=False)
    y = as_real_array("y", y, ndim=(1,), keep_float32=False)
    check_finite("X", X)
    check_finite("y", y)
    m = X.shape[0]
    if y.shape[0] != m:
        raise ValueError(f"y must have one entry per row of X ({m}), got {y.shape[0]}")
    if m == 0:
        raise ValueError("X must have at least one row")
    K = check_int("K", K, minimum=1, maximum=m)
    rows = -(-m // K)
    data = np.concatenate([X, np.ones((m, 1)), y[:, None]], axis=1)
    blocks = np.zeros((K, rows, X.shape[1] + 2))
    for k, idx in enumerate(np.array_split(np.arange(m), K)):
        blocks[k, : idx.size] = data[idx]
    return blocks


def _check_points(name: str, value: Any, size: int | None = None) -> np.ndarray:
    pts = as_real_array(name, value, ndim=(1,), keep_float32=False)
    check_finite(name, pts)
    if size is not None and pts.size != size:
        raise ValueError(f"{name} must have {size} entries, got {pts.size}")
    if pts.size == 0:
        raise ValueError(f"{name} must not be empty")
    gaps = np.abs(pts[:, None] - pts[None, :])
    np.fill_diagonal(gaps, np.inf)
    if np.min(gaps) <= _COLLISION_TOL:
        i, j = np.unravel_index(int(np.argmin(gaps)), gaps.shape)
        raise ValueError(f"{name} must be distinct; entries {min(i, j)} and {max(i, j)} coincide ({pts[i]})")
    return pts


def encoding_matrix(betas: Any, alphas: Any) -> np.ndarray:
    """Lagrange basis through ``betas`` evaluated at ``alphas``.

    Parameters
    ----------
    betas : array_like, shape (K,)
        Distinct data points.
    alphas : array_like, shape (N,)
        Evaluation points.

    Returns
    -------
    ndarray, shape (N, K)
        ``E[i, k] = l_k(alpha_i) = prod_{j != k} (alpha_i - beta_j) / (beta_k - beta_j)``;
        each row sums to 1 (``u`` reproduces constants).

    Examples
    --------
    >>> encoding_matrix([1.0, -1.0], [0.0, 0.5]).tolist()
    [[0.5, 0.5], [0.75, 0.25]]
    """
    betas = _check_points("betas", betas)
    alphas = as_real_array("alphas", alphas, ndim=(1,), keep_float32=False)
    check_finite("alphas", alphas)
    K = betas.size
    E = np.ones((alphas.size, K))
    for k in range(K):
        for j in range(K):
            if j != k:
                E[:, k] *= (alphas - betas[j]) / (betas[k] - betas[j])
    return E


def encode(blocks: Any, betas: Any, alphas: Any) -> np.ndarray:
    """Coded data of every worker: ``u(alpha_i)`` for the Lagrange polynomial ``u``.

    Parameters
    ----------
    blocks : array_like, shape (K, r, c)
        The data blocks ``[X_k | y_k]`` of equal height (see :func:`split_blocks`;
        zero-padding rows do not change the gradient).
    betas : array_like, shape (K,)
        Distinct data points.
    alphas : array_like, shape (N,)
        Distinct worker evaluation points, disjoint from ``betas``.

    Returns
    -------
    ndarray, shape (N, r, c)
        ``coded[i] = sum_k l_k(alpha_i) blocks[k]``.

    Examples
    --------
    >>> B = np.array([[[1.0, 2.0]], [[3.0, 4.0]]])     # K = 2 blocks of one row
    >>> encode(B, [1.0, -1.0], [0.0, 0.5]).tolist()
    [[[2.0, 3.0]], [[1.5, 2.5]]]
    """
    blocks = as_real_array("blocks", blocks, ndim=(3,), keep_float32=False)
    check_finite("blocks", blocks)
    betas = _check_points("betas", betas, size=blocks.shape[0])
    alphas = _check_points("alphas", alphas)
    if np.min(np.abs(alphas[:, None] - betas[None, :])) <= _COLLISION_TOL:
        raise ValueError("alphas must be disjoint from betas (see lcc_points)")
    E = encoding_matrix(betas, alphas)
    return np.tensordot(E, blocks, axes=(1, 0))


def worker_result(coded_Xy: Any, theta: Any) -> np.ndarray:
    """One worker's computation ``f(B) = X^T (X theta - y)`` on its coded block.

    Parameters
    ----------
    coded_Xy : array_like, shape (r, c)
        A coded block ``[X | y]``: the first ``c - 1`` columns are features (with the
        intercept column), the last is the target.
    theta : array_like, shape (c - 1,)
        Parameters ``[w, b]``.

    Returns
    -------
    ndarray, shape (c - 1,)
        ``X^T (X theta - y)``, a polynomial of degree 2 in the entries of ``coded_Xy``.

    Examples
    --------
    >>> worker_result([[1.0, 1.0, 2.0], [2.0, 1.0, 1.0]], [1.0, 0.0]).tolist()
    [1.0, 0.0]
    """
    B = as_real_array("coded_Xy", coded_Xy, ndim=(2,), keep_float32=False)
    check_finite("coded_Xy", B)
    theta = as_real_array("theta", theta, ndim=(1,), keep_float32=False)
    check_finite("theta", theta)
    if B.shape[1] < 2:
        raise ValueError(f"coded_Xy must have at least 2 columns (features and target), got {B.shape[1]}")
    if theta.size != B.shape[1] - 1:
        raise ValueError(
            f"theta must have {B.shape[1] - 1} entries (columns of coded_Xy minus the target), got {theta.size}"
        )
    Xb, yb = B[:, :-1], B[:, -1]
    return Xb.T @ (Xb @ theta - yb)


def decode(results: Any, arrived_alphas: Any, betas: Any, K: int) -> np.ndarray:
    """Recover ``sum_k f(B_k)`` from the results of the workers that arrived.

    Fits the degree-``2 (K - 1)`` polynomial ``f(u(z))`` to the arrived evaluations by
    least squares in the Chebyshev basis (exact interpolation when exactly
    ``recovery_threshold(K)`` arrived), evaluates it at every ``beta_k`` and sums.

    Parameters
    ----------
    results : array_like, shape (n, p)
        ``worker_result`` of each arrived worker, one row each.
    arrived_alphas : array_like, shape (n,)
        Evaluation points of those workers (distinct, in the same order).
    betas : array_like, shape (K,)
        The data points used by :func:`encode`.
    K : int
        Number of data blocks.

    Returns
    -------
    ndarray, shape (p,)
        The estimate of ``sum_k X_k^T (X_k theta - y_k)``; divide by ``m`` and add the
        ridge term for the gradient (:func:`full_gradient`).

    Raises
    ------
    ValueError
        If fewer than ``recovery_threshold(K)`` results arrived (message names
        ``results``), or the shapes disagree.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> B = rng.normal(size=(2, 3, 3)); theta = np.array([0.5, -1.0])
    >>> betas, alphas = lcc_points(2, 4)
    >>> coded = encode(B, betas, alphas)
    >>> res = np.array([worker_result(c, theta) for c in coded[:3]])
    >>> est = decode(res, alphas[:3], betas, 2)
    >>> bool(np.allclose(est, exact_block_sum(B, theta)))
    True
    """
    R, alphas, betas, degree = _decode_inputs(results, arrived_alphas, betas, K)
    V = _cheb.chebvander(alphas, degree)
    # Column scaling improves the least-squares conditioning a little for free.
    scale = np.linalg.norm(V, axis=0)
    coef, *_ = np.linalg.lstsq(V / scale, R, rcond=None)
    weights = _cheb.chebvander(betas, degree).sum(axis=0) / scale
    return weights @ coef


def _decode_inputs(results: Any, arrived_alphas: Any, betas: Any, K: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`decode`'s arguments checked: ``(results, alphas, betas, degree of the fit)``."""
    K = check_int("K", K, minimum=1)
    R = as_real_array("results", results, ndim=(2,), keep_float32=False)
    check_finite("results", R)
    threshold = recovery_threshold(K)
    if R.shape[0] < threshold:
        raise ValueError(
            f"results must hold at least recovery_threshold(K) = {threshold} worker results for K={K}, "
            f"got {R.shape[0]}"
        )
    alphas = _check_points("arrived_alphas", arrived_alphas, size=R.shape[0])
    return R, alphas, _check_points("betas", betas, size=K), threshold - 1


def decode_error_bound(arrived_alphas: Any, K: int) -> float:
    """Estimated relative error of :func:`decode` from the workers at ``arrived_alphas``.

    Machine epsilon times the 2-norm condition number of the column-scaled Chebyshev
    Vandermonde matrix that :func:`decode` fits (the factor by which the interpolation
    amplifies the results' rounding errors). Points spread over ``[-1, 1]`` keep it near
    ``1e-15``; points clustered at one end (the first workers of many, near ``+1``) make it
    grow like ``n^(2(n-m))`` (Fahim and Cadambe, 2019) -- up to ``O(1)`` for ``K = 5`` of ``N =
    60``. Measured against the exact block sum on clustered subsets, the true error stayed
    within about 10 times this bound. ``inf`` with fewer than ``recovery_threshold(K)`` points.

    Parameters
    ----------
    arrived_alphas : array_like, shape (n,)
        Evaluation points of the workers that arrived (distinct).
    K : int
        Number of data blocks.

    Returns
    -------
    float

    Examples
    --------
    >>> betas, alphas = lcc_points(5, 60)
    >>> decode_error_bound(alphas, 5) < 1e-13           # every worker: well spread
    True
    >>> decode_error_bound(alphas[:9], 5) > 1e-2         # the first nine: clustered near +1
    True
    """
    K = check_int("K", K, minimum=1)
    alphas = _check_points("arrived_alphas", arrived_alphas)
    threshold = recovery_threshold(K)
    if alphas.size < threshold:
        return math.inf
    V = _cheb.chebvander(alphas, threshold - 1)
    return float(np.finfo(float).eps * np.linalg.cond(V / np.linalg.norm(V, axis=0)))


class ErrorBoundScreen:
    """:func:`decode_error_bound` and :func:`decode` for a master that asks after every
    arrival whether it can decode: the same answers up to rounding, most of them without a
    singular value decomposition.

    While the arrived points leave gaps, the bound stays far above the limit for many
    arrivals in a row, and each full check is an SVD of an ``n x threshold`` matrix (0.1 s
    at ``K = 384``). For any matrix ``A`` and nonzero vectors ``u``, ``w``,
    ``(||A u|| / ||u||) / (||A w|| / ||w||)`` is a lower bound on ``cond(A)``
    (``sigma_max >= ||A u|| / ||u||`` and ``sigma_min <= ||A w|| / ||w||``). ``u`` is the top
    right singular vector of the last full check and ``w`` the best combination (by a thin
    SVD) of its bottom ``_config.LCC_SCREEN_VECTORS`` ones, both carried through the change
    of column scaling that new rows bring; one arrival adds one row, so the bound stays
    tight. At the first check of a new step (points that do not contain the last check's),
    the vectors come from block inverse iteration on ``A^T A``. When the lower bound exceeds
    the limit, the answer is "above" (the lower bound is returned) for the cost of a
    thin product; otherwise the bound is computed in full. A full check that finds the
    points decodable keeps its SVD, and :meth:`decode` of the same points solves the
    least-squares fit with it.

    Parameters
    ----------
    alphas : array_like, shape (N,)
        Every worker's evaluation point (distinct).
    K : int
        Number of data blocks.

    Examples
    --------
    >>> betas, alphas = lcc_points(5, 60)
    >>> screen = ErrorBoundScreen(alphas, 5)
    >>> [bool(screen.bound(np.arange(n), 1e-8) > 1e-8) for n in (9, 10, 60)]
    [True, True, False]
    """

    def __init__(self, alphas: Any, K: int) -> None:
        self.K = check_int("K", K, minimum=1)
        self.alphas = _check_points("alphas", alphas)
        self._degree = recovery_threshold(self.K) - 1
        self._vandermonde = _cheb.chebvander(self.alphas, self._degree)  # every worker's row, formed once
        self._squares = self._vandermonde**2  # for the column norms of any subset, by one product
        self._arrived: np.ndarray | None = None  # the workers of the check the vectors below come from
        self._scale: np.ndarray | None = None  # column norms of that check's matrix
        self._top: np.ndarray | None = None  # its top right singular vector
        self._bottom: np.ndarray | None = None  # its bottom right singular vectors (columns)
        self._kept: tuple | None = None  # (arrived, U, s, Vt, scale) of a full check found decodable

    def bound(self, arrived: Any, limit: float) -> float:
        """:func:`decode_error_bound` of the workers ``arrived`` (indices into ``alphas``)
        where it is at most ``limit``; above, it or a lower bound on it that exceeds ``limit``."""
        arrived = as_index_array("arrived", arrived, self.alphas.size)
        self._kept = None
        if np.unique(arrived).size < self._degree + 1:
            return math.inf
        # the matrix is V D (D = 1 / column norms); the screen works with V and D apart, so
        # a check that the screen answers never forms the scaled matrix
        V = self._vandermonde[arrived]
        scale = np.sqrt(np.bincount(arrived, minlength=self.alphas.size) @ self._squares)
        # over the rounding of the products (relative error of order n eps cond <= n limit): never "above" wrongly
        margin = limit * (1 + max(1e-6, 10 * V.shape[0] * limit))
        if self._top is not None and np.isin(self._arrived, arrived).all():
            ratio = scale / self._scale  # A_new = [V_old; rows] D_new: the old vectors in the new scaling
            low = self._lower_bound(V, scale, ratio * self._top, ratio[:, None] * self._bottom)
            if low > margin:
                return low
            # no longer proven: mostly the points have become decodable, which only an SVD shows
        else:
            # a new step's first check: vectors by inverse iteration, a third of an SVD's cost
            top, bottom = self._extreme_vectors(V, scale, min(_config.LCC_SCREEN_VECTORS, self._degree + 1))
            if top is not None:
                low = self._lower_bound(V, scale, top, bottom)
                if low > margin:
                    self._arrived, self._scale, self._top, self._bottom = arrived, scale, top, bottom
                    return low
        U, singular, Vt = np.linalg.svd(V / scale, full_matrices=False)
        self._arrived, self._scale, self._top = arrived, scale, Vt[0]
        self._bottom = Vt[-min(_config.LCC_SCREEN_VECTORS, self._degree + 1):].T
        value = float(np.finfo(float).eps * singular[0] / singular[-1]) if singular[-1] > 0 else math.inf
        if value <= limit:
            self._kept = (arrived, U, singular, Vt, scale)
        return value

    @staticmethod
    def _lower_bound(V: np.ndarray, scale: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> float:
        """``eps (||A u|| / ||u||) / (||A w|| / ||w||)`` for ``A = V / scale``, ``u = top`` and
        ``w`` the combination of ``bottom``'s columns that the eigenvectors of ``(A B)^T (A B)``
        find smallest: a lower bound on the error bound of ``A`` (whatever ``w`` the
        eigensolver returns, ``||A w|| / ||w||`` is evaluated directly)."""
        product = V @ (bottom / scale[:, None])
        _, vectors = np.linalg.eigh(product.T @ product)
        w = bottom @ vectors[:, 0]
        smallest = np.linalg.norm(V @ (w / scale)) / np.linalg.norm(w)
        if not smallest > 0:
            return math.inf
        largest = np.linalg.norm(V @ (top / scale)) / np.linalg.norm(top)
        return float(np.finfo(float).eps * largest / smallest)

    @staticmethod
    def _extreme_vectors(V: np.ndarray, scale: np.ndarray, count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Vectors near the top right singular vector of ``A = V / scale`` and its bottom
        ``count`` ones, by power and block inverse iteration on ``A^T A`` (seeded: the same
        vectors every time); ``(None, None)`` when ``A^T A`` is singular to working precision."""
        import warnings

        from scipy.linalg import LinAlgWarning, lu_factor, lu_solve

        gram = (V.T @ V) / np.outer(scale, scale)
        rng = np.random.default_rng(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (LinAlgWarning, RuntimeWarning))
            factors = lu_factor(gram, check_finite=False)
            bottom = rng.standard_normal((V.shape[1], count))
            top = rng.standard_normal(V.shape[1])
            for _ in range(_config.LCC_SCREEN_ITERATIONS):
                bottom, _ = np.linalg.qr(lu_solve(factors, bottom, check_finite=False))
                top = gram @ top
                top /= np.linalg.norm(top)
        if not (np.isfinite(bottom).all() and np.isfinite(top).all()):
            return None, None
        return top, bottom

    def decode(self, results: Any, arrived: Any, betas: Any) -> np.ndarray:
        """:func:`decode` of the results of the workers ``arrived`` (in that order); from the
        SVD of the last check when it found these workers decodable (the least-squares fit
        ``V^+ R``, as :func:`decode`'s own solve computes it)."""
        arrived = as_index_array("arrived", arrived, self.alphas.size)
        kept = self._kept
        if kept is None or not np.array_equal(kept[0], arrived):
            return decode(results, self.alphas[arrived], betas, self.K)
        R, _, betas, degree = _decode_inputs(results, self.alphas[arrived], betas, self.K)
        _, U, singular, Vt, scale = kept
        coef = Vt.T @ ((U.T @ R) / singular[:, None])
        return (_cheb.chebvander(betas, degree).sum(axis=0) / scale) @ coef


def exact_block_sum(blocks: Any, theta: Any) -> np.ndarray:
    """Uncoded reference ``sum_k f(B_k)`` computed block by block.

    Parameters
    ----------
    blocks : array_like, shape (K, r, c)
        Data blocks ``[X_k | y_k]``.
    theta : array_like, shape (c - 1,)
        Parameters ``[w, b]``.

    Returns
    -------
    ndarray, shape (c - 1,)

    Examples
    --------
    >>> exact_block_sum([[[1.0, 1.0, 2.0]], [[2.0, 1.0, 1.0]]], [1.0, 0.0]).tolist()
    [1.0, 0.0]
    """
    blocks = as_real_array("blocks", blocks, ndim=(3,), keep_float32=False)
    return sum((worker_result(b, theta) for b in blocks), np.zeros(blocks.shape[2] - 1))


def full_gradient(block_sum: Any, theta: Any, m: int, alpha: float = 0.0) -> np.ndarray:
    """Least-squares gradient from the decoded block sum.

    Parameters
    ----------
    block_sum : array_like, shape (d + 1,)
        ``sum_k X_k^T (X_k theta - y_k)`` (from :func:`decode` or :func:`exact_block_sum`).
    theta : array_like, shape (d + 1,)
        Parameters ``[w, b]``.
    m : int
        Number of real (unpadded) samples.
    alpha : float, default 0.0
        L2 penalty on ``w``; the intercept is not penalised.

    Returns
    -------
    ndarray, shape (d + 1,)
        ``block_sum / m + alpha * [w, 0]``, the gradient of
        :class:`lwpd.problems.LeastSquares`.

    Examples
    --------
    >>> full_gradient([2.0, 4.0], [1.0, 3.0], 2, alpha=0.5).tolist()
    [1.5, 2.0]
    """
    g = as_real_array("block_sum", block_sum, ndim=(1,), keep_float32=False)
    theta = as_real_array("theta", theta, ndim=(1,), keep_float32=False)
    if theta.size != g.size:
        raise ValueError(f"theta must have {g.size} entries (as block_sum), got {theta.size}")
    m = check_int("m", m, minimum=1)
    alpha = check_real("alpha", alpha, nonnegative=True)
    out = g / m
    out[:-1] += alpha * theta[:-1]
    return out


def reconstruction_error(estimate: Any, exact: Any) -> float:
    """Relative error ``||estimate - exact|| / ||exact||`` (absolute if ``exact`` is 0).

    Parameters
    ----------
    estimate, exact : array_like, same shape
        Decoded and exact gradients (or block sums).

    Returns
    -------
    float

    Examples
    --------
    >>> reconstruction_error([1.0, 2.0], [1.0, 2.0])
    0.0
    >>> round(reconstruction_error([3.0, 4.1], [3.0, 4.0]), 3)
    0.02
    """
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(exact, dtype=np.float64)
    if est.shape != ref.shape:
        raise ValueError(f"estimate must have the shape of exact {ref.shape}, got {est.shape}")
    diff = float(np.linalg.norm(est - ref))
    norm = float(np.linalg.norm(ref))
    return diff / norm if norm > 0 else diff
