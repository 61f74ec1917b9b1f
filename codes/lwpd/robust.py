"""Byzantine workers: fault injection and robust decoding by real-number error correction.

A Byzantine worker returns whatever it likes. :class:`Byzantine` makes a seeded fraction of a
cluster's workers lie (every cluster takes it as ``faults=``). :class:`RobustDecoder` decodes
LWPD results *through* such lies whenever a block received more codewords than its dimension:
the received values of a block are a codeword ``A g`` of a real linear code, so a few corrupted
values are located and excluded as errors are in a Reed-Solomon code (the real-number error
correction of Candès and Tao, 2005, used for gradients by Data, Song and Diggavi, 2018).
What a data-parallel user would otherwise reach for, the coordinate-wise median and trimmed
mean (Yin et al., 2018), is the scheme :class:`lwpd.schemes.RobustAggregation`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lwpd import _config
from lwpd._validation import check_choice, check_int, check_real
from lwpd.decoders._base import Decoder, HostOnlyState

__all__ = ["Byzantine", "DecodingFailureWarning", "RobustDecoder", "RobustReport",
           "block_code_limits"]

ATTACKS = ("random", "sign_flip", "constant", "scaled")
#: What :class:`RobustDecoder` does with a block that cannot verify its values.
UNVERIFIED = ("drop", "use")


class Byzantine:
    """A fault model in which a fixed, seeded fraction of the workers lie about their results.

    Pass it to any cluster (``SimulatedCluster(..., faults=Byzantine(0.1))``, the executor
    and Dask clusters alike); the cluster hands each result of a Byzantine worker to
    :meth:`corrupt` as it is delivered. Every floating array in a result is corrupted;
    integer parts (codeword indices, piece numbers) are left alone, so a lie is about values,
    never about which task it answers.

    Parameters
    ----------
    fraction : float
        Fraction of the workers that are Byzantine, in ``[0, 0.5)``; ``floor(fraction *
        n_workers)`` of them (a minority, always), drawn once by ``seed`` when the cluster is
        built.
    attack : {"random", "sign_flip", "constant", "scaled"}, default "random"
        ``"random"``: Gaussian values of standard deviation ``magnitude * max(rms, 1)``
        (``rms`` of the honest values); ``"sign_flip"``: ``-x``; ``"constant"``: every value
        ``magnitude``; ``"scaled"``: ``magnitude * x``.
    seed : None, int or numpy.random.Generator, optional
        Chooses the Byzantine workers and drives the random attack; :meth:`reset` repeats it.
    magnitude : float, default 10.0
        Size of the lie (above).

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd.robust import Byzantine
    >>> faults = Byzantine(0.25, attack="sign_flip", seed=0)
    >>> faults.bind(4)
    >>> bad = int(faults.workers[0])
    >>> faults.corrupt(bad, (np.array([3, 5]), np.array([1.0, -2.0])))
    (array([3, 5]), array([-1.,  2.]))
    """

    def __init__(self, fraction: float, attack: str = "random", seed: Any = None, magnitude: float = 10.0) -> None:
        fraction = check_real("fraction", fraction, nonnegative=True)
        if fraction >= 0.5:
            raise ValueError(f"fraction must lie in [0, 0.5): with half the workers lying no decoder can tell who is "
                             f"honest; got {fraction}")
        self.fraction = fraction
        self.attack = check_choice("attack", attack, ATTACKS)
        self.magnitude = check_real("magnitude", magnitude, positive=True)
        from lwpd.cluster._common import RngSource

        self.seed = seed
        self._source = RngSource(seed)  # seed None: fresh entropy, drawn once and kept
        self._n_workers: int | None = None
        self.reset()

    def bind(self, n_workers: int) -> None:
        """Choose the Byzantine workers among ``n_workers`` (called by the cluster)."""
        self._n_workers = check_int("n_workers", n_workers, minimum=1)
        self.reset()

    def reset(self) -> None:
        """Back to the seeded start: the same workers lie, with the same random values."""
        self._rng = self._source.reset()
        n = self._n_workers
        count = 0 if n is None else int(math.floor(self.fraction * n + 1e-9))  # a minority: fraction < 0.5
        self._workers = np.sort(self._rng.choice(n, size=count, replace=False)) if count else np.zeros(0, np.int64)
        self._bad = set(int(w) for w in self._workers)

    @property
    def workers(self) -> np.ndarray:
        """The Byzantine workers (sorted), once bound to a cluster."""
        return self._workers.copy()

    def corrupt(self, worker: int, result: Any) -> Any:
        """``result`` as worker ``worker`` reports it: unchanged for an honest worker."""
        if int(worker) not in self._bad:
            return result
        return self._lie(result)

    def _lie(self, result: Any) -> Any:
        if isinstance(result, tuple):
            return tuple(self._lie(part) for part in result)
        if isinstance(result, list):
            return [self._lie(part) for part in result]
        if isinstance(result, dict):
            return {key: self._lie(part) for key, part in result.items()}
        if not isinstance(result, (np.ndarray, float, complex, np.floating, np.complexfloating)):
            return result
        x = np.asarray(result)
        if x.dtype.kind not in "fc":
            return result
        if self.attack == "random":
            rms = float(np.sqrt(np.mean(np.abs(x) ** 2))) if x.size else 0.0
            out = self._rng.normal(0.0, self.magnitude * max(rms, 1.0), size=x.shape)
        elif self.attack == "sign_flip":
            out = -x
        elif self.attack == "constant":
            out = np.full(x.shape, self.magnitude)
        else:
            out = self.magnitude * x
        return out.astype(x.dtype) if isinstance(result, np.ndarray) else out.astype(x.dtype).item()

    def __repr__(self) -> str:
        return f"Byzantine(fraction={self.fraction}, attack={self.attack!r}, seed={self.seed!r}, magnitude={self.magnitude})"


class DecodingFailureWarning(UserWarning):
    """Some blocks received more corrupted values than the robust decoder can correct; they were
    left out of the estimate (zero) rather than decoded wrongly."""


@dataclass
class RobustReport:
    """What the last :meth:`RobustDecoder.estimate` did.

    Attributes
    ----------
    rejected : numpy.ndarray
        Codeword indices whose values were located as corrupted and excluded.
    corrected_blocks : numpy.ndarray
        Blocks that had corrupted values and were decoded exactly without them.
    failed_blocks : numpy.ndarray
        Blocks whose values are inconsistent beyond the correction radius: left out (zero).
    radius : numpy.ndarray
        Per block, the corrupted values it could correct with what it received (-1 where it
        received nothing).
    unverified_blocks : numpy.ndarray
        Blocks that received too few spare rows to detect ``max_errors`` corrupted values
        (every lie would look consistent): left out (zero) with ``unverified="drop"``, decoded
        unchecked with ``unverified="use"``.
    """

    rejected: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    corrected_blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    failed_blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    radius: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unverified_blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class _BlockCode:
    """The real linear code ``g -> A g`` of one block's received rows: its column space, and how
    many rows may be removed with the rank kept (``spare``: removing any ``spare`` rows keeps
    the rank; the code's minimum distance is ``spare + 1``)."""

    def __init__(self, A: np.ndarray, limit: int) -> None:
        self.A = A
        U, s, Vt = np.linalg.svd(A, full_matrices=False)
        # The projection decoder's rule: a direction counts when its sigma^2 exceeds RANK_RTOL
        # times the largest (RANK_RTOL applies to the information matrix A^T A).
        rank = int(np.sum(s * s > _config.RANK_RTOL * (s[0] * s[0] if s.size else 0.0)))
        self.U, self.rank = U[:, :rank], rank
        self.pinv = (Vt[:rank].T / s[:rank]) @ U[:, :rank].T  # (b, r): the minimum-norm least-squares fit
        self.spare = self._spare(limit)

    def complement(self, subsets: np.ndarray) -> np.ndarray:
        """``I - H[T, T]`` for each row subset ``T`` (``H = U U^T``, the hat matrix)."""
        Ut = self.U[subsets]  # (n_subsets, size, rank)
        return np.eye(subsets.shape[1]) - Ut @ np.swapaxes(Ut, 1, 2)

    def _spare(self, limit: int) -> int:
        """The largest ``s <= limit`` such that removing any ``s`` rows keeps the rank: for every
        row set ``T`` of size ``s``, ``I - H[T, T]`` is nonsingular (its eigenvalues lie in
        [0, 1]; a zero one is a direction only ``T`` sees)."""
        rows = self.A.shape[0]
        spare = 0
        for size in range(1, min(limit, rows - self.rank) + 1):
            subsets = _subsets(rows, size)
            smallest = np.linalg.eigvalsh(self.complement(subsets))[:, 0]
            if smallest.min() <= _config.ROBUST_SPARE_TOL:
                break
            spare = size
        return spare


def _subsets(n: int, size: int) -> np.ndarray:
    return np.array(list(itertools.combinations(range(n), size)), dtype=np.int64).reshape(-1, size)


def block_code_limits(codebook: Any, received: Any = None, max_errors: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """How many corrupted values each block corrects and detects, from the codewords received.

    A block whose received rows ``A`` (``r x b``, rank ``k``) keep their rank after removing
    any ``s`` rows has minimum distance ``d = s + 1`` as a real code: it corrects ``t =
    floor(s / 2)`` corrupted values and detects up to ``s`` (``s - t`` while correcting ``t``).

    Parameters
    ----------
    codebook : Codebook
    received : array_like of int, optional
        Codeword indices received; default the whole codebook.
    max_errors : int, default 3
        Largest correction radius looked for (the check grows as ``C(r, 2 t)``).

    Returns
    -------
    corrects, detects : numpy.ndarray
        Per block, ``t`` and ``s`` (``-1`` for a block with nothing received).

    Examples
    --------
    The compressed projective base of 12 codewords on blocks of 4 coordinates:

    >>> from lwpd import Partition, block_codebook, compress, projective_codebook
    >>> from lwpd.robust import block_code_limits
    >>> base = compress(projective_codebook(4, q=3, max_weight=2), 12, criterion="logdet")
    >>> block_code_limits(block_codebook(base, Partition.uniform(8, 4)))
    (array([2, 2]), array([4, 4]))
    """
    from lwpd._validation import as_index_array
    from lwpd.codebook import check_codebook

    codebook = check_codebook("codebook", codebook)
    max_errors = check_int("max_errors", max_errors, minimum=0)
    idx = np.arange(codebook.n_codewords) if received is None else np.unique(
        as_index_array("received", received, codebook.n_codewords))
    corrects = np.full(codebook.blocks.n_blocks, -1, dtype=np.int64)
    detects = corrects.copy()
    cache: dict[bytes, _BlockCode] = {}
    for block, rows, _ in _block_rows(codebook, idx):
        code = _code(cache, rows, 2 * max_errors)
        corrects[block], detects[block] = code.spare // 2, code.spare
    return corrects, detects


def _block_rows(codebook: Any, idx: np.ndarray):
    """``(block, dense rows restricted to the block, positions in idx)`` per block with rows;
    a block's rows in codeword order, so equal received patterns give equal matrices."""
    if idx.size == 0:
        return
    offsets, sizes = codebook.blocks.offsets, codebook.blocks.sizes
    block_of = codebook.block_of[idx]
    slot, coords, vals = codebook.internals.csr().selected_entries(idx)
    dense = np.zeros((idx.size, int(sizes.max())))
    dense[slot, coords - offsets[block_of[slot]]] = vals
    order = np.lexsort((idx, block_of))
    bounds = np.flatnonzero(np.diff(block_of[order])) + 1
    for group in np.split(order, bounds):
        block = int(block_of[group[0]])
        yield block, dense[group, : int(sizes[block])], group


def _code(cache: dict, rows: np.ndarray, limit: int) -> _BlockCode:
    key = rows.shape[0].to_bytes(4, "little") + rows.tobytes()
    code = cache.get(key)
    if code is None:
        if len(cache) >= _config.ROBUST_CACHE_ENTRIES:
            cache.pop(next(iter(cache)))
        code = cache[key] = _BlockCode(rows, limit)
    return code


class RobustDecoder(Decoder):
    """Projection decoding that locates and excludes corrupted values, block by block.

    Fold results in with :meth:`update` as for :class:`~lwpd.ProjectionDecoder`; each
    codeword's value is kept (a repeat replaces nothing: every value received is a row).
    :meth:`estimate` decodes each block from its received rows ``A`` and values ``y``:

    0. Let ``s`` be the rows that may be removed with the rank kept (:func:`block_code_limits`)
       and ``m = max_errors``, the corrupted values a block is assumed to hold at most. A block
       with ``s < m`` cannot *verify* its values: ``m`` lies could make a wrong gradient look
       consistent (with ``s = 0``, as when a block received exactly its rank, any lie does).
       By default (``unverified="drop"``) such a block is left out of the estimate (zero),
       like a failed block, and listed in :attr:`report` as unverified; ``unverified="use"``
       decodes it anyway (steps 1-2 with ``t = floor(s / 2)``), unchecked.
    1. If ``y`` lies in the column space of ``A`` (residual below ``tol * ||y||``), the block
       is clean and decoded by least squares.
    2. Otherwise it looks for the smallest set ``T`` of at most ``t = min(m, s - m)`` rows
       whose removal makes the rest consistent. For every ``T`` at once it uses the residual
       after deleting ``T``, ``||e||^2 - e_T^T (I - H_TT)^{-1} e_T`` (``e`` the least-squares
       residual, ``H`` the hat matrix); the winner is refitted and checked.
    3. If no such set exists the block has more corrupted values than it corrects: it is left
       out of the estimate (zero), listed in :attr:`report` and a
       :class:`DecodingFailureWarning` is issued -- never decoded wrongly.

    Why it is exact (sketch). Removing any ``s`` rows keeps the rank, so two parameter
    vectors (within the row space) that agree on all but ``s`` rows are equal: the code has
    minimum distance ``s + 1``. If at most ``t <= s / 2`` values are corrupted, the true
    gradient is consistent with the rows outside the corrupted set; and any candidate
    consistent with all but ``t`` rows agrees with the truth on all but ``2 t <= s`` rows,
    hence is the truth. So up to ``t`` corrupted values per block are corrected exactly, and
    with ``e`` corrupted values, ``t < e <= s - t``, the block is inconsistent after every
    removal of ``t`` rows and the failure is detected. With ``t = min(m, s - m)`` every
    pattern of at most ``m`` lies is corrected or detected (``t + m <= s``). Past ``s - t`` an
    adversary who knows the code could make a wrong gradient look consistent; random
    corruption (a Gaussian attack) is detected with probability one up to ``r - k - 1``
    corrupted values.

    Parameters
    ----------
    codebook : Codebook
    max_errors : int, default 1
        Largest number of corrupted values per block to correct (the search grows as
        ``C(r, t)``, the radius check as ``C(r, 2 t)``).
    tol : float, optional
        Relative residual below which values count as consistent; default
        :data:`lwpd._config.ROBUST_TOL`.
    atol : float, default 0.0
        Absolute rounding allowance per value: values ``y`` count as consistent when the
        residual is below ``tol * ||y|| + atol * sqrt(rows)``. Values computed as a small
        difference of large terms (near an optimum, ``A theta - b``) carry rounding errors of
        the size of the terms, not of the result; :class:`~lwpd.schemes.LWPD` sets ``atol``
        every step from the size of the terms (:meth:`lwpd.schemes.LWPD.tasks`).
    unverified : {"drop", "use"}, default "drop"
        What to do with a block that received too few spare rows to detect ``max_errors``
        corrupted values (step 0 above): leave it out, or decode it unchecked.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import Partition, block_codebook, compress, projective_codebook
    >>> from lwpd.robust import RobustDecoder
    >>> base = compress(projective_codebook(4, q=3, max_weight=2), 12, criterion="logdet")
    >>> cb = block_codebook(base, Partition.uniform(4, 4))
    >>> g = np.array([1.0, -2.0, 0.5, 3.0])
    >>> values = cb.encode(g)
    >>> values[5] += 7.0  # one worker lies
    >>> dec = RobustDecoder(cb)
    >>> dec.update(np.arange(12), values)
    >>> np.allclose(dec.estimate(), g), dec.report.rejected
    (True, array([5]))

    A block that received only its rank cannot tell a lie from the truth, so it is left out:

    >>> dec.reset()
    >>> dec.update(np.arange(4), values[:4])
    >>> dec.estimate(), dec.report.unverified_blocks
    (array([0., 0., 0., 0.]), array([0]))
    """

    def __init__(self, codebook: Any, max_errors: int = 1, tol: float | None = None, atol: float = 0.0,
                 unverified: str = "drop") -> None:
        super().__init__(codebook)
        self.max_errors = check_int("max_errors", max_errors, minimum=0)
        self.tol = _config.ROBUST_TOL if tol is None else check_real("tol", tol, positive=True)
        self.atol = check_real("atol", atol, nonnegative=True)
        self.unverified = check_choice("unverified", unverified, UNVERIFIED)
        self._cache: dict[bytes, _BlockCode] = {}
        self.reset()

    def _make_state(self, codebook: Any, backend: str) -> "_ReceivedRows":
        return _ReceivedRows()

    def estimate(self) -> np.ndarray:
        """The gradient estimate from the values so far, corrupted values excluded (see the
        class notes); blocks beyond the correction radius are zero and reported."""
        cb = self._codebook
        g = np.zeros(cb.dim)
        idx, vals = self._state.rows()
        radius = np.full(cb.blocks.n_blocks, -1, dtype=np.int64)
        rejected, corrected, failed, unverified = [], [], [], []
        offsets = cb.blocks.offsets
        self._rank = 0
        patterns: dict[bytes, tuple[np.ndarray, list]] = {}
        for block, A, positions in _block_rows(cb, idx):
            key = A.shape[0].to_bytes(4, "little") + A.tobytes()
            patterns.setdefault(key, (A, []))[1].append((block, positions))
        for A, members in patterns.values():
            code = _code(self._cache, A, 2 * self.max_errors)
            blocks = np.array([block for block, _ in members])
            if code.spare >= self.max_errors:  # every pattern of at most max_errors lies is corrected or detected
                t = min(self.max_errors, code.spare - self.max_errors)
            else:
                unverified.extend(blocks.tolist())
                if self.unverified == "drop":  # left out, like a failed block
                    radius[blocks] = 0
                    continue
                t = code.spare // 2  # (< max_errors here)
            # Every block of one received pattern at once: fit, residual, clean or not.
            Y = vals[np.stack([positions for _, positions in members])]  # (blocks, rows)
            X = Y @ code.pinv.T
            E = Y - X @ A.T
            clean = np.sqrt(np.einsum("ij,ij->i", E, E)) <= _allowance(np.sqrt(np.einsum("ij,ij->i", Y, Y)),
                                                                        A.shape[0], self.tol, self.atol)
            radius[blocks] = t
            columns = offsets[blocks][:, None] + np.arange(A.shape[1])
            g[columns[clean]] = X[clean]
            self._rank += code.rank * int(clean.sum())
            for i in np.flatnonzero(~clean):
                block, positions = members[i]
                x, bad = _decode_block(code, Y[i], t, self.tol, self.atol)
                if x is None:
                    failed.append(block)
                    continue
                corrected.append(block)
                rejected.append(idx[positions[bad]])
                self._rank += code.rank
                g[columns[i]] = x
        failed.sort()
        corrected.sort()
        unverified.sort()
        self._report = RobustReport(
            np.sort(np.concatenate(rejected)) if rejected else np.zeros(0, np.int64),
            np.array(corrected, dtype=np.int64), np.array(failed, dtype=np.int64), radius,
            np.array(unverified, dtype=np.int64))
        if failed:
            warnings.warn(f"{len(failed)} block(s) received more corrupted values than they can correct (radius per "
                          f"block {int(radius[failed].min())} here) and were left out of the estimate: blocks "
                          f"{failed[:10]}{'...' if len(failed) > 10 else ''}", DecodingFailureWarning, stacklevel=2)
        return g

    @property
    def report(self) -> RobustReport:
        """What the last :meth:`estimate` rejected, corrected and could not decode."""
        return self._report

    def recovered_fraction(self) -> float:
        """Fraction of the dimensions the last estimate recovered (failed blocks excluded)."""
        return self._rank / self._codebook.dim

    def reset(self) -> None:
        """Forget every result (the code of each received pattern stays cached)."""
        super().reset()
        self._rank = 0
        self._report = RobustReport()

    def __repr__(self) -> str:
        extra = ", unverified='use'" if self.unverified == "use" else ""
        return f"RobustDecoder({self._codebook!r}, max_errors={self.max_errors}{extra}, n_received={self._n_received})"


class _ReceivedRows(HostOnlyState):
    """Every value received, in arrival order: a robust decoder keeps each as a row."""

    def __init__(self) -> None:
        self.reset()

    def fold_one(self, j: int, value: float) -> None:
        self.fold_many(np.array([j], dtype=np.int64), np.array([value]))

    def fold_many(self, indices: np.ndarray, values: np.ndarray) -> None:
        self._indices.append(indices)
        self._values.append(values)

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, values)`` of every arrival so far."""
        if not self._indices:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(self._indices), np.concatenate(self._values)

    def received(self) -> np.ndarray:
        return np.unique(self.rows()[0])

    def reset(self) -> None:
        self._indices: list[np.ndarray] = []
        self._values: list[np.ndarray] = []


def _allowance(norm_y: Any, rows: int, tol: float, atol: float) -> Any:
    """The residual norm below which ``rows`` values of norm ``norm_y`` count as consistent."""
    return tol * np.maximum(norm_y, np.finfo(float).tiny) + atol * math.sqrt(rows)


def _decode_block(code: _BlockCode, y: np.ndarray, t: int, tol: float,
                  atol: float = 0.0) -> tuple[np.ndarray | None, np.ndarray]:
    """``(x, rows excluded)`` for one block, or ``(None, ...)`` when no removal of at most ``t``
    rows leaves consistent values."""
    A = code.A
    e = y - code.U @ (code.U.T @ y)
    sse = float(e @ e)
    if math.sqrt(sse) <= _allowance(float(np.linalg.norm(y)), y.size, tol, atol):
        return code.pinv @ y, np.zeros(0, np.int64)
    for size in range(1, t + 1):
        subsets = _subsets(y.size, size)
        M = code.complement(subsets)
        eT = e[subsets]
        remaining = sse - np.einsum("ij,ij->i", eT, np.linalg.solve(M, eT[..., None])[..., 0])
        for candidate in np.argsort(remaining)[: _config.ROBUST_CANDIDATES]:
            keep = np.ones(y.size, dtype=bool)
            keep[subsets[candidate]] = False
            x = np.linalg.lstsq(A[keep], y[keep], rcond=None)[0]
            r = y[keep] - A[keep] @ x
            if float(np.linalg.norm(r)) <= _allowance(float(np.linalg.norm(y[keep])), int(keep.sum()), tol, atol):
                return x, subsets[candidate]
    return None, np.zeros(0, np.int64)
