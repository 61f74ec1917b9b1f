"""A codebook packed into arrays for the decoding kernels, built once per codebook and cached (private).

The kernels take the packed codebook as three arrays rather than eleven because Numba's dispatch
costs about 0.13 us per array argument, which dominates a single-arrival update; Python code
reads the same arrays by name through :meth:`PackedCodebook.fields`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lwpd import _config
from lwpd._kernels import cpu
from lwpd.codebook import Codebook


class PackedFields(NamedTuple):
    """The packed codebook's parts by name (views, no copies); see ``lwpd._kernels.cpu``'s
    module docstring for what the tile and the rest are."""

    offsets: np.ndarray  # block boundaries, (n_blocks + 1,)
    tptr: np.ndarray  # the tile's CSR row pointers (m + 1,), local coordinates
    tidx: np.ndarray
    tdat: np.ndarray
    tile_blocks: int  # blocks covered by the tile
    rptr: np.ndarray  # the rest's CSR row pointers, global coordinates
    ridx: np.ndarray
    rdat: np.ndarray
    order: np.ndarray  # the rest's rows grouped by block ...
    gptr: np.ndarray  # ... with these pointers over blocks tile_blocks .. n_blocks - 1
    rest_block: np.ndarray  # the block of each rest row


class PackedCodebook(NamedTuple):
    """A codebook packed for the decoding kernels (see ``lwpd._kernels.cpu.unpack_codebook``).

    ``ints`` concatenates the parts of :class:`PackedFields` that are integer arrays,
    ``bounds`` holds their nine boundaries, then the split of ``floats`` (tile values | rest
    values) and the number of tiled blocks.
    """

    ints: np.ndarray
    bounds: np.ndarray
    floats: np.ndarray
    max_block: int
    #: The tile's base as a dense ``(b, m)`` array when dense assembly pays
    #: (``_config.DENSE_ASSEMBLY_RATIO``), else an empty ``(0, 0)`` array.
    tile_dense: np.ndarray

    def fields(self) -> PackedFields:
        """The parts by name, sliced by the same kernel the decoders use."""
        return PackedFields(*cpu.unpack_codebook(self.ints, self.bounds, self.floats))


def packed_codebook(cb: Codebook) -> PackedCodebook:
    """The codebook packed for the kernels, built once per codebook (it is immutable) and cached,
    so a decoder or a one-shot decode costs nothing in proportion to all blocks."""
    # keyed by the settings that shape it, so a changed setting builds a fresh one
    key = f"cpu_packed/{_config.DENSE_ASSEMBLY_RATIO!r}/{np.dtype(_config.DECODER_DTYPE).name}"
    return cb.internals.memo(key, lambda: _build(cb))


def _build(cb: Codebook) -> PackedCodebook:
    f64 = _config.DECODER_DTYPE
    kept = cb.internals.storage
    if kept.base is not None:
        tptr, tidx, tdat = kept.base.indptr, kept.base.indices, kept.base.data
    else:
        tptr, tidx, tdat = np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, f64)
    rest = kept.rest
    order, gptr = cb.internals.rest_groups()
    parts = [cb.blocks.offsets, tptr, tidx, rest.indptr, rest.indices, order, gptr, kept.rest_block]
    bounds = np.concatenate([[0], np.cumsum([p.size for p in parts]), [tdat.size, kept.tiled_blocks]])
    return PackedCodebook(
        np.concatenate(parts).astype(np.int64),
        bounds.astype(np.int64),
        np.concatenate([tdat, rest.data]).astype(f64),
        int(cb.blocks.sizes.max()),
        _tile_dense(cb),
    )


def _tile_dense(cb: Codebook) -> np.ndarray:
    """The transposed dense tile for :func:`lwpd._kernels.cpu.assemble_tile_dense`, when its
    dense work is within ``DENSE_ASSEMBLY_RATIO`` of the sparse scatter's (else empty)."""
    f64 = _config.DECODER_DTYPE
    kept = cb.internals.storage
    if kept.base is None or kept.tiled_blocks == 0:
        return np.zeros((0, 0), dtype=f64)
    dense = kept.base.to_scipy().toarray().astype(f64)
    m, b = dense.shape
    scattered = float((np.count_nonzero(dense, axis=1).astype(np.float64) ** 2).sum())
    if m * b * (b + 3) / 2 > _config.DENSE_ASSEMBLY_RATIO * scattered:
        return np.zeros((0, 0), dtype=f64)
    return np.ascontiguousarray(dense.T)
