"""Decoder state on the host: NumPy arrays folded and solved by the Numba kernels (private).

Each state takes validated arrivals (int64 indices in range, finite float64 values) from its
decoder; :mod:`lwpd.decoders._device` holds the same interface on a GPU.
"""

from __future__ import annotations

import numba
import numpy as np

from lwpd import _config
from lwpd._kernels import cpu
from lwpd.codebook import Codebook
from lwpd.decoders._base import HostOnlyState
from lwpd.decoders._packing import packed_codebook


class HostProjectionState(HostOnlyState):
    """Per-codeword arrival counts and value sums, block ranks and the estimate.

    A single arrival re-solves its own block at once; a batch only folds, and the blocks it
    touched are solved when the estimate or the ranks are next read, so many batches between
    two reads cost one solve per block. The flags and the list of flagged blocks keep every
    step in proportion to the blocks touched (no pass over all blocks per read).
    """

    def __init__(self, codebook: Codebook) -> None:
        largest = int(codebook.blocks.sizes.max())
        if largest > _config.MAX_DECODE_BLOCK:
            raise ValueError(
                f"codebook has a block of {largest} coordinates; the projection decoder accepts blocks of "
                f"at most {_config.MAX_DECODE_BLOCK} (give the codebook a Partition, e.g. via block_codebook)"
            )
        self.packed = packed_codebook(codebook)
        self._tile_rows = codebook.internals.storage.rows
        n_blocks = codebook.blocks.n_blocks
        self.counts = np.zeros(codebook.n_codewords, dtype=_config.DECODER_COUNT_DTYPE)
        self.sums = np.zeros(codebook.n_codewords, dtype=_config.DECODER_DTYPE)
        self.ranks = np.zeros(n_blocks, dtype=np.int64)
        self.x = np.zeros(codebook.dim, dtype=_config.DECODER_DTYPE)
        self._pattern_table: np.ndarray | None = None  # received set -> slot, see _solve
        self._dirty = np.zeros(n_blocks, dtype=bool)
        self._dirty_blocks: list[np.ndarray] = []

    def fold_one(self, j: int, value: float) -> None:
        lay = self.packed
        if not cpu.fold_one(j, value, lay.ints, lay.bounds, lay.floats, self.counts, self.sums, _config.RANK_RTOL,
                            self.ranks, self.x):
            refuse_full_count(j, self.counts)

    def fold_many(self, indices: np.ndarray, values: np.ndarray) -> None:
        scatter(indices, values, self.counts, self.sums)
        lay = self.packed
        touched = cpu.blocks_touched(indices, lay.ints, lay.bounds, lay.floats)
        fresh = touched[~self._dirty[touched]]
        if fresh.size:
            self._dirty[fresh] = True
            self._dirty_blocks.append(fresh)

    def estimate(self) -> np.ndarray:
        self._flush()
        return self.x.copy()

    def block_ranks(self) -> np.ndarray:
        self._flush()
        return self.ranks.copy()

    def received(self) -> np.ndarray:
        return np.flatnonzero(self.counts)

    def reset(self) -> None:
        for arr in (self.counts, self.sums, self.ranks, self.x, self._dirty):
            arr[:] = 0
        self._dirty_blocks = []

    def decode_once(self, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``pinv(V_S) r_S`` of these arrivals alone into a new array, solving only the blocks
        with arrivals; the counts and sums must be empty and are left empty (only those these
        arrivals touched are cleared, when they are few). The ranks are written, never read:
        clearing them would cost a pass over every block."""
        x = np.zeros(self.x.size, dtype=_config.DECODER_DTYPE)
        try:
            scatter(indices, values, self.counts, self.sums)
            lay = self.packed
            self._solve(cpu.blocks_touched(indices, lay.ints, lay.bounds, lay.floats), x)
            return x
        finally:
            if 8 * indices.size < self.counts.size:  # few arrivals: clear what they touched
                self.counts[indices] = 0
                self.sums[indices] = 0.0
            else:  # many: one sequential pass beats scattered writes
                self.counts[:] = 0
                self.sums[:] = 0.0

    def _flush(self) -> None:
        """Solve the blocks that batches left unsolved (a no-op when there are none)."""
        if not self._dirty_blocks:
            return
        blocks = self._dirty_blocks[0] if len(self._dirty_blocks) == 1 else np.sort(np.concatenate(self._dirty_blocks))
        self._dirty_blocks = []
        self._dirty[blocks] = False
        self._solve(blocks, self.x)

    def _solve(self, blocks: np.ndarray, x: np.ndarray) -> None:
        """Solve the listed blocks into ``x`` (and their ranks)."""
        lay = self.packed
        rows = self._tile_rows
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
            blocks, lay.ints, lay.bounds, lay.floats, lay.tile_dense, self.counts, self.sums, _config.RANK_RTOL,
            lay.max_block, chunks, self.ranks, x, work=work,
        )

    def _solve_shared_patterns(self, blocks: np.ndarray, rows: int, x: np.ndarray) -> np.ndarray:
        """Solve the tiled blocks whose received sets repeat once per set; return the rest.

        Same result as the per-block solve (the same information matrices and the same
        pivoted-Cholesky rank decisions), applied as ``P_set @ sums`` per block.
        """
        lay = self.packed
        if self._pattern_table is None:
            self._pattern_table = np.full(1 << rows, -1, dtype=np.int64)
        slots, masks = cpu.tile_pattern_slots(blocks, lay.ints, lay.bounds, lay.floats, self.counts, self._pattern_table)
        # Each distinct set costs `rows` factorisations: worth it only when sets repeat.
        if blocks.size < _config.PATTERN_MIN_SHARING * masks.size * rows:
            return blocks
        P, pattern_ranks = cpu.pattern_operators(masks, lay.ints, lay.bounds, lay.floats, _config.RANK_RTOL)
        cpu.apply_patterns(blocks, slots, P, pattern_ranks, lay.ints, lay.bounds, lay.floats, self.sums, self.ranks,
                           x, work=blocks.size * P.shape[1] * rows)
        return blocks[slots < 0]


class HostPeelingState(HostOnlyState):
    """Received flags, residual values and unknown counts per codeword; known coordinates."""

    def __init__(self, codebook: Codebook) -> None:
        csr = codebook.internals.csr().to_scipy().astype(np.float64)
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

    def fold_one(self, j: int, value: float) -> None:
        self.fold_many(np.array([j], dtype=np.int64), np.array([value]))

    def fold_many(self, indices: np.ndarray, values: np.ndarray) -> None:
        cpu.peel(indices, values, *self._csr, *self._csc, self._received, self._residual, self._unknown,
                 self._known, self._coords, self._queue)

    def host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(received, known, coords)``."""
        return self._received, self._known, self._coords

    @staticmethod
    def output(arr: np.ndarray) -> np.ndarray:
        """A result where this backend's results live: here the host array itself."""
        return arr

    def received(self) -> np.ndarray:
        return np.flatnonzero(self._received)

    def reset(self) -> None:
        for arr in (self._received, self._residual, self._unknown, self._known, self._coords):
            arr[:] = 0


def scatter(indices: np.ndarray, values: np.ndarray, counts: np.ndarray, sums: np.ndarray) -> None:
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
        refuse_full_count(int(indices[full]), counts)


def refuse_full_count(codeword: int, counts: np.ndarray) -> None:
    limit = int(np.iinfo(counts.dtype).max)
    raise OverflowError(
        f"codeword {codeword} would arrive more than {limit:,} times since the last reset, more than its count holds "
        f"(lwpd._config.DECODER_COUNT_DTYPE, {counts.dtype}); nothing was folded in. Call reset() between gradient steps")
