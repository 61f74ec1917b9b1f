"""Codebook constructors: projective, block-tiled, identity, random, simplex, Hadamard, Grassmannian."""

from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from lwpd._compress import compress
from lwpd._validation import as_rng, check_choice, check_int, check_prime
from lwpd.codebook import Codebook, Partition, codebook_from_csr, leading_run, tiled_codebook

__all__ = [
    "projective_codebook",
    "projective_count",
    "block_codebook",
    "identity_codebook",
    "random_codebook",
    "simplex_codebook",
    "hadamard_codebook",
    "grassmannian_codebook",
]

#: Refuse to enumerate more projective points than this (memory), with advice.
MAX_PROJECTIVE_POINTS = 20_000_000


def projective_count(dim: int, q: int = 3, max_weight: int | None = None) -> int:
    """Number of points of PG(dim-1, q) with Hamming weight at most ``max_weight``.

    ``sum_{i=1..w} C(dim, i) (q-1)^(i-1)``; without a limit this is ``(q^dim - 1)/(q - 1)``.

    Parameters
    ----------
    dim : int
        Dimension of the vector space (>= 1).
    q : int, default 3
        Field size, a prime.
    max_weight : int, optional
        Count only points of Hamming weight at most this (>= 1).

    Returns
    -------
    int

    Examples
    --------
    >>> from lwpd import projective_count
    >>> projective_count(2), projective_count(3), projective_count(8, max_weight=2)
    (4, 13, 64)
    """
    dim = check_int("dim", dim, minimum=1)
    q = check_prime("q", q)
    w = dim if max_weight is None else min(check_int("max_weight", max_weight, minimum=1), dim)
    return _capped_count(dim, q, w, cap=None)


def _capped_count(dim: int, q: int, w: int, cap: int | None) -> int:
    """``sum_{i<=w} C(dim, i) (q-1)^(i-1)``, or ``cap + 1`` as soon as the sum exceeds ``cap``.

    The binomials are updated term by term, so a huge ``dim`` with a small cap stops early.
    """
    if w == dim and cap is None:
        return (q**dim - 1) // (q - 1)
    total, term = 0, dim  # term = C(dim, i) (q-1)^(i-1) for i = 1
    for i in range(1, w + 1):
        total += term
        if cap is not None and total > cap:
            return cap + 1
        term = term * (dim - i) // (i + 1) * (q - 1)
    return total


def _lift(values: np.ndarray, q: int) -> np.ndarray:
    """Balanced integer representatives of field elements 0..q-1 (q = 2 keeps {0, 1})."""
    if q == 2:
        return values.astype(np.float64)
    return np.where(values <= (q - 1) // 2, values, values - q).astype(np.float64)


def projective_codebook(dim: int, q: int = 3, max_weight: int | None = None, normalize: bool = True) -> Codebook:
    """All points of the projective space PG(dim-1, q), lifted to real codewords.

    A point is a nonzero vector of ``F_q^dim`` up to scalar multiples; its canonical
    representative has first nonzero coordinate 1. For odd q, entries are lifted to the
    balanced integers ``a if a <= (q-1)/2 else a - q`` (q = 3 gives entries in {0, +1, -1});
    for q = 2 the entries stay in {0, 1} (the formula's {0, -1} gives the same lines).
    Codewords are ordered by Hamming weight, then lexicographically by support (the tuple
    of nonzero positions), then by the tuple of field values; the weight-1 points come first
    and form the identity.

    Parameters
    ----------
    dim : int
        Dimension ``k`` of the vector space (>= 1); codewords live in ``R^dim``.
    q : int, default 3
        Field size, a prime.
    max_weight : int, optional
        Keep only points of Hamming weight at most this (>= 1): low weight keeps each task
        cheap and makes the code peelable.
    normalize : bool, default True
        Scale each codeword to unit norm (they are lines; the scale carries no information).

    Returns
    -------
    Codebook
        ``projective_count(dim, q, max_weight)`` codewords, no two proportional.

    Examples
    --------
    >>> from lwpd import projective_codebook
    >>> projective_codebook(2, normalize=False).to_dense().astype(int).tolist()
    [[1, 0], [0, 1], [1, 1], [1, -1]]
    >>> len(projective_codebook(3)), len(projective_codebook(8, max_weight=2))
    (13, 64)
    """
    dim = check_int("dim", dim, minimum=1)
    q = check_prime("q", q)
    if max_weight is not None:
        max_weight = check_int("max_weight", max_weight, minimum=1)
    w = dim if max_weight is None else min(max_weight, dim)
    total = _capped_count(dim, q, w, cap=MAX_PROJECTIVE_POINTS)
    if total > MAX_PROJECTIVE_POINTS:
        raise ValueError(
            f"PG({dim - 1}, {q}) with max_weight={max_weight} has more than {MAX_PROJECTIVE_POINTS:,} "
            "points; lower dim or max_weight, or tile a smaller base with block_codebook"
        )
    indices, data = [], []
    for weight in range(1, w + 1):
        supports = np.array(list(itertools.combinations(range(dim), weight)), dtype=np.int64)
        tail_list = list(itertools.product(range(1, q), repeat=weight - 1))
        tails = np.array(tail_list, dtype=np.int64).reshape(len(tail_list), weight - 1)
        values = np.concatenate([np.ones((tails.shape[0], 1), dtype=np.int64), tails], axis=1)
        # every support combined with every tuple of values: support-major order
        indices.append(np.repeat(supports, values.shape[0], axis=0))
        data.append(np.tile(_lift(values, q), (supports.shape[0], 1)))
    weights = np.repeat(np.arange(1, w + 1), [a.shape[0] for a in indices])
    indptr = np.concatenate([[0], np.cumsum(weights)])
    flat_idx = np.concatenate([a.reshape(-1) for a in indices])
    flat_dat = np.concatenate([a.reshape(-1) for a in data])
    if normalize:
        norms = np.sqrt(np.add.reduceat(flat_dat**2, indptr[:-1]))
        flat_dat = flat_dat / np.repeat(norms, weights)
    return codebook_from_csr(indptr, flat_idx, flat_dat, (total, dim))


def _restrict(base: Codebook, size: int) -> Codebook:
    """Codewords of ``base`` restricted to its first ``size`` coordinates, with zero rows and
    proportional duplicates (later ones) removed; unit-norm bases stay unit norm."""
    mat = base.to_scipy()[:, :size].tocsr()
    mat.eliminate_zeros()
    keep = np.flatnonzero(np.diff(mat.indptr) > 0)
    if keep.size == 0:
        raise ValueError(f"base has no codeword with support in its first {size} coordinates")
    mat = mat[keep]
    dense = mat.toarray()
    unit = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    first = unit[np.arange(unit.shape[0]), np.argmax(unit != 0, axis=1)]
    canonical = np.round(unit * np.sign(first)[:, None], 10) + 0.0
    _, first_seen = np.unique(canonical, axis=0, return_index=True)
    rows = np.sort(first_seen)
    dense = dense[rows]
    if np.allclose(base.internals.csr().row_norms(), 1.0):
        dense = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    return Codebook.from_dense(dense.astype(base.dtype))


def projective_block_base(size: int, *, q: int = 3, max_weight: int | None = None, keep: int | None = None,
                          criterion: str = "logdet") -> Codebook:
    """The block base the LWPD scheme, ``CodedOptimizer`` and the DDP hook tile: the
    projective codebook of ``PG(size - 1, q)`` with weight <= ``max_weight``, compressed to
    ``keep`` codewords by ``criterion`` (:func:`lwpd.compress`); the whole base when ``keep``
    is ``None`` or at least its size (compressing to every codeword returns the base as it
    is). Package-internal: the one recipe, with each caller's choice of ``keep``.
    """
    base = projective_codebook(size, q=q, max_weight=max_weight)
    if keep is None or keep >= len(base):
        return base
    return compress(base, keep, criterion=criterion)


def block_codebook(base: Codebook | Callable[[int], Codebook], partition: Partition) -> Codebook:
    """Tile a codebook over every block of a partition (block-diagonal codebook).

    Parameters
    ----------
    base : Codebook or callable
        The pattern for one block. A block of ``base.dim`` coordinates gets ``base`` itself;
        a smaller block gets the codewords restricted to its coordinates, with zero rows and
        duplicates (proportional rows) removed; a larger block is an error. A callable is
        called once per distinct block size ``s`` and must return a Codebook of dimension ``s``.
    partition : Partition
        The coordinate blocks.

    Returns
    -------
    Codebook
        Codewords of block 0, then block 1, and so on, with ``partition`` attached. The
        leading run of equal blocks is stored as one pattern, which encodes by a fast path.

    Examples
    --------
    >>> from lwpd import Partition, block_codebook, projective_codebook
    >>> cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(10, 4))
    >>> len(cb), cb.partition.n_blocks       # 16 + 16 + 4 (PG(1,3) on the last 2 coordinates)
    (36, 3)
    """
    if not isinstance(partition, Partition):
        raise TypeError(f"partition must be a lwpd.Partition, got {type(partition).__name__}")
    if isinstance(base, Codebook):
        largest = int(partition.sizes.max())
        if largest > base.dim:
            raise ValueError(
                f"partition has a block of {largest} coordinates but base has dimension {base.dim}; "
                "every block must be at most base.dim (or pass a callable size -> Codebook)"
            )
    elif not callable(base):
        raise TypeError(f"base must be a Codebook or a callable size -> Codebook, got {type(base).__name__}")

    patterns: dict[int, Codebook] = {}

    def pattern(size: int) -> Codebook:
        if size not in patterns:
            if isinstance(base, Codebook):
                patterns[size] = base if size == base.dim else _restrict(base, size)
            else:
                made = base(size)
                if not isinstance(made, Codebook) or made.dim != size:
                    got = made.dim if isinstance(made, Codebook) else type(made).__name__
                    raise ValueError(f"base({size}) must return a Codebook of dimension {size}, got {got}")
                patterns[size] = made
        return patterns[size]

    sizes, offsets = partition.sizes, partition.offsets
    lead = leading_run(partition)
    tile = pattern(int(sizes[0]))
    dtype = tile.dtype
    rest_ids = np.arange(lead, partition.n_blocks, dtype=np.int64)
    if rest_ids.size == 0:
        return tiled_codebook(tile, partition, lead)
    # The remaining blocks, grouped by size and shifted in bulk (one pattern per distinct size):
    # their codewords come block after block, each block's in its pattern's order.
    local = {int(size): pattern(int(size)).to_scipy().astype(dtype) for size in np.unique(sizes[lead:])}
    rows_of = np.array([local[int(size)].shape[0] for size in sizes[lead:]], dtype=np.int64)
    first_row = np.concatenate([[0], np.cumsum(rows_of)[:-1]])
    coo_rows, coo_cols, coo_data = [], [], []
    for size, pat in local.items():
        which = np.flatnonzero(sizes[lead:] == size)
        row_of_entry = np.repeat(np.arange(pat.shape[0]), np.diff(pat.indptr))
        coo_rows.append((first_row[which][:, None] + row_of_entry[None, :]).ravel())
        coo_cols.append((offsets[rest_ids[which]][:, None] + pat.indices[None, :]).ravel())
        coo_data.append(np.tile(pat.data, which.size))
    shape = (int(rows_of.sum()), partition.dim)
    coo = sp.coo_array((np.concatenate(coo_data), (np.concatenate(coo_rows), np.concatenate(coo_cols))), shape=shape)
    return tiled_codebook(tile, partition, lead, coo.tocsr(), np.repeat(rest_ids, rows_of))


def identity_codebook(dim: int) -> Codebook:
    """The standard basis of ``R^dim``: the uncoded scheme (one coordinate per task).

    Parameters
    ----------
    dim : int
        Dimension (>= 1).

    Returns
    -------
    Codebook
        ``dim`` codewords of weight 1.

    Examples
    --------
    >>> from lwpd import identity_codebook
    >>> identity_codebook(3).to_dense().tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    dim = check_int("dim", dim, minimum=1)
    return Codebook.from_scipy(sp.identity(dim, format="csr", dtype=np.float64))


def random_codebook(
    n_codewords: int,
    dim: int,
    kind: str = "gaussian",
    weight: int | None = None,
    seed: int | np.random.Generator | None = None,
) -> Codebook:
    """Random unit-norm codewords (a baseline for structured codes).

    Parameters
    ----------
    n_codewords : int
        Number of codewords (>= 1).
    dim : int
        Dimension (>= 1).
    kind : {"gaussian", "rademacher", "sparse"}, default "gaussian"
        Entry distribution: standard normal, or random signs. ``"sparse"`` is random signs
        on ``weight`` random coordinates (default ``min(3, dim)``). Sparse draws in a small
        dimension can repeat a line (coherence 1); use :func:`projective_codebook` for
        low-weight codewords that are guaranteed distinct.
    weight : int, optional
        Nonzeros per codeword, at uniformly random positions (1 <= weight <= dim). ``None``
        means dense for ``"gaussian"`` and ``"rademacher"``.
    seed : int or numpy.random.Generator, optional
        Seed for reproducible codebooks.

    Returns
    -------
    Codebook

    Examples
    --------
    >>> from lwpd import random_codebook
    >>> cb = random_codebook(5, 10, kind="sparse", weight=2, seed=0)
    >>> cb.weights.tolist()
    [2, 2, 2, 2, 2]
    """
    n_codewords = check_int("n_codewords", n_codewords, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    check_choice("kind", kind, ("gaussian", "rademacher", "sparse"))
    if weight is None and kind == "sparse":
        weight = min(3, dim)
    if weight is not None:
        weight = check_int("weight", weight, minimum=1, maximum=dim)
    rng = as_rng("seed", seed)
    w = dim if weight is None else weight
    if kind == "gaussian":
        values = rng.standard_normal((n_codewords, w))
    else:
        values = rng.choice(np.array([-1.0, 1.0]), size=(n_codewords, w))
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    if weight is None:
        return Codebook.from_dense(values)
    cols = np.sort(np.argsort(rng.random((n_codewords, dim)), axis=1)[:, :w], axis=1)
    indptr = np.arange(0, n_codewords * w + 1, w)
    mat = sp.csr_array((values.reshape(-1), cols.reshape(-1), indptr), shape=(n_codewords, dim))
    return Codebook.from_scipy(mat)


def simplex_codebook(dim: int) -> Codebook:
    """``dim + 1`` equiangular unit vectors in ``R^dim`` (the regular simplex).

    Every pair has correlation ``-1/dim``, which attains the Welch bound: the optimal packing
    of ``dim + 1`` lines.

    Parameters
    ----------
    dim : int
        Dimension (>= 2; in ``R^1`` the two vertices span the same line).

    Returns
    -------
    Codebook
        ``dim + 1`` dense unit-norm codewords.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import simplex_codebook
    >>> G = simplex_codebook(3).gram()
    >>> bool(np.allclose(G[~np.eye(4, dtype=bool)], -1 / 3))
    True
    """
    dim = check_int("dim", dim, minimum=2)
    # Helmert rows: an orthonormal basis of the sum-zero hyperplane of R^(dim+1); its
    # columns are the simplex vertices (centred standard basis) in those coordinates.
    vertices = scipy.linalg.helmert(dim + 1).T
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    return Codebook.from_dense(vertices)


def hadamard_codebook(dim: int) -> Codebook:
    """Rows of a Sylvester Hadamard matrix, scaled to unit norm: an orthonormal basis of
    dense ``+-1/sqrt(dim)`` codewords.

    Parameters
    ----------
    dim : int
        A power of two (1, 2, 4, 8, ...).

    Returns
    -------
    Codebook
        ``dim`` mutually orthogonal dense codewords.

    Examples
    --------
    >>> from lwpd import hadamard_codebook
    >>> (hadamard_codebook(2).to_dense() * 2**0.5).round().tolist()
    [[1.0, 1.0], [1.0, -1.0]]
    """
    dim = check_int("dim", dim, minimum=1)
    if dim & (dim - 1):
        raise ValueError(f"dim must be a power of two (1, 2, 4, 8, ...), got {dim}")
    return Codebook.from_dense(scipy.linalg.hadamard(dim).astype(np.float64) / math.sqrt(dim))


def grassmannian_codebook(
    n_codewords: int,
    dim: int,
    seed: int | np.random.Generator | None = None,
    n_iter: int = 300,
    n_restarts: int = 8,
) -> Codebook:
    """A numerically optimised packing of ``n_codewords`` lines in ``R^dim`` (low coherence).

    Minimises the coherence ``max_{i != j} |<v_i, v_j>|`` of unit vectors. Each restart
    improves random starts by one of four recipes in turn (a smoothed maximum with growing
    sharpness, alternating projection onto tight frames, the sharp smoothing alone,
    alternating projection onto a looser bound) and polishes the result on the exact minimax
    problem; the least coherent packing wins. Restarts are independent of later ones, so
    more restarts never give a worse packing, and the search stops once a packing meets the
    Welch or orthoplex bound. With the defaults it reaches every best known packing of up
    to 12 lines in ``R^4`` and ``R^5`` in Sloane's table (Conway, Hardin and Sloane) to
    0.01 degrees and every real equiangular tight frame in up to 10 dimensions to 1e-9 in
    coherence. It takes about 0.3-0.8 s for up to 12 lines in ``R^5``, 1.7 s for the 18
    lines of the ETF in ``R^9``, and 2.7 s for 40 lines in ``R^8`` (2-core machine; the
    user guide's table has more).

    Parameters
    ----------
    n_codewords : int
        Number of lines ``N`` (>= 1).
    dim : int
        Dimension (>= 1).
    seed : int or numpy.random.Generator, optional
        Seed of the random starts; ``None`` uses a fixed seed so the result is reproducible.
    n_iter : int, default 300
        Iteration limit of each optimiser run: a sharpness stage, an alternating
        projection, the polish.
    n_restarts : int, default 8
        Restarts; the least coherent packing is kept (ties: the earliest), so raising it
        never makes the result worse.

    Returns
    -------
    Codebook
        ``n_codewords`` unit-norm codewords.

    Examples
    --------
    >>> from lwpd import coherence, grassmannian_codebook, welch_bound
    >>> cb = grassmannian_codebook(6, 3, seed=0)
    >>> abs(coherence(cb) - welch_bound(6, 3)) < 1e-3      # the icosahedron's 6 diagonals
    True
    """
    from lwpd._grassmannian import pack_lines

    n_codewords = check_int("n_codewords", n_codewords, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    n_iter = check_int("n_iter", n_iter, minimum=1)
    n_restarts = check_int("n_restarts", n_restarts, minimum=1)
    rng = as_rng("seed", seed, default=0)
    return Codebook.from_dense(pack_lines(n_codewords, dim, rng, n_iter=n_iter, n_restarts=n_restarts))
