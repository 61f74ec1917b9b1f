"""How much information codewords carry, and how much they share.

All pairwise metrics treat codewords as lines: they use the correlation
``rho_ij = <v_i, v_j> / (|v_i| |v_j|)``, so scaling a codeword changes nothing. Codewords in
different blocks of a partition are orthogonal, so block codebooks are measured block by
block (a tiled pattern once).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from lwpd import _config, _defaults
from lwpd._validation import (
    as_rng,
    as_covariance,
    as_index_array,
    check_fraction,
    check_int,
    check_real,
)
from lwpd.codebook import Codebook, check_codebook

__all__ = [
    "coherence",
    "welch_bound",
    "min_angle",
    "frame_potential",
    "mutual_information",
    "logdet_information",
    "captured_energy",
    "summary",
]


def _expanded_blocks(cb: Codebook) -> Iterator[tuple[int, np.ndarray, int]]:
    """``(block, dense_rows, multiplicity)`` with every tiled block yielded on its own."""
    for beta, _, rows, mult in cb.internals.distinct_blocks():
        if mult == 1:
            yield beta, rows, 1
        else:
            for k in range(mult):
                yield beta + k, rows, 1


def _correlations(cb: Codebook, covariance: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Correlation matrices of groups of codewords that may correlate, with multiplicities.

    Without a covariance (or with a diagonal one) only codewords of one block correlate;
    a full covariance couples blocks, so all codewords form one group.
    """
    if covariance is not None and covariance.ndim == 2:
        dense = cb.to_dense().astype(np.float64)
        yield correlations_from_gram(dense @ covariance @ dense.T, in_place=True), 1
        return
    for rows, mult in _whitened_blocks(cb, covariance):
        yield correlations_from_gram(rows @ rows.T, in_place=True), mult


def _whitened_blocks(cb: Codebook, variances: np.ndarray | None) -> Iterator[tuple[np.ndarray, int]]:
    """``(rows, multiplicity)`` per block, each block's columns scaled by the square roots of
    a diagonal prior's variances (``None``: the identity, so a tiled pattern is yielded once)."""
    if variances is None:
        for _, _, rows, mult in cb.internals.distinct_blocks():
            yield rows.astype(np.float64), mult
        return
    offsets = cb.blocks.offsets
    for beta, rows, _ in _expanded_blocks(cb):
        yield rows.astype(np.float64) * np.sqrt(variances[offsets[beta] : offsets[beta + 1]]), 1


def correlations_from_gram(gram: np.ndarray, in_place: bool = False) -> np.ndarray:
    """The correlations ``G_ij / sqrt(G_ii G_jj)`` of a Gram matrix, clipped to ``[-1, 1]``,
    with a unit diagonal; a codeword of zero (prior) variance carries nothing, so its row and
    column are 0 off the diagonal. The one normalisation of the metrics and of
    :func:`lwpd.compress` (package-internal).

    ``in_place``: overwrite ``gram`` (at N = 8192 every fresh N x N temporary costs about a
    second).
    """
    d = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    dead = d == 0
    d[dead] = 1.0
    rho = gram if in_place else gram.astype(np.float64, copy=True)
    rho /= d[:, None]
    rho /= d[None, :]
    rho[dead, :] = 0.0
    rho[:, dead] = 0.0
    np.clip(rho, -1.0, 1.0, out=rho)
    np.fill_diagonal(rho, 1.0)
    return rho


def _off_diagonal(rho: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(rho.shape[0], k=1)
    return rho[iu]


def coherence(cb: Codebook) -> float:
    """Largest absolute correlation between two distinct codewords, ``max_{i != j} |rho_ij|``.

    0 for a single codeword or mutually orthogonal codewords; 1 when two are proportional.

    Parameters
    ----------
    cb : Codebook

    Returns
    -------
    float
        In ``[0, 1]``; never below :func:`welch_bound` ``(N, n)``.

    Examples
    --------
    >>> from lwpd import coherence, projective_codebook
    >>> round(coherence(projective_codebook(2)), 6)     # 4 lines 45 degrees apart
    0.707107
    """
    check_codebook("cb", cb)
    worst = 0.0
    for rho, _ in _correlations(cb):
        off = _off_diagonal(rho)
        if off.size:
            worst = max(worst, float(np.abs(off).max()))
    return worst


def welch_bound(n_codewords: int, dim: int) -> float:
    """Lower bound on the coherence of ``n_codewords`` lines in ``R^dim``.

    ``sqrt((N - d) / (d (N - 1)))`` for ``N > d``, and 0 otherwise (an orthonormal set).
    Equiangular tight frames (the simplex, for example) attain it.

    Parameters
    ----------
    n_codewords : int
        Number of lines ``N`` (>= 1).
    dim : int
        Dimension ``d`` (>= 1).

    Returns
    -------
    float

    Examples
    --------
    >>> from lwpd import welch_bound
    >>> welch_bound(4, 3)    # the simplex: 1/3
    0.3333333333333333
    """
    n = check_int("n_codewords", n_codewords, minimum=1)
    d = check_int("dim", dim, minimum=1)
    if n <= d:
        return 0.0
    return math.sqrt((n - d) / (d * (n - 1)))


def min_angle(cb: Codebook) -> float:
    """Smallest angle between two codeword lines, in degrees: ``arccos(coherence)``.

    Parameters
    ----------
    cb : Codebook

    Returns
    -------
    float
        In ``[0, 90]``.

    Examples
    --------
    >>> from lwpd import min_angle, projective_codebook
    >>> round(min_angle(projective_codebook(2)), 6)
    45.0
    """
    return math.degrees(math.acos(min(coherence(cb), 1.0)))


def frame_potential(cb: Codebook) -> float:
    """Frame potential ``sum_{i != j} rho_ij^2`` over ordered pairs of distinct codewords.

    Lower is better spread; ``N^2/d - N`` is the minimum for ``N >= d`` unit vectors
    (attained by tight frames).

    Parameters
    ----------
    cb : Codebook

    Returns
    -------
    float

    Examples
    --------
    >>> from lwpd import frame_potential, identity_codebook
    >>> frame_potential(identity_codebook(4))
    0.0
    """
    check_codebook("cb", cb)
    total = 0.0
    for rho, mult in _correlations(cb):
        total += mult * 2.0 * float(np.sum(_off_diagonal(rho) ** 2))
    return total


def mutual_information(cb: Codebook, covariance: Any = None) -> float:
    """Information the codewords share: ``sum_{i < j} -1/2 log(1 - rho_ij^2)`` in nats.

    For a Gaussian gradient ``g ~ N(0, Sigma)``, ``-1/2 log(1 - rho_ij^2)`` is the mutual
    information between the results ``<g, v_i>`` and ``<g, v_j>``, with
    ``rho_ij = v_i^T Sigma v_j / sqrt(v_i^T Sigma v_i  v_j^T Sigma v_j)``. Each unordered pair
    counts once; proportional codewords share infinite information.

    Parameters
    ----------
    cb : Codebook
    covariance : array_like, optional
        Gradient prior covariance: ``None`` (identity), variances of shape ``(n,)``, or a
        PSD matrix of shape ``(n, n)``.

    Examples
    --------
    >>> from lwpd import mutual_information, simplex_codebook
    >>> round(mutual_information(simplex_codebook(2)), 6)   # 3 pairs at rho = -1/2
    0.431523
    """
    check_codebook("cb", cb)
    cov = as_covariance(covariance, cb.dim)
    total = 0.0
    for rho, mult in _correlations(cb, cov):
        r2 = _off_diagonal(rho) ** 2
        if (r2 >= 1.0 - _config.PROPORTIONAL_ATOL).any():
            return math.inf
        total += mult * float(-0.5 * np.sum(np.log1p(-r2)))
    return total


def _sym_logdet(mat: np.ndarray) -> float:
    sign, value = np.linalg.slogdet(mat)
    return float(value)


def logdet_information(cb: Codebook, noise: float = _defaults.DEFAULT_NOISE, covariance: Any = None) -> float:
    """Information the results carry about the gradient, in nats.

    ``1/2 log det(I + noise^-2 V Sigma V^T)``: the mutual information between a Gaussian
    gradient ``g ~ N(0, Sigma)`` and all results ``V g + noise * e``. It uses the codewords as
    stored (scale matters here: a longer codeword is a higher signal-to-noise measurement).

    Parameters
    ----------
    cb : Codebook
    noise : float, default 1.0
        Standard deviation of the measurement noise (> 0).
    covariance : array_like, optional
        ``None`` (identity), variances of shape ``(n,)``, or a PSD ``(n, n)`` matrix.

    Examples
    --------
    >>> import math
    >>> from lwpd import identity_codebook, logdet_information
    >>> logdet_information(identity_codebook(3)) == 1.5 * math.log(2)
    True
    """
    check_codebook("cb", cb)
    noise = check_real("noise", noise, positive=True)
    cov = as_covariance(covariance, cb.dim)
    inv_var = noise**-2
    if cov is not None and cov.ndim == 2:
        dense = cb.to_dense().astype(np.float64)
        if dense.shape[0] <= dense.shape[1]:
            inner = np.eye(dense.shape[0]) + inv_var * dense @ cov @ dense.T
        else:
            # Sylvester: det(I_N + V Sigma V^T) = det(I_n + Sigma V^T V); factor Sigma symmetrically
            w, u = np.linalg.eigh(cov)
            half = u * np.sqrt(np.clip(w, 0.0, None))
            inner = np.eye(dense.shape[1]) + inv_var * half.T @ (dense.T @ dense) @ half
        return 0.5 * _sym_logdet(inner)
    total = 0.0
    for rows, mult in _whitened_blocks(cb, cov):
        inner = np.eye(rows.shape[1]) + inv_var * rows.T @ rows
        total += mult * 0.5 * _sym_logdet(inner)
    return total


def _captured_traces(rows: np.ndarray, masks: np.ndarray, sigma: np.ndarray | None) -> np.ndarray:
    """``tr(P_S Sigma)`` for each mask (``S``: the unmasked rows of ``rows``), batched.

    ``rows`` is ``(m, b)``, ``masks`` ``(S, m)`` boolean, ``sigma`` ``(S, b, b)`` or None
    (identity: the trace is the rank).
    """
    stacked = rows[None, :, :] * masks[:, :, None]
    _, s, vt = np.linalg.svd(stacked, full_matrices=False)
    top = s[:, :1]
    kept = s**2 > _config.RANK_RTOL * np.where(top > 0, top, 1.0) ** 2
    kept &= s > 0
    if sigma is None:
        return kept.sum(axis=1).astype(np.float64)
    quad = np.einsum("sib,sbc,sic->si", vt, sigma, vt)
    return (quad * kept).sum(axis=1)


def captured_energy(
    cb: Codebook,
    received: Any = None,
    erasure_prob: float | None = None,
    covariance: Any = None,
    n_samples: int = _defaults.DEFAULT_ENERGY_SAMPLES,
    seed: int | np.random.Generator | None = None,
) -> float:
    """Fraction of the gradient's energy that the received codewords capture.

    ``E ||P_S g||^2 / E ||g||^2 = tr(P_S Sigma) / tr(Sigma)`` for a gradient prior
    ``g ~ N(0, Sigma)``, where ``P_S`` projects onto the span of the received codewords (the
    projection decoder's output is ``P_S g``). Exact for a given received set; under a
    straggler model where each codeword is erased independently with probability
    ``erasure_prob``, a seeded Monte Carlo average over ``n_samples`` erasure patterns.

    Parameters
    ----------
    cb : Codebook
    received : array_like of int, optional
        Indices of the received codewords. ``None`` (and no ``erasure_prob``): all of them.
    erasure_prob : float, optional
        Independent erasure probability in ``[0, 1]``; cannot be combined with ``received``.
    covariance : array_like, optional
        Only the diagonal blocks (per partition block) matter; ``None`` is the identity.
    n_samples : int, default 256
        Monte Carlo erasure patterns (per distinct block pattern).
    seed : int or numpy.random.Generator, optional
        Seed of the erasure patterns.

    Returns
    -------
    float
        In ``[0, 1]``.

    Examples
    --------
    >>> from lwpd import captured_energy, projective_codebook
    >>> cb = projective_codebook(3)
    >>> captured_energy(cb, received=[0, 1])
    0.6666666666666666
    >>> captured_energy(cb, erasure_prob=0.0)
    1.0
    """
    check_codebook("cb", cb)
    cov = as_covariance(covariance, cb.dim)
    if received is not None and erasure_prob is not None:
        raise ValueError("give either received (an exact set) or erasure_prob (a straggler model), not both")
    offsets = cb.blocks.offsets
    total_var = float(cb.dim) if cov is None else float(np.trace(cov) if cov.ndim == 2 else cov.sum())
    if total_var <= 0:
        raise ValueError("covariance must have a positive trace")

    def block_sigma(betas: np.ndarray, b: int) -> np.ndarray | None:
        if cov is None:
            return None
        out = np.empty((betas.size, b, b))
        for k, beta in enumerate(betas):
            sl = slice(offsets[beta], offsets[beta + 1])
            out[k] = cov[sl, sl] if cov.ndim == 2 else np.diag(cov[sl])
        return out

    if erasure_prob is None:
        mask = np.ones(cb.n_codewords, dtype=bool)
        if received is not None:
            mask[:] = False
            mask[as_index_array("received", received, cb.n_codewords)] = True
        captured = 0.0
        for beta, idx, rows, mult in cb.internals.distinct_blocks():
            # a tiled pattern covers blocks beta .. beta+mult-1, codewords idx + k*len(idx)
            betas = beta + np.arange(mult)
            masks = mask[idx[None, :] + len(idx) * np.arange(mult)[:, None]]
            for lo in range(0, mult, 4096):
                sl = slice(lo, lo + 4096)
                captured += float(_captured_traces(rows, masks[sl], block_sigma(betas[sl], rows.shape[1])).sum())
        return captured / total_var

    p = check_fraction("erasure_prob", erasure_prob, zero=True)
    n_samples = check_int("n_samples", n_samples, minimum=1)
    rng = as_rng("seed", seed)
    captured = 0.0
    for beta, idx, rows, mult in cb.internals.distinct_blocks():
        if cov is None:
            # identical blocks under independent erasures: one pattern's expectation, times mult
            masks = rng.random((n_samples, len(idx))) >= p
            captured += mult * float(_captured_traces(rows, masks, None).mean())
            continue
        for k in range(mult):
            masks = rng.random((n_samples, len(idx))) >= p
            sigma = np.broadcast_to(block_sigma(np.array([beta + k]), rows.shape[1]), (n_samples,) + (rows.shape[1],) * 2)
            captured += float(_captured_traces(rows, masks, sigma).mean())
    return captured / total_var


def summary(cb: Codebook) -> dict[str, float]:
    """The metrics table printed by ``lwpd codebook``: count, max weight, coherence, Welch
    bound, minimum angle (degrees) and frame potential.

    Parameters
    ----------
    cb : Codebook

    Returns
    -------
    dict
        Keys ``n_codewords``, ``dim``, ``max_weight``, ``coherence``, ``welch_bound``,
        ``min_angle_deg``, ``frame_potential``.

    Examples
    --------
    >>> from lwpd import projective_codebook, summary
    >>> summary(projective_codebook(2))["min_angle_deg"]
    45.0
    """
    mu = coherence(cb)
    return {
        "n_codewords": cb.n_codewords,
        "dim": cb.dim,
        "max_weight": int(cb.weights.max()),
        "coherence": mu,
        "welch_bound": welch_bound(cb.n_codewords, cb.dim),
        "min_angle_deg": math.degrees(math.acos(min(mu, 1.0))),
        "frame_potential": frame_potential(cb),
    }
