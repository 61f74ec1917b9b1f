"""Numerical packing of lines in ``R^d`` (Grassmannian frames): minimise the coherence.

The coherence of unit vectors ``v_1..v_N`` is ``mu = max_{i != j} |rho_ij|`` with
``rho_ij = <v_i, v_j>``; as lines the sign of each vector is irrelevant. The maximum is not
differentiable and has many local minima, so :func:`pack_lines` tries several random starts,
each through one of four *recipes* taken in turn (restart ``k`` uses recipe ``k mod 4``):

1. a smooth surrogate of the maximum, the log-sum-exp of ``p log rho_ij^2`` over all pairs,
   ``(1/p) log sum rho_ij^(2p)``, minimised with increasing sharpness ``p`` = 2 ... 512
   (this is ``log`` of a p-norm, so it is scale-free in ``mu``) by L-BFGS-B with an
   analytic, vectorised gradient, rows normalised inside the objective; its smooth first
   stages lead to tight-frame-like packings;
2. alternating projection (Tropp, Dhillon, Heath & Strohmer, "Designing structured tight
   frames via an alternating projection method", IEEE Trans. IT 51 (2005)) between Gram
   matrices whose off-diagonal entries are at most the Welch bound and the Gram matrices
   of tight frames, best of a few starts; where an equiangular tight frame exists it lands
   on it from a fair share of starts;
3. the surrogate from ``p = 32`` on, which skips the smooth stages (they always lead 8
   lines in ``R^4`` to the same local minimum, 0.46 degrees short of the best known);
4. alternating projection towards 1.2 times the Welch bound (some best packings, e.g. 12
   lines in ``R^5``, are reached only from such looser starts).

Above 128 lines the projection recipes give way to the surrogate ones (a dense ``N x N``
eigendecomposition per iteration costs too much there). Every start is then polished on
the exact minimax problem in epigraph form,
``min t  s.t.  -t <= rho_ij <= t,  |v_i| = 1``, by sequential linear programming with a
trust region (sparse LPs solved by HiGHS through :func:`scipy.optimize.linprog`; only pairs
that can bind within the trust radius enter the LP, every step is checked on all pairs).
This reaches the optimum of the basin to about 1e-9 where the surrogate alone stops a few
1e-4 short, and, unlike SLSQP's dense QPs, it stays cheap and does not stall on the
degenerate optima that rotations of a packing create. Problems too large for the LP get one
sharper surrogate stage instead.

Each restart is processed on its own and the least coherent packing wins (the earliest on
ties), so more restarts never give a worse packing. The search stops early once a packing
meets the Welch or orthoplex lower bound, which no packing can beat.

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

from lwpd.metrics import correlations_from_gram, welch_bound

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

#: Alternating projection: random starts per restart (the least coherent is refined) and
#: the bound it projects onto, in multiples of the Welch bound.
_PROJECTION_STARTS = 4
_PROJECTION_SLACK = (1.0, 1.2)
#: Above this many lines the projection recipes give way to the surrogate ones: each
#: iteration is a dense N x N eigendecomposition (O(N^3), a thousand of them per restart),
#: which past a few hundred lines costs far more than the surrogate's O(N^2 d) steps.
_PROJECTION_MAX_LINES = 128

#: Sharpness schedule of the third recipe: the surrogate without its smooth first stages.
_SHARP_SCHEDULE = _SHARPNESS[2:]

#: Up to this many unknowns (``N * d``) every restart is polished (the polish reorders the
#: restarts: in R^5, 11 lines at 66.4 degrees polish to the best known 67.25, others at
#: 67.0 stay there); above it, only a restart that improves on every earlier start is (the
#: polish costs seconds there, and the ranking of the starts rarely changes).
_POLISH_EVERY_MAX_VARIABLES = 120

#: A packing within this relative distance of the lower bound ends the search: nothing beats it.
_BOUND_RTOL = 1e-12

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
    rho = correlations_from_gram(vectors @ vectors.T, in_place=True)
    np.fill_diagonal(rho, 0.0)
    return float(np.abs(rho).max())


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

    Minimises ``mu = max_{i != j} |<v_i, v_j>|`` over unit vectors. Restart ``k`` draws
    Gaussian random starts from ``rng`` and improves them by recipe ``k mod 4``: a smooth
    surrogate of the maximum with increasing sharpness, alternating projection onto tight
    frames below the Welch bound, the surrogate without its smooth stages, and alternating
    projection onto a looser bound (see the module docstring). Each result is polished on
    the exact epigraph problem ``min t s.t. -t <= <v_i, v_j> <= t, |v_i| = 1`` by
    trust-region sequential linear programming (for ``N * dim <= 320`` and
    ``N (N - 1) / 2 <= 820``; larger problems get one sharper surrogate stage instead), and
    the packing with the least exact coherence is returned. Restarts are independent of
    later ones, so more restarts never give a worse packing; the search ends early once a
    packing meets the Welch or orthoplex bound. ``N <= dim``, ``dim == 1`` and
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
        Iteration limit of each optimiser run: a sharpness stage, an alternating
        projection, the polish.
    n_restarts : int, default 8
        Number of restarts (the four recipes in turn); more never give a worse packing.

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


def _lower_bound(n: int, d: int) -> float:
    """The best lower bound on the coherence of ``n`` lines in ``R^d``: Welch, and orthoplex
    (Rankin) where ``n > d (d + 1) / 2``."""
    bound = welch_bound(n, d)
    if n > d * (d + 1) // 2:
        bound = max(bound, 1.0 / math.sqrt(d))
    return bound


def _alternating_projection(starts: np.ndarray, n_iter: int, slack: float) -> np.ndarray:
    """Tropp et al.'s alternating projection from each of ``starts`` (shape (S, N, d)); the
    least coherent result (unit rows).

    Each iteration clips the Gram matrix's off-diagonal entries to ``slack`` times the Welch
    bound (the nearest Gram matrix of a frame that coherent, in Frobenius norm, ignoring rank)
    and projects back onto the Gram matrices of unit-norm-average tight frames: the ``d``
    leading eigenvectors, all eigenvalues set to ``N / d``.
    """
    n, d = starts.shape[1:]
    limit = slack * welch_bound(n, d)
    scale = math.sqrt(n / d)
    V = starts
    for _ in range(n_iter):
        gram = np.clip(V @ V.transpose(0, 2, 1), -limit, limit)
        gram[:, np.arange(n), np.arange(n)] = 1.0
        V = np.linalg.eigh(gram)[1][:, :, -d:] * scale
    V = V / np.linalg.norm(V, axis=2, keepdims=True)
    return min(V, key=line_coherence)


def _random_unit_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    start = rng.standard_normal(shape)
    return start / np.linalg.norm(start, axis=-1, keepdims=True)


def _start(recipe: int, n: int, d: int, rng: np.random.Generator, n_iter: int) -> np.ndarray:
    """The start of one restart, by ``recipe`` 0-3 (see the module docstring)."""
    if recipe % 2 == 1 and n > _PROJECTION_MAX_LINES:
        recipe -= 1  # too many lines for dense projections: the matching surrogate recipe
    if recipe % 2 == 0:
        schedule = _SHARPNESS if recipe == 0 else _SHARP_SCHEDULE
        return _surrogate_descent(_random_unit_rows(rng, (n, d)), n_iter, schedule)
    slack = _PROJECTION_SLACK[recipe // 2]
    return _alternating_projection(_random_unit_rows(rng, (_PROJECTION_STARTS, n, d)), n_iter, slack)


def _refine(V: np.ndarray, n_iter: int) -> np.ndarray:
    """The exact polish where affordable, else one sharper surrogate stage (kept if it helps)."""
    if _polish_affordable(*V.shape):
        return _polish(V, n_iter)
    sharper = _surrogate_descent(V, n_iter, (_LAST_SHARPNESS,))
    return sharper if line_coherence(sharper) < line_coherence(V) else V


def _search(n_codewords: int, dim: int, rng: np.random.Generator, n_iter: int, n_restarts: int) -> np.ndarray:
    """The least coherent of ``n_restarts`` independent restarts (the earliest on ties).

    Restart ``k`` depends only on restarts ``0..k-1`` (the generator's state after them and,
    for large problems, whether its start beats theirs), so the first ``R`` restarts are the
    same whatever ``n_restarts >= R`` is: more restarts never give a worse packing.
    """
    floor = _lower_bound(n_codewords, dim) * (1.0 + _BOUND_RTOL)
    refine_every = n_codewords * dim <= _POLISH_EVERY_MAX_VARIABLES
    best, best_mu, best_start_mu = None, math.inf, math.inf
    for k in range(n_restarts):
        V = _start(k % 4, n_codewords, dim, rng, n_iter)
        mu = line_coherence(V)
        if refine_every or mu < best_start_mu:
            best_start_mu = min(best_start_mu, mu)
            V = _refine(V, n_iter)
            mu = line_coherence(V)
        if mu < best_mu:
            best, best_mu = V, mu
        if best_mu <= floor:
            break
    return best
