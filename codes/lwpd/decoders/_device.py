"""Decoder state on an NVIDIA GPU: device arrays folded and solved by numba.cuda kernels (private).

Imported only for ``backend="cuda"``. The interface is that of :mod:`lwpd.decoders._host`;
host arrivals arrive validated and are copied over, device arrivals are validated here on the
device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from numba import cuda

from lwpd import _config
from lwpd._backend import as_device_array, check_finite_device, is_device_array, launch
from lwpd._gpu import device_copy
from lwpd._kernels import cuda as kernels
from lwpd.codebook import Codebook
from lwpd.decoders._packing import packed_codebook


def _zero(*arrays) -> None:
    """Zero 1-D device arrays in place, on the device."""
    for arr in arrays:
        blocks, threads = launch(arr.shape[0])
        kernels.fill[blocks, threads](arr, 0)


class _DeviceState(ABC):
    """What both device states share: taking arrivals in either place."""

    def __init__(self, n_codewords: int) -> None:
        self._n_codewords = n_codewords

    @staticmethod
    def takes_device(indices: Any, values: Any) -> bool:
        return is_device_array(indices) or is_device_array(values)

    def fold_device(self, indices: Any, values: Any) -> int:
        """Validate device-resident arrivals on the device and fold them in; their number."""
        idx, vals = as_device_array(indices), as_device_array(values)
        if idx.ndim != 1 or vals.ndim != 1:
            raise ValueError(f"indices and values must be 1-D, got shapes {tuple(idx.shape)} and {tuple(vals.shape)}")
        if idx.shape[0] != vals.shape[0]:
            raise ValueError(f"values must have one entry per index: got {idx.shape[0]} indices and {vals.shape[0]} values")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must hold integer indices, got dtype {idx.dtype}")
        if vals.dtype not in _config.FLOAT_DTYPES:
            raise TypeError(f"values must be float32 or float64 on the device, got {vals.dtype}")
        if idx.shape[0]:
            flag = cuda.to_device(np.zeros(1, dtype=np.int64))
            blocks, threads = launch(idx.shape[0])
            kernels.count_bad_indices[blocks, threads](idx, self._n_codewords, flag)
            bad = int(flag.copy_to_host()[0])
            if bad:
                raise IndexError(f"indices must lie in [0, {self._n_codewords - 1}] (there are {self._n_codewords}); "
                                 f"{bad} do not")
            check_finite_device("values", vals)
            self._fold(idx, vals)
        return int(idx.shape[0])

    def fold_one(self, j: int, value: float) -> None:
        self.fold_many(np.array([j], dtype=np.int64), np.array([value]))

    def fold_many(self, indices: np.ndarray, values: np.ndarray) -> None:
        self._fold(cuda.to_device(indices.astype(np.int64)), cuda.to_device(values.astype(np.float64)))

    @abstractmethod
    def _fold(self, idx, vals) -> None:
        """Fold validated device arrays of arrivals in."""


class DeviceProjectionState(_DeviceState):
    """Counts, sums, ranks and the estimate on the device; every fold re-solves the blocks it
    touched (one thread block per gradient block)."""

    def __init__(self, cb: Codebook) -> None:
        super().__init__(cb.n_codewords)
        largest = int(cb.blocks.sizes.max())
        if largest > _config.CUDA_MAX_DECODE_BLOCK:
            raise ValueError(
                f"codebook has a block of {largest} coordinates; the CUDA decoders accept blocks of at most "
                f"{_config.CUDA_MAX_DECODE_BLOCK} (use a finer Partition, or backend='cpu')"
            )
        parts = packed_codebook(cb).fields()
        self.packed = parts._replace(**{name: cuda.to_device(np.ascontiguousarray(getattr(parts, name)))
                                        for name in parts._fields if name != "tile_blocks"})
        self.tile_rows = parts.tptr.shape[0] - 1
        self._n_blocks = cb.blocks.n_blocks
        self.counts = cuda.device_array(cb.n_codewords, dtype=np.int64)
        self.sums = cuda.device_array(cb.n_codewords)
        self.ranks = cuda.device_array(self._n_blocks, dtype=np.int64)
        self.x = cuda.device_array(cb.dim)
        self.dirty = cuda.device_array(self._n_blocks, dtype=np.int8)
        self.reset()

    def _fold(self, idx, vals) -> None:
        lay = self.packed
        if idx.shape[0] == 0:
            return
        blocks, threads = launch(idx.shape[0])
        kernels.fold_in[blocks, threads](idx, vals, self.counts, self.sums, self.tile_rows, lay.tile_blocks,
                                         lay.rest_block, self.dirty)
        self.solve_dirty()

    def solve_dirty(self) -> None:
        """Re-solve the blocks flagged in :attr:`dirty` and clear their flags."""
        lay = self.packed
        blocks = max(1, min(_config.CUDA_MAX_BLOCKS, self._n_blocks))
        threads = min(_config.CUDA_THREADS_PER_BLOCK, 64)
        kernels.solve_blocks[blocks, threads](
            self.dirty, lay.offsets, lay.tptr, lay.tidx, lay.tdat, lay.tile_blocks, lay.rptr, lay.ridx, lay.rdat,
            lay.order, lay.gptr, self.counts, self.sums, _config.RANK_RTOL, self.ranks, self.x,
        )

    def estimate(self):
        return device_copy(self.x)

    def block_ranks(self) -> np.ndarray:
        return self.ranks.copy_to_host()

    def received(self) -> np.ndarray:
        return np.flatnonzero(self.counts.copy_to_host())

    def reset(self) -> None:
        _zero(self.counts, self.sums, self.ranks, self.x, self.dirty)


class DevicePeelingState(_DeviceState):
    """Received flags, first values, known coordinates on the device; one thread per block
    peels until nothing changes."""

    def __init__(self, cb: Codebook) -> None:
        super().__init__(cb.n_codewords)
        csr = cb.internals.csr()
        order = np.argsort(cb.block_of, kind="stable")
        counts = np.bincount(cb.block_of, minlength=cb.blocks.n_blocks)
        self._block_ptr = cuda.to_device(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self._block_codewords = cuda.to_device(order.astype(np.int64))
        self._csr = [cuda.to_device(np.ascontiguousarray(a)) for a in (csr.indptr, csr.indices, csr.data.astype(np.float64))]
        self._n_blocks = cb.blocks.n_blocks
        self._received = cuda.device_array(cb.n_codewords, dtype=np.int32)
        self._first_value = cuda.device_array(cb.n_codewords)
        self._known = cuda.device_array(cb.dim, dtype=np.uint8)
        self._coords = cuda.device_array(cb.dim)
        self.reset()

    def _fold(self, idx, vals) -> None:
        if idx.shape[0] == 0:
            return
        blocks, threads = launch(idx.shape[0])
        kernels.receive[blocks, threads](idx, vals, self._received, self._first_value)
        blocks, threads = launch(self._n_blocks)
        kernels.peel_blocks[blocks, threads](
            self._block_ptr, self._block_codewords, *self._csr, self._received, self._first_value, self._known, self._coords
        )

    def host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(received, known, coords)`` copied to the host."""
        return self._received.copy_to_host(), self._known.copy_to_host(), self._coords.copy_to_host()

    @staticmethod
    def output(arr: np.ndarray):
        """A result where this backend's results live: a device copy of the host array."""
        return cuda.to_device(arr)

    def received(self) -> np.ndarray:
        return np.flatnonzero(self._received.copy_to_host())

    def reset(self) -> None:
        _zero(self._received, self._first_value, self._known, self._coords)
