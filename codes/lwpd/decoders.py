"""Decoders: fold workers' directional derivatives into a gradient estimate as they arrive."""

from __future__ import annotations

import math
import numbers
import operator
import threading
from typing import Any, NamedTuple

import numba
import numpy as np

from lwpd import _config
from lwpd._kernels import cpu
from lwpd._validation import as_index_array, as_real_array, check_choice, check_codebook, check_finite, check_real
from lwpd.codebook import Codebook

__all__ = ["ProjectionDecoder", "PeelingDecoder", "decode"]


class _Layout(NamedTuple):
    """A codebook packed for the decoding kernels (see ``lwpd._kernels.cpu.unpack_layout``).

    ``ints`` concatenates block offsets, the tile's CSR pointers and local indices, the rest's
    CSR pointers and global indices, the rest grouped by block (order and pointers) and the
    rest's block indices; ``bounds`` holds the nine boundaries, then the split of ``floats``
    (tile values | rest values) and the number of tiled blocks.
    """

    ints: np.ndarray
    bounds: np.ndarray
    floats: np.ndarray
    max_block: int
    #: The tile's base as a dense ``(b, m)`` array when dense assembly pays
    #: (``_config.DENSE_ASSEMBLY_RATIO``), else an empty ``(0, 0)`` array.
    tile_dense: np.ndarray


def _layout(cb: Codebook) -> _Layout:
    """The codebook's packed layout, built once per codebook (it is immutable) and cached,
    so a decoder or a one-shot :func:`decode` costs nothing in proportion to all blocks."""
    # keyed by the settings that shape it, so a changed setting builds a fresh one
    key = f"cpu_layout/{_config.DENSE_ASSEMBLY_RATIO!r}/{np.dtype(_config.DECODER_DTYPE).name}"
    cached = cb._cache.get(key)
    if cached is None:
        cached = cb._cache[key] = _build_layout(cb)
    return cached


def _build_layout(cb: Codebook) -> _Layout:
    f64 = _config.DECODER_DTYPE
    if cb._tile is not None:
        t = cb._tile
        tptr, tidx, tdat = t.indptr, t.indices, t.data
    else:
        tptr, tidx, tdat = np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, f64)
    order, gptr = cb._rest_groups()
    r = cb._rest
    parts = [cb.blocks.offsets, tptr, tidx, r.indptr, r.indices, order, gptr, cb._rest_block]
    bounds = np.concatenate([[0], np.cumsum([p.size for p in parts]), [tdat.size, cb._tile_blocks]])
    return _Layout(
        np.concatenate(parts).astype(np.int64),
        bounds.astype(np.int64),
        np.concatenate([tdat, r.data]).astype(f64),
        int(cb.blocks.sizes.max()),
        _tile_dense(cb),
    )


def _tile_dense(cb: Codebook) -> np.ndarray:
    """The transposed dense tile for :func:`lwpd._kernels.cpu.assemble_tile_dense`, when its
    dense work is within ``DENSE_ASSEMBLY_RATIO`` of the sparse scatter's (else empty)."""
    f64 = _config.DECODER_DTYPE
    if cb._tile is None or cb._tile_blocks == 0:
        return np.zeros((0, 0), dtype=f64)
    dense = cb._tile.to_scipy().toarray().astype(f64)
    m, b = dense.shape
    scattered = float((np.count_nonzero(dense, axis=1).astype(np.float64) ** 2).sum())
    if m * b * (b + 3) / 2 > _config.DENSE_ASSEMBLY_RATIO * scattered:
        return np.zeros((0, 0), dtype=f64)
    return np.ascontiguousarray(dense.T)


def _pack_state(lay: _Layout, n_codewords: int, n_blocks: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A projection decoder's layout and state in two arrays (see ``cpu.unpack_state``): the
    integers ``[bounds, lengths | layout ints | ranks]`` and the floats
    ``[layout floats | value sums | estimate]``, the state zeroed."""
    header = np.concatenate([lay.bounds, [lay.ints.size, n_blocks, lay.floats.size]])
    assert header.size == cpu.STATE_HEADER
    ints = np.concatenate([header, lay.ints, np.zeros(n_blocks, dtype=np.int64)]).astype(np.int64)
    floats = np.zeros(lay.floats.size + n_codewords + dim, dtype=_config.DECODER_DTYPE)
    floats[: lay.floats.size] = lay.floats
    return ints, floats


class _Decoder:
    """Shared argument handling: one ``(index, value)`` or arrays of them."""

    def __init__(self, codebook: Codebook, backend: str = "cpu") -> None:
        from lwpd import _backend

        self._codebook = check_codebook("codebook", codebook)
        self._n_codewords = codebook.n_codewords
        self._n_received = 0
        self._backend = _backend.resolve(backend)
        self._state: Any = None  # device-resident state on the CUDA backend

    @property
    def backend(self) -> str:
        """``"cpu"`` or ``"cuda"``: where the decoder's state lives and its kernels run."""
        return self._backend

    def _fold_on_device(self, indices: Any, values: Any) -> None:
        from lwpd import _gpu

        idx, vals = _gpu._as_device_results(self, indices, values)
        self._state.fold(idx, vals)
        self._n_received += int(idx.shape[0])

    @property
    def codebook(self) -> Codebook:
        """The codebook whose results are decoded."""
        return self._codebook

    @property
    def n_received(self) -> int:
        """Number of results folded in so far, repeats included."""
        return self._n_received

    def _one(self, index: Any, value: Any) -> tuple[int, float] | None:
        """Validate a single arrival; ``None`` when the arguments are arrays."""
        # Fast path for the common call update(int, float): the general checks below cost
        # more than folding the result in.
        if type(index) is int and type(value) is float:
            if 0 <= index < self._n_codewords and -_config.VALUE_MAX_MAGNITUDE <= value <= _config.VALUE_MAX_MAGNITUDE:
                return index, value  # (NaN fails the comparison and takes the checks below)
        if not isinstance(index, numbers.Integral) or isinstance(index, (bool, np.bool_)):
            return None
        j = operator.index(index)
        n = self._codebook.n_codewords
        if not 0 <= j < n:
            raise IndexError(f"index must lie in [0, {n - 1}] (there are {n} codewords); got {j}")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"value must be a real number, got {type(value).__name__}")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"value must be finite, got {v} for codeword {j}")
        _check_magnitude("value", abs(v))
        return j, v

    def _many(self, indices: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
        idx = as_index_array("indices", indices, self._codebook.n_codewords)
        vals = as_real_array("values", values, ndim=(0, 1), keep_float32=False).reshape(-1)
        if vals.shape[0] != idx.shape[0]:
            raise ValueError(
                f"values must have one entry per index: got {idx.shape[0]} indices and {vals.shape[0]} values"
            )
        check_finite("values", vals)
        if vals.size:  # finite here: the extremes bound the magnitude, no temporary array
            _check_magnitude("values", max(float(vals.max()), -float(vals.min())))
        return idx, np.ascontiguousarray(vals)


def _scatter(indices: np.ndarray, values: np.ndarray, counts: np.ndarray, sums: np.ndarray) -> None:
    """Fold a batch into the per-codeword counts and sums, by threads when the state is
    larger than the caches (``_config.SCATTER_PARALLEL_MIN_CODEWORDS``).

    Raises OverflowError, with nothing folded in, when a codeword would arrive more often
    than its count holds."""
    if counts.size >= _config.SCATTER_PARALLEL_MIN_CODEWORDS and indices.size >= _config.PARALLEL_MIN_WORK:
        # (asking for the thread count starts Numba's pool, so only where it is used)
        full = cpu.scatter_results.parallel(indices, values, counts, sums, numba.get_num_threads())
    else:
        full = cpu.scatter_results.serial(indices, values, counts, sums, 1)
    if full >= 0:
        _refuse_full_count(int(indices[full]), counts)


def _refuse_full_count(codeword: int, counts: np.ndarray) -> None:
    limit = int(np.iinfo(counts.dtype).max)
    raise OverflowError(
        f"codeword {codeword} would arrive more than {limit:,} times since the last reset, more than its count holds "
        f"(lwpd._config.DECODER_COUNT_DTYPE, {counts.dtype}); nothing was folded in. Call reset() between gradient steps")


def _check_magnitude(name: str, largest: float) -> None:
    """Refuse results so large that their sums or products with codeword entries overflow."""
    if largest > _config.VALUE_MAX_MAGNITUDE:
        raise ValueError(f"{name} must have magnitude at most {_config.VALUE_MAX_MAGNITUDE:g} "
                         f"(lwpd._config.VALUE_MAX_MAGNITUDE: sums of such results would overflow); got {largest:.3g}")


class ProjectionDecoder(_Decoder):
    """Optimal (least-squares) decoder that folds each result in the moment it arrives.

    For the received set ``S`` with values ``r_S`` the estimate is the minimum-norm
    least-squares solution ``g_hat = pinv(V_S) r_S``; with exact values it is the orthogonal
    projection of the true gradient onto ``span{v_j : j in S}``, so
    ``<g_hat, g> = ||g_hat||^2 >= 0`` and every partial decode is a descent direction.
    The rank is numerical: per block, directions whose singular value is below about
    ``sqrt(lwpd._config.RANK_RTOL)`` (1e-6) times the largest count as not received (NumPy's
    ``pinv`` uses a far smaller cut-off, so the two differ only for nearly dependent
    codewords, where the smaller cut-off amplifies noise by up to a million times).

    Each block keeps its received codewords as counts and sums of values; a single arrival
    re-solves only its own block (pivoted Cholesky of the block's ``b x b`` information
    matrix), so its cost depends on that block and never on ``n``. A batch of arrivals is
    only folded in, and the blocks it touched are solved once when the estimate (or the
    rank) is next read, so many batches between two reads cost one solve per block. The result does not
    depend on arrival order. A codeword that arrives again counts as a repeated measurement:
    the estimate is ``pinv`` of the stacked rows, repeats included.

    Parameters
    ----------
    codebook : Codebook
        The codebook whose directional derivatives arrive. Blocks of its partition are
        decoded independently; an unpartitioned codebook is one block (at most
        ``lwpd._config.MAX_DECODE_BLOCK`` coordinates; 32 on the CUDA backend).
    backend : {"cpu", "cuda", "auto"}, default "cpu"
        ``"cuda"`` keeps the state on an NVIDIA GPU and folds results in with numba.cuda
        kernels (one thread block per gradient block); :meth:`update` then also takes device
        arrays (numba, CuPy, torch CUDA) without a host round trip, and :meth:`estimate`
        returns a device array. ``"auto"`` uses the GPU when one is usable.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import ProjectionDecoder, projective_codebook
    >>> cb = projective_codebook(2, normalize=False)     # (1,0) (0,1) (1,1) (1,-1)
    >>> g = np.array([3.0, -1.0])
    >>> dec = ProjectionDecoder(cb)
    >>> dec.update(2, cb.encode(g)[2])                     # only <g, (1,1)> so far
    >>> dec.estimate().round(12).tolist()                 # the projection of g onto (1,1)
    [1.0, 1.0]
    >>> dec.update([3], cb.encode(g)[[3]])                 # now (1,-1) too: exact
    >>> dec.estimate().round(12).tolist(), dec.rank
    ([3.0, -1.0], 2)
    """

    def __init__(self, codebook: Codebook, backend: str = "cpu") -> None:
        super().__init__(codebook, backend)
        if self._backend == "cuda":
            from lwpd import _gpu

            self._state = _gpu.ProjectionState(codebook)
            return
        largest = int(codebook.blocks.sizes.max())
        if largest > _config.MAX_DECODE_BLOCK:
            raise ValueError(
                f"codebook has a block of {largest} coordinates; the projection decoder accepts blocks of "
                f"at most {_config.MAX_DECODE_BLOCK} (give the codebook a Partition, e.g. via block_codebook)"
            )
        self._layout = _layout(codebook)
        n_blocks = codebook.blocks.n_blocks
        self._counts = np.zeros(codebook.n_codewords, dtype=_config.DECODER_COUNT_DTYPE)
        # the layout, the value sums, the block ranks and the estimate live in two packed arrays
        # so that a single arrival's kernel call passes three arrays, not seven
        self._packed = _pack_state(self._layout, codebook.n_codewords, n_blocks, codebook.dim)
        _, _, _, self._sums, self._ranks, self._x = cpu.unpack_state(*self._packed, codebook.n_codewords)
        self._pattern_table: np.ndarray | None = None  # received set -> slot, see _solve
        # blocks whose results changed since their last solve: a batch update only folds
        # (counts and sums), and the blocks are solved once when the estimate is read, so
        # many batches between two reads cost one solve per block, not one per batch. The
        # flags and the list of flagged blocks keep every step in proportion to the blocks
        # touched (no pass over all blocks per read).
        self._dirty = np.zeros(n_blocks, dtype=bool)
        self._dirty_blocks: list[np.ndarray] = []

    def update(self, indices: Any, values: Any) -> None:
        """Fold in results: one ``(index, value)`` pair, or equal-length arrays of them.

        Parameters
        ----------
        indices : int or array_like of int
            Codeword indices in ``[0, N)``.
        values : float or array_like of float
            The workers' results ``<g, v_j>``; must be finite.

        Raises
        ------
        IndexError
            An index is out of range.
        ValueError
            A value is NaN or inf, or the lengths differ. Nothing is folded in then.
        OverflowError
            A codeword would arrive more than 65,535 times since the last :meth:`reset`, more
            than its count holds (``lwpd._config.DECODER_COUNT_DTYPE``). Nothing is folded in then.
        """
        if self._backend == "cuda":
            self._fold_on_device(indices, values)
            return
        lay = self._layout
        one = self._one(indices, values)
        if one is not None:
            j, v = one
            if not cpu.fold_one(j, v, *self._packed, self._counts, _config.RANK_RTOL):
                _refuse_full_count(j, self._counts)
            self._n_received += 1
            return
        idx, vals = self._many(indices, values)
        if idx.size == 0:
            return
        _scatter(idx, vals, self._counts, self._sums)
        self._n_received += int(idx.size)
        touched = cpu.blocks_touched(idx, lay.ints, lay.bounds, lay.floats)
        fresh = touched[~self._dirty[touched]]
        if fresh.size:
            self._dirty[fresh] = True
            self._dirty_blocks.append(fresh)

    def _flush(self) -> None:
        """Solve the blocks that batch updates left unsolved (a no-op when there are none)."""
        if self._backend == "cuda" or not self._dirty_blocks:
            return
        blocks = self._dirty_blocks[0] if len(self._dirty_blocks) == 1 else np.sort(np.concatenate(self._dirty_blocks))
        self._dirty_blocks = []
        self._dirty[blocks] = False
        self._solve(blocks, self._x)

    def _solve(self, blocks: np.ndarray, x: np.ndarray) -> None:
        """Solve the listed blocks into ``x`` (and their ranks)."""
        lay = self._layout
        rows = self._codebook._tile_rows
        if 0 < rows <= _config.PATTERN_MAX_ROWS and blocks.size >= _config.PATTERN_MIN_BLOCKS:
            blocks = self._solve_shared_patterns(blocks, rows, x)
            if blocks.size == 0:
                return
        work = blocks.size * lay.max_block**2
        # chunks for the threads; asking Numba for its thread count starts its thread pool, whose
        # idle threads then spin beside the caller's (a DDP hook's decode measured 5x slower steps
        # on 2 cores), so a solve that runs serially never asks
        chunks = 4 * numba.get_num_threads() if work >= _config.PARALLEL_MIN_WORK else 1
        cpu.solve_blocks(
            blocks, lay.ints, lay.bounds, lay.floats, lay.tile_dense, self._counts, self._sums, _config.RANK_RTOL,
            lay.max_block, chunks, self._ranks, x, work=work,
        )

    def _solve_shared_patterns(self, blocks: np.ndarray, rows: int, x: np.ndarray) -> np.ndarray:
        """Solve the tiled blocks whose received sets repeat once per set; return the rest.

        Same result as the per-block solve (the same information matrices and the same
        pivoted-Cholesky rank decisions), applied as ``P_set @ sums`` per block.
        """
        lay = self._layout
        if self._pattern_table is None:
            self._pattern_table = np.full(1 << rows, -1, dtype=np.int64)
        slots, masks = cpu.tile_pattern_slots(blocks, lay.ints, lay.bounds, lay.floats, self._counts, self._pattern_table)
        # Each distinct set costs `rows` factorisations: worth it only when sets repeat.
        if blocks.size < _config.PATTERN_MIN_SHARING * masks.size * rows:
            return blocks
        P, pattern_ranks = cpu.pattern_operators(masks, lay.ints, lay.bounds, lay.floats, _config.RANK_RTOL)
        cpu.apply_patterns(blocks, slots, P, pattern_ranks, lay.ints, lay.bounds, lay.floats, self._sums, self._ranks,
                           x, work=blocks.size * P.shape[1] * rows)
        return blocks[slots < 0]

    def estimate(self) -> np.ndarray:
        """The decoded gradient ``pinv(V_S) r_S`` as a new float64 array of length ``n``
        (a device array on the CUDA backend)."""
        if self._backend == "cuda":
            from lwpd import _gpu

            return _gpu.device_copy(self._state.x)
        self._flush()
        return self._x.copy()

    @property
    def received(self) -> np.ndarray:
        """Sorted indices of the distinct codewords received so far."""
        counts = self._state.counts.copy_to_host() if self._backend == "cuda" else self._counts
        return np.flatnonzero(counts)

    @property
    def rank(self) -> int:
        """Dimension of the span of the received codewords (sum of :attr:`block_ranks`)."""
        return int(self.block_ranks.sum())

    @property
    def block_ranks(self) -> np.ndarray:
        """Numerical rank of the received codewords in each block, shape ``(n_blocks,)``."""
        if self._backend == "cuda":
            return self._state.ranks.copy_to_host()
        self._flush()
        return self._ranks.copy()

    def recovered_fraction(self) -> float:
        """Fraction of the ``n`` dimensions spanned so far: ``rank / n``.

        Under an isotropic gradient prior this is the expected captured energy
        ``E ||P_S g||^2 / E ||g||^2``.
        """
        return self.rank / self._codebook.dim

    def reset(self) -> None:
        """Forget every result (start a new gradient step)."""
        self._n_received = 0
        if self._backend == "cuda":
            self._state.reset()
            return
        self._counts[:] = 0
        self._sums[:] = 0.0
        self._ranks[:] = 0
        self._x[:] = 0.0
        self._dirty[:] = False
        self._dirty_blocks = []

    def __repr__(self) -> str:
        return f"ProjectionDecoder(received={self._n_received}, rank={self.rank}/{self._codebook.dim})"


class PeelingDecoder(_Decoder):
    """Cheap exact decoder by iterative peeling (LT/LDPC-style erasure decoding).

    A received codeword whose support has exactly one unknown coordinate determines that
    coordinate; each recovered coordinate is substituted into the other received codewords
    and the rule repeats until nothing changes. Low-weight codewords make peeling effective.
    Values are assumed exact: a recovered coordinate is never revised, and a codeword that
    arrives again is ignored. With exact values the result does not depend on arrival order.

    Parameters
    ----------
    codebook : Codebook
    backend : {"cpu", "cuda", "auto"}, default "cpu"
        ``"cuda"`` peels on an NVIDIA GPU (one thread per gradient block, sweeping until
        nothing changes); :meth:`values` and :meth:`estimate` then return device arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import PeelingDecoder, projective_codebook
    >>> cb = projective_codebook(2, normalize=False)     # (1,0) (0,1) (1,1) (1,-1)
    >>> g = np.array([3.0, -1.0])
    >>> dec = PeelingDecoder(cb)
    >>> dec.update([2, 3], cb.encode(g)[[2, 3]])           # weight-2 codewords only
    >>> dec.known.tolist()                                 # peeling cannot start
    [False, False]
    >>> dec.update(0, 3.0)                                 # (1,0) gives g_0, then (1,1) gives g_1
    >>> dec.values().tolist()
    [3.0, -1.0]
    """

    def __init__(self, codebook: Codebook, backend: str = "cpu") -> None:
        super().__init__(codebook, backend)
        if self._backend == "cuda":
            from lwpd import _gpu

            self._state = _gpu.PeelingState(codebook)
            return
        csr = codebook.to_scipy().astype(np.float64)
        csc = csr.tocsc()
        csc.sort_indices()
        self._csr = (csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data)
        self._csc = (csc.indptr.astype(np.int64), csc.indices.astype(np.int64), csc.data)
        n, dim = codebook.n_codewords, codebook.dim
        self._received = np.zeros(n, dtype=np.uint8)
        self._residual = np.zeros(n)
        self._unknown = np.zeros(n, dtype=np.int64)
        self._known = np.zeros(dim, dtype=np.uint8)
        self._coords = np.zeros(dim)
        self._queue = np.empty(n + 1, dtype=np.int64)

    def update(self, indices: Any, values: Any) -> None:
        """Fold in results: one ``(index, value)`` pair, or equal-length arrays of them.

        Parameters
        ----------
        indices : int or array_like of int
            Codeword indices in ``[0, N)``.
        values : float or array_like of float
            The workers' results ``<g, v_j>``; must be finite.
        """
        if self._backend == "cuda":
            self._fold_on_device(indices, values)
            return
        one = self._one(indices, values)
        if one is not None:
            idx, vals = np.array([one[0]], dtype=np.int64), np.array([one[1]])
        else:
            idx, vals = self._many(indices, values)
        if idx.size == 0:
            return
        cpu.peel(idx, vals, *self._csr, *self._csc, self._received, self._residual, self._unknown,
                 self._known, self._coords, self._queue)
        self._n_received += int(idx.size)

    def _host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(received, known, coords)`` on the host."""
        if self._backend == "cuda":
            s = self._state
            return s.received.copy_to_host(), s.known.copy_to_host(), s.coords.copy_to_host()
        return self._received, self._known, self._coords

    def _out(self, arr: np.ndarray) -> np.ndarray:
        if self._backend == "cuda":
            from numba import cuda

            return cuda.to_device(arr)
        return arr

    @property
    def known(self) -> np.ndarray:
        """Boolean mask of the coordinates recovered exactly, shape ``(n,)``."""
        return self._host()[1].astype(bool)

    @property
    def received(self) -> np.ndarray:
        """Sorted indices of the distinct codewords received so far."""
        return np.flatnonzero(self._host()[0])

    def values(self) -> np.ndarray:
        """Recovered coordinates, NaN where a coordinate is still unknown."""
        _, known, coords = self._host()
        return self._out(np.where(known.astype(bool), coords, np.nan))

    def estimate(self, fill: float = 0.0) -> np.ndarray:
        """Recovered coordinates with ``fill`` (a finite real number; :meth:`values` gives NaN)
        where a coordinate is still unknown."""
        fill = check_real("fill", fill)
        _, known, coords = self._host()
        return self._out(np.where(known.astype(bool), coords, float(fill)))

    def recovered_fraction(self) -> float:
        """Fraction of coordinates recovered exactly."""
        return float(self._host()[1].mean())

    def reset(self) -> None:
        """Forget every result."""
        self._n_received = 0
        if self._backend == "cuda":
            self._state.reset()
            return
        for arr in (self._received, self._residual, self._unknown, self._known, self._coords):
            arr[:] = 0

    def __repr__(self) -> str:
        return f"PeelingDecoder(received={self._n_received}, known={int(self.known.sum())}/{self._codebook.dim})"


def decode(codebook: Codebook, indices: Any, values: Any, method: str = "projection", backend: str = "cpu") -> np.ndarray:
    """Decode a gradient from a set of results in one shot, in parallel over blocks.

    Parameters
    ----------
    codebook : Codebook
    indices : array_like of int
        Indices of the codewords whose results arrived (repeats allowed).
    values : array_like of float
        The results ``<g, v_j>``, one per index.
    method : {"projection", "peeling"}, default "projection"
        ``"projection"``: minimum-norm least squares ``pinv(V_S) r_S`` (optimal).
        ``"peeling"``: exact iterative peeling; unrecovered coordinates are 0.
    backend : {"cpu", "cuda", "auto"}, default "cpu"
        ``"cuda"`` decodes on an NVIDIA GPU; the result is a NumPy array for host inputs and
        stays on the device for device inputs.

    Returns
    -------
    numpy.ndarray, shape (n,)
        The float64 gradient estimate.

    Notes
    -----
    Only the blocks with arrivals are solved, so the cost follows what arrived, not the
    codebook's size. The per-codeword counts and sums this needs (10 bytes per codeword) are
    kept with the codebook after the first call and reused, only the entries a call touched
    being cleared; a call from a second thread at the same moment uses fresh ones.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import decode, projective_codebook
    >>> cb = projective_codebook(3, max_weight=2)
    >>> g = np.array([1.0, -2.0, 0.5])
    >>> received = [0, 4, 7, 8]                            # (1,0,0) (1,-1,0) (0,1,1) (0,1,-1)
    >>> np.allclose(decode(cb, received, cb.encode(g)[received]), g)
    True
    """
    check_choice("method", method, ("projection", "peeling"))
    from lwpd import _backend

    if _backend.resolve(backend) == "cuda":
        dec = (PeelingDecoder if method == "peeling" else ProjectionDecoder)(codebook, backend="cuda")
        dec.update(indices, values)
        result = dec.estimate()
        on_device = _backend.is_device_array(indices) or _backend.is_device_array(values)
        return result if on_device else result.copy_to_host()
    if method == "peeling":
        dec = PeelingDecoder(codebook)
        dec.update(indices, values)
        return dec.estimate()
    # One-shot decodes reuse a per-codebook decoder's per-codeword counts and sums and clear
    # only the entries they touched: fresh all-codeword scratch costs a page fault per page
    # touched, more than solving a few blocks. Another thread decoding at the same moment
    # gets fresh scratch instead of waiting.
    if not _ONE_SHOT_LOCK.acquire(blocking=False):
        return _decode_into(ProjectionDecoder(codebook), indices, values)
    try:
        dec = codebook._cache.get("one_shot_decoder")
        if dec is None or dec._layout is not _layout(codebook):  # (a changed setting rebuilds the layout)
            dec = codebook._cache["one_shot_decoder"] = ProjectionDecoder(codebook)
        return _decode_into(dec, indices, values, clear=True)
    finally:
        _ONE_SHOT_LOCK.release()


_ONE_SHOT_LOCK = threading.Lock()


def _decode_into(dec: ProjectionDecoder, indices: Any, values: Any, clear: bool = False) -> np.ndarray:
    """``pinv(V_S) r_S`` into a new array, solving only the blocks with arrivals (the others
    decode to zero); ``clear``: zero the counts and sums touched afterwards."""
    idx, vals = dec._many(indices, values)
    x = np.zeros(dec.codebook.dim, dtype=_config.DECODER_DTYPE)
    try:
        _scatter(idx, vals, dec._counts, dec._sums)
        lay = dec._layout
        dec._solve(cpu.blocks_touched(idx, lay.ints, lay.bounds, lay.floats), x)
        return x
    finally:
        if clear and 8 * idx.size < dec._counts.size:  # few arrivals: clear what they touched
            dec._counts[idx] = 0
            dec._sums[idx] = 0.0
        elif clear:  # many: one sequential pass beats scattered writes
            dec._counts[:] = 0
            dec._sums[:] = 0.0
