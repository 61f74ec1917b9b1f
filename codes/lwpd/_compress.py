"""Lossy codebook compression: keep the codewords that share the least information.

A compressed codebook is a subset of the input codewords, chosen to optimise one of the
criteria of :mod:`lwpd.metrics` evaluated on the codewords as lines (scale never matters).
Small problems are solved exactly by exhaustive search; large ones by greedy selection
improved with swaps and seeded random restarts.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from lwpd import _config, _defaults
from lwpd._validation import as_covariance, as_rng, check_choice, check_int
from lwpd.codebook import check_codebook
from lwpd.codebook import Codebook
from lwpd.metrics import correlations_from_gram

__all__ = ["compress", "CRITERIA"]

#: Accepted values of ``criterion``.
CRITERIA: tuple[str, ...] = ("coherence", "frame_potential", "mutual_information", "logdet")
_COVARIANCE_CRITERIA: tuple[str, ...] = ("mutual_information", "logdet")

# Exhaustive search with k > N/2 evaluates each subset directly while that costs at most
# this much in total (k^2 gathered entries per subset, k^3 for a log-det); beyond it, it
# evaluates each subset through its small complement instead.
_DIRECT_BUDGET: int = 1 << 25
# Form the normalised codewords densely (for BLAS) when they have at most this many entries.
_DENSE_FACTOR_ENTRIES: int = 1 << 24
# Entries per vectorised batch of the exhaustive search (bounds temporary memory).
_BATCH_ENTRIES: int = 1 << 21
# Exponent of the smooth secondary objective sum |rho|^p that lets the coherence swap
# search leave plateaus of the max.
_SMOOTH_POWER: int = 16
# The log-det swap search updates its inverse by low-rank formulas; recompute it this often.
_REFRESH: int = 32


def compress(
    cb: Codebook,
    n_codewords: int,
    criterion: str = "coherence",
    covariance: Any = None,
    seed: int | np.random.Generator | None = None,
) -> Codebook:
    """Keep the ``n_codewords`` codewords that carry the most and share the least information.

    Lossy compression by subset selection. The criteria treat codewords as lines (each is
    normalised first), consistently with :mod:`lwpd.metrics`:

    ``"coherence"``
        minimise ``max_{i<j in S} |rho_ij|``;
    ``"frame_potential"``
        minimise ``sum_{i != j in S} rho_ij^2``;
    ``"mutual_information"``
        minimise ``sum_{i<j in S} -1/2 log(1 - rho_ij^2)``, with ``rho`` taken under the prior
        covariance when one is given (proportional pairs count as ``+inf``);
    ``"logdet"``
        maximise ``1/2 log det(I + noise^-2 V_S Sigma V_S^T)`` for unit-norm rows and
        ``noise = 1``.

    The result is the exact optimum whenever there are at most 100,000 candidate subsets
    (exhaustive search). Beyond that it is greedy selection improved by best-improvement
    swaps and a few seeded random restarts of the swap search, keeping the best.
    Criterion values that agree to within ``1e-12 + 1e-9 |value|`` are ties, broken by
    lower total Hamming weight and then by the lexicographically first set of indices.

    Parameters
    ----------
    cb : Codebook
        Candidate codewords (at most 8192).
    n_codewords : int
        Number of codewords to keep, in ``[1, cb.n_codewords]``.
    criterion : {"coherence", "frame_potential", "mutual_information", "logdet"}
        What to optimise.
    covariance : array_like, optional
        Gradient prior covariance for ``"mutual_information"`` and ``"logdet"`` only:
        ``None`` (identity), variances of shape ``(n,)``, or a PSD ``(n, n)`` matrix.
    seed : int or numpy.random.Generator, optional
        Seed of the random restarts (only used beyond exhaustive search); ``None`` means 0,
        so results are reproducible.

    Returns
    -------
    Codebook
        ``cb.subset(indices)`` for the selected indices in increasing order (same partition).

    Raises
    ------
    TypeError
        If ``cb`` is not a Codebook or ``n_codewords`` is not an integer.
    ValueError
        If ``n_codewords`` is out of range, ``criterion`` is unknown, a covariance is given
        with a criterion that does not use one, or ``cb`` has more than 8192 codewords.

    Examples
    --------
    >>> from lwpd import coherence, compress, projective_codebook
    >>> cb = projective_codebook(3)                 # 13 lines in R^3
    >>> small = compress(cb, 4)                     # the 4 body diagonals of the cube
    >>> (small.to_dense() * 3**0.5).round().astype(int).tolist()
    [[1, 1, 1], [1, 1, -1], [1, -1, 1], [1, -1, -1]]
    >>> round(coherence(small), 12)                 # meets the Welch bound 1/3
    0.333333333333
    """
    cb = check_codebook("cb", cb)
    criterion = check_choice("criterion", criterion, CRITERIA)
    if covariance is not None and criterion not in _COVARIANCE_CRITERIA:
        raise ValueError(
            "covariance applies only to criterion 'mutual_information' or 'logdet', "
            f"not {criterion!r}"
        )
    n_total = cb.n_codewords
    k = check_int("n_codewords", n_codewords, minimum=1, maximum=n_total)
    if n_total > _config.COMPRESS_MAX_CANDIDATES:
        raise ValueError(
            f"cb has {n_total} codewords, more than compress accepts "
            f"({_config.COMPRESS_MAX_CANDIDATES}); compress the base codebook first and then "
            "tile it over the blocks with block_codebook"
        )
    cov = as_covariance(covariance, cb.dim)
    if k == n_total:
        return cb.subset(np.arange(n_total))
    obj = _objective(cb, criterion, cov)
    if math.comb(n_total, k) <= _config.EXHAUSTIVE_LIMIT:
        selected = _exhaustive(obj, k)
    else:
        selected = _heuristic(obj, k, as_rng("seed", seed, default=0))
    return cb.subset(selected)


# ---------------------------------------------------------------------- the objective
@dataclass(frozen=True)
class _Objective:
    """A criterion as a minimisation over subsets.

    Pairwise criteria: ``loss(S)`` is the max (``reduce == "max"``) or the sum over pairs
    ``i < j`` of ``S`` of ``pair[i, j]`` (zero diagonal). Log-det: ``loss(S)`` is
    ``-1/2 log det kernel[S, S]``; ``factor`` (``N x r``), when known, has
    ``kernel = I + factor factor^T``.
    """

    criterion: str
    weights: np.ndarray
    reduce: str
    pair: np.ndarray | None = None
    kernel: np.ndarray | None = None
    factor: np.ndarray | None = None  # kernel = I + factor factor^T, when known

    @property
    def n(self) -> int:
        return int(self.weights.size)


def _unit_gram(cb: Codebook, cov: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``U Sigma U^T`` for the Euclidean-normalised codewords ``U`` (dense ``N x N``), and a
    dense factor ``F`` with ``F F^T`` equal to it when one fits in memory (else ``None``)."""
    csr = cb.to_scipy().astype(np.float64)
    norms = np.sqrt(np.asarray(csr.multiply(csr).sum(axis=1)).ravel())
    unit = sp.csr_array(sp.diags_array(1.0 / norms) @ csr)
    if unit.shape[0] * unit.shape[1] <= _DENSE_FACTOR_ENTRIES:
        # dense BLAS beats a sparse product whose result is dense anyway
        if cov is None:
            factor = unit.toarray()
        elif cov.ndim == 1:
            factor = unit.toarray() * np.sqrt(cov)
        else:
            lam, vecs = np.linalg.eigh(cov)
            factor = np.asarray(unit @ (vecs * np.sqrt(np.clip(lam, 0.0, None))))
        gram = factor @ factor.T  # numpy uses syrk here: exactly symmetric
    else:
        factor = None
        if cov is None:
            gram = unit @ unit.T
        elif cov.ndim == 1:
            gram = unit @ sp.diags_array(cov) @ unit.T
        else:
            # Sigma U^T, formed as (U Sigma)^T since Sigma is symmetric; U stays sparse
            gram = unit @ np.asarray(unit @ cov).T
        gram = gram.toarray() if sp.issparse(gram) else np.asarray(gram)
        gram = 0.5 * (gram + gram.T)
    return gram, factor


def _objective(cb: Codebook, criterion: str, cov: np.ndarray | None) -> _Objective:
    weights = np.asarray(cb.weights, dtype=np.int64)
    gram, factor = _unit_gram(cb, cov)
    if criterion == "logdet":
        kernel = gram
        kernel /= _defaults.DEFAULT_NOISE**2
        kernel[np.diag_indices_from(kernel)] += 1.0
        if factor is not None:
            factor = factor / _defaults.DEFAULT_NOISE
        return _Objective(criterion, weights, "logdet", kernel=kernel, factor=factor)
    pair = correlations_from_gram(gram, in_place=True)
    if criterion == "coherence":
        reduce = "max"
        np.abs(pair, out=pair)
    elif criterion == "frame_potential":
        reduce = "sum"
        np.square(pair, out=pair)
        pair *= 2.0  # ordered pairs, as metrics.frame_potential
    else:
        reduce = "sum"
        np.abs(pair, out=pair)
        proportional = pair >= 1.0 - _config.PROPORTIONAL_ATOL
        pair[proportional] = 0.0
        np.square(pair, out=pair)
        np.negative(pair, out=pair)
        np.log1p(pair, out=pair)
        pair *= -0.5
        pair[proportional] = np.inf
    np.fill_diagonal(pair, 0.0)
    return _Objective(criterion, weights, reduce, pair=pair)


def _tol(value: float) -> float:
    return _config.TIE_ATOL + _config.TIE_RTOL * abs(value)


def _subset_loss(obj: _Objective, subset: np.ndarray) -> float:
    """The loss of one subset, computed directly."""
    if obj.reduce == "logdet":
        _, logdet = np.linalg.slogdet(obj.kernel[np.ix_(subset, subset)])
        return -0.5 * float(logdet)
    iu, ju = np.triu_indices(subset.size, k=1)
    if iu.size == 0:
        return 0.0
    vals = obj.pair[subset[iu], subset[ju]]
    return float(vals.max() if obj.reduce == "max" else vals.sum())


# ---------------------------------------------------------------------- tie-breaking
def _pick(losses: np.ndarray, sets: np.ndarray, set_weights: np.ndarray, complement: bool = False) -> int:
    """Row of the best candidate: least loss (within the tie tolerance), then least total
    weight, then the lexicographically first sorted index tuple.

    With ``complement`` the rows of ``sets`` are the *excluded* indices and ``set_weights``
    still the weights of the kept sets: for equal-size sets, the kept set is lexicographically
    first exactly when its complement is lexicographically last.
    """
    best = float(losses.min())
    alive = np.flatnonzero(losses <= best + _tol(best))  # all of them when best is inf
    w = set_weights[alive]
    alive = alive[w == w.min()]
    rows = sets[alive]
    if complement:
        rows = -rows
    order = np.lexsort(rows.T[::-1])  # lexsort: last key is primary
    return int(alive[order[0]])


def _lexmin(keys: list[np.ndarray]) -> int:
    """Position of the lexicographically least entry of parallel keys; float keys compare
    with the tie tolerance, integer keys exactly, the position breaks remaining ties."""
    alive = None
    for key in keys:
        vals = key if alive is None else key[alive]
        best = vals.min()
        slack = _tol(float(best)) if key.dtype.kind == "f" else 0
        hits = np.flatnonzero(vals <= best + slack)
        alive = hits if alive is None else alive[hits]
        if alive.size == 1:
            break
    return int(alive[0])


def _better(new: tuple, cur: tuple) -> bool:
    """Lexicographic ``new < cur``, float levels with the tie tolerance."""
    for a, b in zip(new, cur):
        if a == b:
            continue
        if isinstance(a, (int, np.integer)) or math.isinf(a) or math.isinf(b):
            return bool(a < b)
        slack = _tol(float(b))
        if a < b - slack:
            return True
        if a > b + slack:
            return False
    return False


# ---------------------------------------------------------------------- exhaustive search
def _combination_batches(n: int, r: int, batch: int) -> Iterator[np.ndarray]:
    combos = itertools.combinations(range(n), r)
    while True:
        flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, batch)), dtype=np.int64)
        if flat.size == 0:
            return
        yield flat.reshape(-1, r)


def _exhaustive(obj: _Objective, k: int) -> np.ndarray:
    """Exact optimum over all ``C(N, k)`` subsets, with the documented tie-breaking."""
    n = obj.n
    m = n - k
    per_subset = k**3 if obj.reduce == "logdet" else k * k
    direct = k <= m or math.comb(n, k) * per_subset <= _DIRECT_BUDGET
    r = k if direct else m
    batch = max(1, _BATCH_ENTRIES // max(1, per_subset if direct else n * (m + 1)))
    evaluate = _direct_losses if direct else _complement_losses
    state = None if direct else _complement_state(obj, m)
    sets_parts, loss_parts = [], []
    for sets in _combination_batches(n, r, batch):
        sets_parts.append(sets)
        loss_parts.append(evaluate(obj, sets, state))
    sets = np.concatenate(sets_parts)
    losses = np.concatenate(loss_parts)
    w_sets = obj.weights[sets].sum(axis=1)
    if direct:
        return sets[_pick(losses, sets, w_sets)]
    row = _pick(losses, sets, int(obj.weights.sum()) - w_sets, complement=True)
    keep = np.ones(n, dtype=bool)
    keep[sets[row]] = False
    return np.flatnonzero(keep)


def _direct_losses(obj: _Objective, sets: np.ndarray, state: Any = None) -> np.ndarray:
    k = sets.shape[1]
    if obj.reduce == "logdet":
        sub = obj.kernel[sets[:, :, None], sets[:, None, :]]
        return -0.5 * np.linalg.slogdet(sub)[1]
    iu, ju = np.triu_indices(k, k=1)
    if iu.size == 0:
        return np.zeros(sets.shape[0])
    vals = obj.pair[sets[:, iu], sets[:, ju]]
    return vals.max(axis=1) if obj.reduce == "max" else vals.sum(axis=1)


def _complement_state(obj: _Objective, m: int) -> dict[str, Any]:
    """Precomputation for evaluating ``loss(all \\ T)`` from the small excluded set ``T``.

    Sums are evaluated as ``total - rows(T) + pairs(T)``, so they carry rounding of order
    ``eps * total``; the exhaustive search takes this path only when evaluating every
    subset directly would cost too much.
    """
    if obj.reduce == "logdet":
        # Jacobi: det L[S, S] = det L * det (L^-1)[T, T]
        logdet, inverse = _kernel_logdet_inverse(obj)
        return {"logdet": logdet, "inverse": inverse}
    if obj.reduce == "max":
        # each row's m + 1 largest entries, in decreasing order: excluding the m columns of
        # T leaves the row's max among them (m is small whenever N is large)
        work = obj.pair.copy()
        np.fill_diagonal(work, -np.inf)
        rows = np.arange(obj.n)
        cols = np.empty((obj.n, m + 1), dtype=np.int64)
        vals = np.empty((obj.n, m + 1))
        for t in range(m + 1):
            cols[:, t] = np.argmax(work, axis=1)
            vals[:, t] = work[rows, cols[:, t]]
            work[rows, cols[:, t]] = -np.inf
        return {"top_cols": cols, "top_vals": vals}
    # sums: infinite (proportional) pairs are counted apart so that no inf - inf arises
    infinite = np.isinf(obj.pair)
    has_inf = bool(infinite.any())
    finite = np.where(infinite, 0.0, obj.pair) if has_inf else obj.pair
    count = infinite.astype(np.float64) if has_inf else None
    state = {"finite": finite, "finite_rows": finite.sum(axis=1), "count": count}
    state["finite_total"] = 0.5 * float(state["finite_rows"].sum())
    if has_inf:
        state["count_rows"] = count.sum(axis=1)
        state["count_total"] = 0.5 * float(state["count_rows"].sum())
    return state


def _kernel_logdet_inverse(obj: _Objective) -> tuple[float, np.ndarray]:
    """``log det L`` and ``L^-1`` for the PD kernel ``L`` (eigenvalues >= 1)."""
    n = obj.n
    factor = obj.factor
    if factor is not None and 2 * factor.shape[1] < n:
        # low rank (Woodbury): L^-1 = I - F (I + F^T F)^-1 F^T, det L = det(I + F^T F)
        small = np.eye(factor.shape[1]) + factor.T @ factor
        chol = np.linalg.cholesky(small)
        half = np.linalg.solve(chol, factor.T)  # chol^-1 F^T
        inverse = half.T @ half  # syrk: exactly symmetric
        np.negative(inverse, out=inverse)
        inverse[np.diag_indices(n)] += 1.0
        return 2.0 * float(np.log(np.diag(chol)).sum()), inverse
    chol, info = lapack.dpotrf(obj.kernel, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("log-det kernel is not positive definite")
    inverse, info = lapack.dpotri(chol, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("log-det kernel is singular")
    lower = np.tril(inverse)
    return 2.0 * float(np.log(np.diag(chol)).sum()), lower + np.tril(lower, -1).T


def _complement_losses(obj: _Objective, excluded: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    b, m = excluded.shape
    if obj.reduce == "logdet":
        sub = state["inverse"][excluded[:, :, None], excluded[:, None, :]]
        return -0.5 * (state["logdet"] + np.linalg.slogdet(sub)[1])
    if obj.reduce == "max":
        n = obj.n
        is_out = np.zeros((b, n), dtype=bool)
        is_out[np.arange(b)[:, None], excluded] = True
        usable = ~is_out[:, state["top_cols"]]  # (b, n, m + 1)
        first = np.argmax(usable, axis=2)
        row_max = state["top_vals"][np.arange(n)[None, :], first]
        row_max[is_out] = -np.inf
        return row_max.max(axis=1)
    iu, ju = np.triu_indices(m, k=1)
    finite = state["finite_total"] - state["finite_rows"][excluded].sum(axis=1)
    if iu.size:
        finite = finite + state["finite"][excluded[:, iu], excluded[:, ju]].sum(axis=1)
    if state["count"] is None:
        return finite
    count = state["count_total"] - state["count_rows"][excluded].sum(axis=1)
    if iu.size:
        count = count + state["count"][excluded[:, iu], excluded[:, ju]].sum(axis=1)
    return np.where(count > 0.5, np.inf, finite)


# ---------------------------------------------------------------------- heuristic search
def _heuristic(obj: _Objective, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy, then best-improvement swaps; plus seeded random restarts of the swaps."""
    if obj.reduce == "logdet":
        starts = [_logdet_greedy(obj, k)]
        search = _logdet_swaps
    else:
        terms = _pairwise_terms(obj)
        starts = [_pairwise_greedy(obj, k, terms)]
        search = functools.partial(_pairwise_swaps, terms=terms)
    starts += [np.sort(rng.choice(obj.n, size=k, replace=False)) for _ in range(_config.COMPRESS_RESTARTS)]
    found = np.array([search(obj, start, _config.MAX_SWAPS) for start in starts])
    losses = np.array([_subset_loss(obj, s) for s in found])
    return found[_pick(losses, found, obj.weights[found].sum(axis=1))]


def _pairwise_terms(obj: _Objective) -> tuple[np.ndarray, np.ndarray | None]:
    """Primary and secondary pair matrices of the lexicographic search objective.

    Coherence: (max |rho|, sum |rho|^p) -- the smooth sum moves the search across plateaus
    of the max. Mutual information: (number of proportional pairs, sum of the finite
    costs), so that no inf - inf arises in swap deltas. Frame potential: the sum alone.
    """
    if obj.criterion == "coherence":
        return obj.pair, obj.pair**_SMOOTH_POWER
    if obj.criterion == "mutual_information":
        infinite = np.isinf(obj.pair)
        return infinite.astype(np.float64), np.where(infinite, 0.0, obj.pair)
    return obj.pair, None


def _pairwise_greedy(obj: _Objective, k: int, terms: tuple | None = None) -> np.ndarray:
    """Start from the best pair; add the codeword that raises the objective least."""
    prim, sec = _pairwise_terms(obj) if terms is None else terms
    is_max = obj.reduce == "max"
    chosen = list(_best_pair(prim, sec, obj.weights))
    prim_acc = np.maximum(prim[:, chosen[0]], prim[:, chosen[1]]) if is_max else prim[:, chosen].sum(axis=1)
    sec_acc = sec[:, chosen].sum(axis=1) if sec is not None else None
    cur_prim = float(prim[chosen[0], chosen[1]])
    cur_sec = float(sec[chosen[0], chosen[1]]) if sec is not None else 0.0
    free = np.ones(obj.n, dtype=bool)
    free[chosen] = False
    while len(chosen) < k:
        cand = np.flatnonzero(free)
        new_prim = np.maximum(cur_prim, prim_acc[cand]) if is_max else cur_prim + prim_acc[cand]
        keys = [new_prim]
        if sec_acc is not None:
            keys.append(cur_sec + sec_acc[cand])
        keys.append(obj.weights[cand])
        pos = _lexmin(keys)
        c = int(cand[pos])
        cur_prim = float(new_prim[pos])
        if sec_acc is not None:
            cur_sec = float(keys[1][pos])
            sec_acc += sec[:, c]
        prim_acc = np.maximum(prim_acc, prim[:, c]) if is_max else prim_acc + prim[:, c]
        chosen.append(c)
        free[c] = False
    return np.sort(np.array(chosen, dtype=np.int64))


def _best_pair(prim: np.ndarray, sec: np.ndarray | None, weights: np.ndarray) -> tuple[int, int]:
    """Lexicographically best pair ``i < j`` (primary, secondary, weight, position), found
    in row chunks so that no ``N^2`` index arrays are formed."""
    n = prim.shape[0]
    rows = max(1, _BATCH_ENTRIES // n)
    cols = np.arange(n)

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        for r0 in range(0, n - 1, rows):
            r1 = min(n - 1, r0 + rows)
            yield r0, cols[None, :] > np.arange(r0, r1)[:, None]

    # successive passes narrow the candidates level by level, as _lexmin does
    levels = [prim] + ([sec] if sec is not None else [])
    bounds: list[float] = []

    def admissible(r0: int, upper: np.ndarray) -> np.ndarray:
        ok = upper.copy()
        for level, bound in zip(levels, bounds):
            ok &= level[r0 : r0 + upper.shape[0]] <= bound
        return ok

    for level in levels:
        best = math.inf
        for r0, upper in chunks():
            ok = admissible(r0, upper)
            if ok.any():
                best = min(best, float(level[r0 : r0 + upper.shape[0]][ok].min()))
        bounds.append(best + _tol(best))
    best_w, best_pair = None, None
    for r0, upper in chunks():
        ok = admissible(r0, upper)
        if not ok.any():
            continue
        wsum = weights[r0 : r0 + upper.shape[0], None] + weights[None, :]
        wsum = np.where(ok, wsum, np.iinfo(np.int64).max)
        flat = int(np.argmin(wsum))
        if best_w is None or wsum.flat[flat] < best_w:
            best_w = int(wsum.flat[flat])
            best_pair = (r0 + flat // n, flat % n)
    return best_pair


def _pairwise_swaps(obj: _Objective, start: np.ndarray, max_swaps: int, terms: tuple | None = None) -> np.ndarray:
    """Best-improvement swaps for a pairwise objective (lexicographic: primary, secondary,
    total weight).

    The outsider-by-member blocks of the pair matrices are kept and patched after each
    swap (one row and one column, O(N)); evaluating all ``k (N - k)`` swaps is then plain
    arithmetic on them: a sum changes by ``r_o - r_i - c_oi`` with ``r`` the row sums
    against the current set.
    """
    prim, sec = _pairwise_terms(obj) if terms is None else terms
    is_max = obj.reduce == "max"
    w = obj.weights
    # positional state: members[p], outside[q]; blocks indexed [q, p]
    members = np.array(start, dtype=np.int64)
    outside = np.setdiff1d(np.arange(obj.n), members)
    cross = prim[np.ix_(outside, members)]
    cross2 = sec[np.ix_(outside, members)] if sec is not None else None
    inner = None
    if is_max:
        inner = prim[np.ix_(members, members)]
        np.fill_diagonal(inner, -np.inf)
    prim_rows = None if is_max else prim[:, members].sum(axis=1)
    sec_rows = sec[:, members].sum(axis=1) if sec is not None else None
    cur_prim = _pair_reduce(prim, members, is_max)
    cur_sec = _pair_reduce(sec, members, False) if sec is not None else 0.0
    cur_w = int(w[members].sum())
    k = members.size
    for _ in range(max_swaps):
        if is_max:
            new_prim = _max_after_swap(inner, cross)
        else:
            new_prim = cur_prim + prim_rows[outside][:, None] - prim_rows[members][None, :] - cross
        keys = [new_prim.ravel()]
        if sec is not None:
            new_sec = cur_sec + sec_rows[outside][:, None] - sec_rows[members][None, :] - cross2
            keys.append(new_sec.ravel())
        keys.append((cur_w + w[outside][:, None] - w[members][None, :]).ravel())
        flat = _lexmin(keys)
        cand = tuple(key[flat].item() for key in keys)
        current = (cur_prim,) + ((cur_sec,) if sec is not None else ()) + (cur_w,)
        if not _better(cand, current):
            break
        q, p = divmod(flat, k)
        i, o = int(members[p]), int(outside[q])
        members[p], outside[q] = o, i
        cur_prim, cur_w = float(cand[0]), int(cand[-1])
        cross[q, :] = prim[i, members]
        cross[:, p] = prim[outside, o]
        if is_max:
            inner[p, :] = prim[o, members]
            inner[:, p] = prim[members, o]
            inner[p, p] = -np.inf
        else:
            prim_rows += prim[:, o] - prim[:, i]
        if sec is not None:
            cur_sec = float(cand[1])
            sec_rows += sec[:, o] - sec[:, i]
            cross2[q, :] = sec[i, members]
            cross2[:, p] = sec[outside, o]
    return np.sort(members)


def _pair_reduce(mat: np.ndarray, subset: np.ndarray, is_max: bool) -> float:
    iu, ju = np.triu_indices(subset.size, k=1)
    vals = mat[subset[iu], subset[ju]]
    return float(vals.max() if is_max else vals.sum())


def _max_after_swap(inner: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """``max`` over pairs of ``S - {i} + {o}`` for every outsider ``o`` (rows) and member
    ``i`` (columns), from ``inner`` (members x members, diagonal -inf) and ``cross``
    (outsiders x members)."""
    k = inner.shape[0]
    best_col, best_val, second_val = _top_two(inner)
    # without i the max is the top pair's unless i is one of its two ends
    a = int(np.argmax(best_val))
    without = np.full(k, best_val[a])
    for p in (a, int(best_col[a])):
        rows = np.where(best_col == p, second_val, best_val)
        rows[p] = -np.inf
        without[p] = rows.max()
    # o's largest cost to the members other than i: its top one unless that is i
    first, top1, top2 = _top_two(cross)
    to_new = np.where(first[:, None] == np.arange(k)[None, :], top2[:, None], top1[:, None])
    return np.maximum(without[None, :], to_new)


def _top_two(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: position of the largest entry, the largest, and the largest elsewhere."""
    rows = np.arange(mat.shape[0])
    first = np.argmax(mat, axis=1)
    top1 = mat[rows, first]
    mat[rows, first] = -np.inf  # hide the top entry for a moment, then put it back
    second = mat.max(axis=1)
    mat[rows, first] = top1
    return first, top1, second


def _logdet_greedy(obj: _Objective, k: int) -> np.ndarray:
    """Fast greedy MAP for the kernel ``L = I + K / noise^2`` (Chen, Zhang & Zhou 2018):
    incremental Cholesky rows ``c`` and Schur complements ``d2``, O(N k) per step."""
    kernel = obj.kernel
    n = obj.n
    rows = np.zeros((k, n))
    d2 = np.diag(kernel).copy()  # Schur complements; >= 1 because L >= I
    free = np.ones(n, dtype=bool)
    chosen: list[int] = []
    for t in range(k):
        cand = np.flatnonzero(free)
        pos = _lexmin([-0.5 * np.log(d2[cand]), obj.weights[cand]])
        j = int(cand[pos])
        e = (kernel[j] - rows[:t, j] @ rows[:t]) / math.sqrt(d2[j])
        rows[t] = e
        d2 = d2 - e**2
        free[j] = False
        chosen.append(j)
    return np.sort(np.array(chosen, dtype=np.int64))


def _logdet_state(kernel: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inv = np.linalg.inv(kernel[np.ix_(members, members)])
    return inv, inv @ kernel[members]


def _logdet_swaps(obj: _Objective, start: np.ndarray, max_swaps: int) -> np.ndarray:
    """Best-improvement swaps for the log-det, lexicographic with total weight.

    With ``B = L[S, S]^-1`` and ``X = B L[S, :]``, swapping member ``i`` for outsider ``o``
    multiplies ``det L[S, S]`` by ``s_o B_ii + X_io^2``, where ``s_o = L_oo - L[o, S] X[:, o]``.
    ``B`` and ``X`` follow each swap by a rank-two update (O(k N)) and are recomputed every
    few swaps to stop rounding drift.
    """
    kernel, w = obj.kernel, obj.weights
    members = np.array(start, dtype=np.int64)  # positional: row p of B, X, rows
    diag = np.diag(kernel)
    cur_w = int(w[members].sum())
    for step in range(max_swaps):
        if step % _REFRESH == 0:
            inv, proj = _logdet_state(kernel, members)
            rows = kernel[members]
            cur_loss = _subset_loss(obj, np.sort(members))
        schur = diag - np.einsum("kn,kn->n", rows, proj)
        ratio = np.diag(inv)[:, None] * schur[None, :] + proj**2
        np.clip(ratio, np.finfo(float).tiny, None, out=ratio)
        new_loss = cur_loss - 0.5 * np.log(ratio)
        new_loss[:, members] = np.inf  # only outsiders can come in
        new_w = cur_w - w[members][:, None] + w[None, :]
        keys = [new_loss.ravel(), new_w.ravel()]
        flat = _lexmin(keys)
        cand = (float(keys[0][flat]), int(keys[1][flat]))
        if not _better(cand, (cur_loss, cur_w)):
            break
        p, o = divmod(flat, obj.n)
        inv = _logdet_swap_update(kernel, inv, proj, rows[:, o], p, o)
        members[p] = o
        rows[p] = kernel[o]
        cur_loss, cur_w = cand
    return np.sort(members)


def _logdet_swap_update(kernel: np.ndarray, inv: np.ndarray, proj: np.ndarray, u: np.ndarray, p: int, o: int) -> np.ndarray:
    """Put outsider ``o`` at position ``p``: add it (bordered inverse), then remove the old
    member at ``p`` (Schur complement). Updates ``proj`` in place, returns the new ``B``.

    ``u = L[S, o]``; ``X = B L[S, :]``; with ``x = X[:, o]``, ``s = L_oo - u.x`` and
    ``g = (L[o, :] - u^T X) / s`` the bordered ``X`` is ``[X - x g; g]``.
    """
    k = inv.shape[0]
    x = proj[:, o].copy()
    s = kernel[o, o] - u @ x
    g = (kernel[o] - u @ proj) / s
    grown = np.empty((k + 1, k + 1))
    grown[:k, :k] = inv + np.outer(x, x) / s
    grown[:k, k] = grown[k, :k] = -x / s
    grown[k, k] = 1.0 / s
    b = grown[:, p].copy()
    bpp = b[p]
    coef = b[:k] / bpp
    coef[p] = 0.0
    old_row = proj[p].copy()
    # rows j != p: X_j - x_j g - coef_j (X_p - x_p g), one rank-two update
    left = np.stack([x - coef * x[p], coef], axis=1)
    proj -= left @ np.stack([g, old_row])
    proj[p] = g * (1.0 + b[k] * x[p] / bpp) - (b[k] / bpp) * old_row
    order = np.arange(k)
    order[p] = k  # o takes the removed member's position
    return (grown - np.outer(b, b) / bpp)[np.ix_(order, order)]
