"""The torch adapters' default codebook, and its runs of equal blocks (private): the pattern
every block of a run repeats, the projector and rank of each set of its codewords a block may
receive, and the codewords a block may lose and stay spanned."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lwpd import _config, _defaults
from lwpd.codebook import Codebook, Partition
from lwpd.constructions import block_codebook, projective_block_base


def _block_base(size: int, max_weight: int, redundancy: float) -> Codebook:
    """Compressed projective pattern for a block of ``size`` coordinates."""

    return projective_block_base(size, q=3, max_weight=max_weight, keep=max(size, round(redundancy * size)))


def _default_codebook(partition: Partition, max_weight: int = 2, redundancy: float | None = None) -> Codebook:
    """The default codebook of the torch adapters: per block, a projective base PG(b-1, 3) of
    weight <= ``max_weight``, compressed to ``round(redundancy * b)`` codewords (private).
    """

    redundancy = _defaults.TORCH_REDUNDANCY if redundancy is None else redundancy
    cache: dict[int, Codebook] = {}

    def base(size: int) -> Codebook:
        if size not in cache:
            cache[size] = _block_base(size, max_weight, redundancy)
        return cache[size]

    return block_codebook(base, partition)


class _PatternRun(NamedTuple):
    """A run of consecutive blocks with the same size and base pattern (private), with the
    projector and rank of every set of its codewords a block may receive."""

    first: int  # first coordinate (block order)
    first_block: int
    n_blocks: int
    size: int
    rows: int  # codewords per block
    projectors: np.ndarray  # (2**rows, size, size): Q_S of every received set S (bit r: the r-th codeword)
    ranks: np.ndarray  # (2**rows,): the rank of each
    tolerance: int  # codewords a block may lose, whichever they are, and stay spanned (-1: never spanned)


def _pattern_runs(codebook: Codebook, rows: np.ndarray) -> list[_PatternRun] | None:
    """The runs of equal blocks of a codebook built by :func:`_default_codebook` (one pattern
    per block size, every block's codewords contiguous and in the pattern's order; ``rows``:
    codewords per block), or ``None`` when the runs are too many or their blocks have too
    many codewords (``_config.TORCH_PATTERN_MAX_RUNS``, ``TORCH_PATTERN_MAX_ROWS``)."""
    from lwpd._kernels import cpu
    from lwpd.decoders._packing import packed_codebook

    sizes = codebook.blocks.sizes
    starts = np.flatnonzero(np.r_[True, (sizes[1:] != sizes[:-1]) | (rows[1:] != rows[:-1])])
    # the received sets are uint16 bit masks: at most 16 codewords per block, whatever the setting
    if starts.size > _config.TORCH_PATTERN_MAX_RUNS or rows.max() > min(_config.TORCH_PATTERN_MAX_ROWS, 16):
        return None
    ends = np.r_[starts[1:], sizes.size]
    first_codeword = np.r_[0, np.cumsum(rows)]
    offsets = codebook.blocks.offsets
    csr = codebook.to_scipy()
    runs = []
    for a, z in zip(starts, ends):
        b, m, c0, o = int(sizes[a]), int(rows[a]), int(first_codeword[a]), int(offsets[a])
        base = csr[c0 : c0 + m].toarray()[:, o : o + b].astype(_config.DECODER_DTYPE)
        packed = packed_codebook(block_codebook(Codebook.from_dense(base), Partition.uniform(b, b)))
        # every received set's projector and rank, now (2**rows small solves, rows <=
        # TORCH_PATTERN_MAX_ROWS), and from the ranks how many lost codewords every block survives
        sets = np.arange(1 << m, dtype=np.int64)
        P, ranks = cpu.pattern_operators(sets, packed.ints, packed.bounds, packed.floats, _config.RANK_RTOL)
        received = sum((sets >> r) & 1 for r in range(m))  # codewords in each set
        tolerance = m - int(received[ranks < b].max()) - 1  # the empty set never spans
        runs.append(_PatternRun(o, int(a), int(z - a), b, m, P @ base, ranks, tolerance))
    return runs
