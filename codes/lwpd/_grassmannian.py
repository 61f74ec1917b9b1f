"""Numerical packing of lines in ``R^d`` (Grassmannian frames): minimise the coherence.

The coherence of unit vectors ``v_1..v_N`` is ``mu = max_{i != j} |rho_ij|`` with
``rho_ij = <v_i, v_j>``; as lines the sign of each vector is irrelevant. The maximum is not
differentiable, so :func:`pack_lines`

1. minimises a smooth surrogate of it from several seeded random starts: the log-sum-exp
   of ``p log rho_ij^2`` over all pairs, ``(1/p) log sum rho_ij^(2p)``, with increasing
   sharpness ``p`` (this is ``log`` of a p-norm, so it is scale-free in ``mu``: the same
   ``p`` resolves a packing with ``mu = 0.05`` as well as one with ``mu = 0.5``), by
   L-BFGS-B with an analytic, vectorised gradient, rows normalised inside the objective;
2. polishes the best starts on the exact minimax problem in epigraph form,
   ``min t  s.t.  -t <= rho_ij <= t,  |v_i| = 1``, by sequential linear programming with a
   trust region (sparse LPs solved by HiGHS through :func:`scipy.optimize.linprog`; only
   pairs that can bind within the trust radius enter the LP, every step is checked on all
   pairs). This reaches the optimum of the basin to about 1e-9 where the surrogate alone
   stops a few 1e-4 short, and, unlike SLSQP's dense QPs, it stays cheap and does not stall
   on the degenerate optima that rotations of a packing create.

Cases with a known exact answer are returned in closed form: ``N <= d`` (orthonormal rows),
``d == 1`` (every line is the same, coherence 1) and ``d == 2`` (lines ``pi/N`` apart, which
is optimal: doubling angles maps lines in the plane to points on a circle).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import scipy.optimize
import scipy.sparse

from threadpoolctl import threadpool_limits

__all__ = ["pack_lines", "line_coherence"]

#: Sharpness schedule ``p`` of the surrogate ``(1/p) log sum rho_ij^(2p)``. Its gap to
#: ``log mu^2`` is at most ``log(#pairs)/p``, so the last stage is within about 1% of the
#: exact maximum; the exact polish does the rest. (``p < 1`` can collapse lines together.)
_SHARPNESS = (2.0, 8.0, 32.0, 128.0, 512.0)

#: The LP polish has ``2 N d + 1`` unknowns and up to ``N (N - 1) / 2`` rows; past these
#: sizes (40 lines in R^8 polish in a few seconds) its LPs take tenths of a second each,
#: and the surrogate's answer is sharpened once more (``_LAST_SHARPNESS``) instead.
_POLISH_MAX_VARIABLES = 320
_POLISH_MAX_PAIRS = 820

#: Trust region of the polish: first radius (the surrogate answer is already close), the
#: radius below which steps are pointless, and the predicted gain below which it stops
#: (smaller predictions are LP round-off).
_POLISH_TRUST_START = 0.005
_POLISH_TRUST_MIN = 1e-10
_POLISH_TOL = 1e-12
_POLISH_MAX_ITER = 60

#: Cost per unit of ``|dv|_1`` in the polish LP: a tie-breaker towards short steps, far
#: below any gain in the bound that matters (1e-6 and 1e-7 converge in a few LPs; 0 and
#: 1e-8 let steps wander and take up to 60).
_POLISH_STEP_COST = 1e-7

#: The polish stops when ``_POLISH_STALL_STEPS`` steps together gained less than this: where
#: fewer pairs bind than there are degrees of freedom, SLP crawls (the optimum is set by
#: curvature that the LP cannot see) and further steps buy nothing measurable.
_POLISH_STALL = 1e-9
_POLISH_STALL_STEPS = 5

#: Sharpness of the extra surrogate stage used when the polish is too costly.
_LAST_SHARPNESS = 2048.0

#: How many of the best surrogate solutions are polished (the ranking can change), and how
#: close to the best (relative coherence) a candidate must be to be worth polishing.
_POLISH_CANDIDATES = 2
_POLISH_RELATIVE_GAP = 0.02

#: Smallest squared correlation fed to ``log``; keeps orthogonal pairs finite.
_TINY = 1e-300


def line_coherence(vectors: np.ndarray) -> float:
    """Coherence ``max_{i != j} |<v_i, v_j>| / (|v_i| |v_j|)`` of the rows of ``vectors``.

    Parameters
    ----------
    vectors : numpy.ndarray, shape (N, d)
        Nonzero rows.

    Returns
    -------
    float
        The largest absolute correlation between two distinct rows; 0 for a single row.
    """
    if vectors.shape[0] < 2:
        return 0.0
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    gram = np.abs(unit @ unit.T)
    np.fill_diagonal(gram, 0.0)
    return float(min(gram.max(), 1.0))


def _closed_form(n_codewords: int, dim: int) -> np.ndarray | None:
    """Exactly optimal packings for the cases that need no search, else ``None``."""
    if n_codewords <= dim:
        # orthonormal rows: coherence 0 (this covers N == 1)
        return np.eye(n_codewords, dim)
    if dim == 1:
        # all lines of R^1 coincide: coherence 1 whatever we do
        return np.ones((n_codewords, 1))
    if dim == 2:
        # lines at angles k*pi/N: angle doubling maps them to N equally spaced points on a
        # circle, the optimal circle code, so the minimum angle pi/N is optimal
        theta = np.pi * np.arange(n_codewords) / n_codewords
        return np.column_stack([np.cos(theta), np.sin(theta)])
    return None


def _upper_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pairs ``i < j``."""
    return np.triu_indices(n, k=1)


def _surrogate(x: np.ndarray, shape: tuple[int, int], p: float, iu: tuple[np.ndarray, np.ndarray]) -> tuple[float, np.ndarray]:
    """Value and gradient of ``(1/p) log sum_{i<j} rho_ij^(2p)`` at unnormalised rows ``x``."""
    X = x.reshape(shape)
    r = np.sqrt(np.einsum("ij,ij->i", X, X))
    V = X / r[:, None]
    G = V @ V.T
    g = G[iu]
    s = g * g + _TINY
    z = p * np.log(s)
    zmax = z.max()
    e = np.exp(z - zmax)
    total = e.sum()
    value = (zmax + math.log(total)) / p
    # d value / d G_ij = w_ij * 2 G_ij / G_ij^2 with softmax weights w (sum 1 over pairs)
    coef = (e / total) * 2.0 * g / s
    S = np.zeros((shape[0], shape[0]))
    S[iu] = coef
    S = S + S.T
    grad_v = S @ V  # d value / dV (each pair counted once through the symmetric S)
    # chain rule through V = X / |X|: remove the radial part, divide by the norm
    grad_x = (grad_v - V * np.einsum("ij,ij->i", grad_v, V)[:, None]) / r[:, None]
    return value, grad_x.ravel()


def _surrogate_descent(start: np.ndarray, n_iter: int, schedule: tuple[float, ...] = _SHARPNESS) -> np.ndarray:
    """Minimise the surrogate through the sharpness ``schedule`` from ``start`` (unit rows)."""
    shape = start.shape
    iu = _upper_pairs(shape[0])
    X = start
    for p in schedule:
        res = scipy.optimize.minimize(
            _surrogate,
            X.ravel(),
            args=(shape, p, iu),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": n_iter, "gtol": 1e-12, "ftol": 1e-14},
        )
        X = res.x.reshape(shape)
        # renormalise so the next stage starts well scaled (the objective ignores scale)
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _polish(V: np.ndarray, n_iter: int) -> np.ndarray:
    """Sequential linear programming on the exact minimax problem, from unit rows ``V``.

    Each step linearises the correlations of the pairs that can bind,
    ``rho_ij + <v_j, dv_i> + <v_i, dv_j>``, and solves the LP
    ``min t + eps |dv|_1  s.t.  -t <= rho_ij + ... <= t,  <v_i, dv_i> = 0,  |dv|_inf <= delta``
    (the epigraph form of the minimax; the equalities keep the step tangent to the unit
    sphere). The tiny ``eps`` picks the shortest of the many optimal steps: rotations and
    other moves that leave the bound unchanged would otherwise run to the trust-region edge
    and spoil the step with curvature. The step is renormalised and accepted only if the
    exact coherence, over all pairs, decreases; the trust radius ``delta`` grows after good
    steps and shrinks after poor ones. The LP is sparse (each row touches two vectors), so
    this stays cheap where a dense SQP (SLSQP) would not, and it does not stall on the
    degenerate optima that rotations of a packing create.
    """
    n, d = V.shape
    iu, ju = _upper_pairs(n)
    mu = line_coherence(V)
    if mu <= 0.0:
        return V
    nd = n * d
    # unknowns: dv = p - q with p, q >= 0 (row-major, for the L1 term), then the bound t
    n_var = 2 * nd + 1
    cost = np.full(n_var, _POLISH_STEP_COST)
    cost[-1] = 1.0
    eq_rows = np.repeat(np.arange(n), d)
    eq_pattern = (np.concatenate([eq_rows, eq_rows]), np.concatenate([np.arange(nd), np.arange(nd) + nd]))
    delta = _POLISH_TRUST_START
    rejected = 0
    history = [mu]
    for _ in range(min(n_iter, _POLISH_MAX_ITER)):
        rho = np.einsum("ij,ij->i", V[iu], V[ju])
        # first order, a pair moves by at most 2 sqrt(d) delta and the bound by as much, so
        # pairs further below the maximum cannot bind (the exact check below catches the rest)
        reach = 2.0 * math.sqrt(d) * delta
        near = np.abs(rho) >= mu - min(mu, 2.0 * reach) - 1e-12
        ia, ja, r = iu[near], ju[near], rho[near]
        # the side -t <= rho_ij is slack unless the step can flip the sign of rho_ij, so a
        # pair gets one row, sign(rho) (rho + g.dv) <= t, and a second only when |rho| is small
        both = np.abs(r) <= reach + 1e-12
        sign = np.where(r >= 0.0, 1.0, -1.0)
        ia = np.concatenate([ia, ia[both]])
        ja = np.concatenate([ja, ja[both]])
        sign = np.concatenate([sign, -sign[both]])
        r = np.concatenate([r, r[both]])
        m = ia.size
        rows = np.repeat(np.arange(m), d)
        cols = np.concatenate([(ia[:, None] * d + np.arange(d)).ravel(), (ja[:, None] * d + np.arange(d)).ravel()])
        grad = np.concatenate([(V[ja] * sign[:, None]).ravel(), (V[ia] * sign[:, None]).ravel()])
        rows2 = np.concatenate([rows, rows])
        lin = scipy.sparse.csr_array(
            (np.concatenate([grad, -grad]), (np.concatenate([rows2, rows2]), np.concatenate([cols, cols + nd]))),
            shape=(m, n_var),
        )
        bound = scipy.sparse.csr_array((-np.ones(m), (np.arange(m), np.full(m, 2 * nd))), shape=(m, n_var))
        # sign * (rho + g.dv) <= t
        A_ub = (lin + bound).tocsr()
        b_ub = -sign * r
        A_eq = scipy.sparse.csr_array((np.concatenate([V.ravel(), -V.ravel()]), eq_pattern), shape=(n, n_var))
        bounds = [(0.0, delta)] * (2 * nd) + [(0.0, None)]
        res = scipy.optimize.linprog(
            cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=np.zeros(n), bounds=bounds, method="highs-ipm"
        )
        if res.status != 0 or res.x is None:
            break
        step = (res.x[:nd] - res.x[nd : 2 * nd]).reshape(n, d)
        predicted = mu - res.x[-1]
        if predicted <= _POLISH_TOL:
            break
        W = V + step
        W /= np.linalg.norm(W, axis=1, keepdims=True)
        mu_new = line_coherence(W)
        actual = mu - mu_new
        if actual > 0.0:
            V, mu = W, mu_new
            rejected = 0
            if actual > 0.75 * predicted and np.abs(step).max() >= 0.99 * delta:
                delta *= 2.0
            elif actual < 0.25 * predicted:
                delta /= 4.0
        else:
            # the linear model was wrong at this radius (curvature or an unlisted pair)
            delta /= 4.0
            rejected += 1
        history.append(mu)
        stalled = len(history) > _POLISH_STALL_STEPS and history[-1 - _POLISH_STALL_STEPS] - mu < _POLISH_STALL
        if delta < _POLISH_TRUST_MIN or rejected > 6 or stalled:
            break
    return V


def _polish_affordable(n: int, d: int) -> bool:
    """Whether the LP polish of ``n`` lines in ``R^d`` fits its cost budget."""
    return n * d <= _POLISH_MAX_VARIABLES and n * (n - 1) // 2 <= _POLISH_MAX_PAIRS


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS to one thread while packing.

    L-BFGS-B calls BLAS on vectors of a few hundred entries thousands of times; OpenBLAS
    threads cost far more than they save there, and on a busy machine (parallel test runs,
    other workers) they made a 30 x 8 packing 60 times slower.
    """
    return threadpool_limits(limits=1, user_api="blas")


def _canonical_signs(V: np.ndarray) -> np.ndarray:
    """Flip each row so its first clearly nonzero entry is positive (same lines, tidier)."""
    lead = np.argmax(np.abs(V) > 1e-12, axis=1)
    signs = np.sign(V[np.arange(V.shape[0]), lead])
    signs[signs == 0] = 1.0
    return V * signs[:, None]


def pack_lines(
    n_codewords: int,
    dim: int,
    rng: np.random.Generator,
    n_iter: int = 300,
    n_restarts: int = 8,
) -> np.ndarray:
    """Unit vectors spanning ``n_codewords`` lines in ``R^dim`` with (numerically) least coherence.

    Minimises ``mu = max_{i != j} |<v_i, v_j>|`` over unit vectors. From ``n_restarts``
    Gaussian random starts drawn from ``rng``, the smooth surrogate
    ``(1/p) log sum_{i<j} <v_i, v_j>^(2p)`` (the log of a p-norm of the squared correlations)
    is minimised by L-BFGS-B for ``p`` = 2, 8, 32, 128, 512 in turn, each stage starting from
    the last; the best two results are then polished on the exact epigraph problem
    ``min t s.t. -t <= <v_i, v_j> <= t, |v_i| = 1`` by trust-region sequential linear
    programming (for ``N * dim <= 320`` and ``N (N - 1) / 2 <= 820``; larger problems get
    one sharper surrogate stage instead), and the packing with the least exact coherence is
    returned. ``N <= dim``, ``dim == 1`` and
    ``dim == 2`` have closed-form optimal answers and use no randomness.

    Parameters
    ----------
    n_codewords : int
        Number of lines ``N`` (>= 1).
    dim : int
        Dimension ``d`` (>= 1).
    rng : numpy.random.Generator
        Source of the random starts; the result is a deterministic function of its state.
    n_iter : int, default 300
        Iteration limit of each optimiser run (per sharpness stage and per polish).
    n_restarts : int, default 8
        Number of random starts.

    Returns
    -------
    numpy.ndarray, shape (n_codewords, dim), float64
        Unit-norm rows; each row's first clearly nonzero entry is positive.

    Notes
    -----
    The coherence is bounded below by the Welch bound ``sqrt((N - d) / (d (N - 1)))``,
    attained exactly by equiangular tight frames (e.g. the simplex ``N = d + 1`` and the six
    diagonals of the icosahedron in ``R^3``), and, for ``N > d (d + 1) / 2``, by the orthoplex
    bound ``1 / sqrt(d)``. A random start can end in a local minimum, which is why several
    are tried; more restarts give better packings for larger ``N``.

    Examples
    --------
    >>> import numpy as np
    >>> V = pack_lines(6, 3, np.random.default_rng(0))
    >>> round(line_coherence(V) ** -2, 6)       # the icosahedron's diagonals: 1/sqrt(5)
    5.0
    """
    closed = _closed_form(n_codewords, dim)
    if closed is not None:
        return closed.astype(np.float64)

    with _single_threaded_blas():
        best = _search(n_codewords, dim, rng, n_iter, n_restarts)
    return _canonical_signs(best)


def _search(n_codewords: int, dim: int, rng: np.random.Generator, n_iter: int, n_restarts: int) -> np.ndarray:
    """Surrogate descent from ``n_restarts`` random starts, then the exact polish."""
    candidates: list[tuple[float, np.ndarray]] = []
    for _ in range(n_restarts):
        start = rng.standard_normal((n_codewords, dim))
        start /= np.linalg.norm(start, axis=1, keepdims=True)
        V = _surrogate_descent(start, n_iter)
        candidates.append((line_coherence(V), V))
    # stable sort: on ties the earlier start wins, so the result does not depend on sorting
    order = sorted(range(len(candidates)), key=lambda k: candidates[k][0])
    best_mu, best = candidates[order[0]]
    if not _polish_affordable(n_codewords, dim):
        # too large for the LP polish: sharpen the surrogate once more on the winner instead
        V = _surrogate_descent(best, n_iter, (_LAST_SHARPNESS,))
        return V if line_coherence(V) < best_mu else best
    for k in order[:_POLISH_CANDIDATES]:
        if candidates[k][0] > candidates[order[0]][0] * (1.0 + _POLISH_RELATIVE_GAP):
            break
        V = _polish(candidates[k][1], n_iter)
        mu = line_coherence(V)
        if mu < best_mu:
            best_mu, best = mu, V
    return best
