"""GPU dispatch: validate, move to the device, launch the numba.cuda kernels (private).

Imported only when a caller asks for ``backend="cuda"`` (or ``"auto"`` finds a GPU).
Host (NumPy) inputs are copied to the device and results copied back; device inputs (numba
device arrays, or anything exposing ``__cuda_array_interface__``) are used without copies
and the result stays on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from lwpd import _config
from lwpd._backend import as_device_array, check_finite_device, is_device_array, launch
from lwpd._kernels import cuda as kernels
from lwpd._validation import as_real_array, check_finite


def device_copy(arr):
    """A new device array with the contents of the device array ``arr``."""
    out = cuda.device_array(arr.shape, dtype=arr.dtype)
    out.copy_to_device(arr)
    return out


def device_layout(cb) -> dict[str, Any]:
    """The codebook's arrays on the device, uploaded once per codebook and cached."""
    cached = cb._cache.get("cuda")
    if cached is None:
        cached = {}
        if cb._tile is not None and cb._tile_blocks:
            ell_idx_t, ell_val_t = cb._tile_ell(np.dtype(np.float64))
            if ell_idx_t.size <= _config.CUDA_SHARED_PATTERN:
                cached["ell_idx_t"] = cuda.to_device(ell_idx_t.astype(np.int32))
                cached["ell_val_t"] = cuda.to_device(np.ascontiguousarray(ell_val_t))
        if "ell_idx_t" in cached:
            rest, first = cb._rest, cb._tile_rows * cb._tile_blocks
        else:  # no tile, or a base pattern too large for shared memory: everything as CSR
            rest, first = cb._csr(), 0
        cached["first"] = first
        if rest.n_rows:
            cached["indptr"] = cuda.to_device(np.ascontiguousarray(rest.indptr))
            cached["indices"] = cuda.to_device(np.ascontiguousarray(rest.indices))
            cached["data"] = cuda.to_device(np.ascontiguousarray(rest.data, dtype=np.float64))
        cb._cache["cuda"] = cached
    return cached


def encode(cb, g: Any, out: Any = None):
    """``Codebook.encode`` on the GPU; see its docstring for the semantics."""
    on_device = is_device_array(g)
    if on_device:
        dev_g = as_device_array(g)
        if dev_g.dtype not in _config.FLOAT_DTYPES:
            raise TypeError(f"g must be float32 or float64 on the device, got {dev_g.dtype}")
        if dev_g.ndim not in (1, 2):
            raise ValueError(f"g must be 1-D or 2-D, got an array of shape {dev_g.shape}")
    else:
        host = as_real_array("g", g, ndim=(1, 2))
    shape = tuple(dev_g.shape) if on_device else host.shape
    if shape[-1] != cb.dim:
        raise ValueError(f"g must have length {cb.dim} (the codebook dimension) along its last axis, got shape {shape}")
    if on_device:
        check_finite_device("g", dev_g)
    else:
        check_finite("g", host)
        dev_g = cuda.to_device(np.ascontiguousarray(host))
    rows = 1 if len(shape) == 1 else shape[0]
    dtype = dev_g.dtype
    result_shape = (cb.n_codewords,) if len(shape) == 1 else (rows, cb.n_codewords)
    if out is None:
        dev_out = cuda.device_array(result_shape, dtype=dtype)
    else:
        out_ok = is_device_array(out) if on_device else isinstance(out, np.ndarray)
        where = "a device array" if on_device else "a numpy array"
        if not out_ok or tuple(out.shape) != result_shape or out.dtype != dtype:
            raise ValueError(f"out must be {where} of shape {result_shape} and dtype {dtype}")
        dev_out = as_device_array(out) if on_device else cuda.device_array(result_shape, dtype=dtype)
    g2 = dev_g.reshape(rows, cb.dim)
    out2 = dev_out.reshape(rows, cb.n_codewords)
    lay = device_layout(cb)
    if "ell_idx_t" in lay:
        m = cb._tile_rows
        blocks, threads = launch(cb._tile_blocks * m)
        kernels.encode_tiled[blocks, threads](
            g2, lay["ell_idx_t"], lay["ell_val_t"], int(cb.blocks.sizes[0]), cb._tile_blocks, out2
        )
    if "indptr" in lay:
        blocks, threads = launch(lay["indptr"].shape[0] - 1)
        kernels.encode_csr[blocks, threads](g2, lay["indptr"], lay["indices"], lay["data"], lay["first"], out2)
    if on_device:
        return dev_out if out is None else out
    host_out = dev_out.copy_to_host()
    if out is not None:
        out[...] = host_out
        return out
    return host_out


# ---------------------------------------------------------------------------- decoders
def _device_results(indices: Any, values: Any, n_codewords: int):
    """Validate device-resident arrivals on the device; returns numba views."""
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
        kernels.count_bad_indices[blocks, threads](idx, n_codewords, flag)
        bad = int(flag.copy_to_host()[0])
        if bad:
            raise IndexError(f"indices must lie in [0, {n_codewords - 1}] (there are {n_codewords}); {bad} do not")
        check_finite_device("values", vals)
    return idx, vals


def _as_device_results(decoder, indices: Any, values: Any):
    """Arrivals as device arrays: device input validated in place, host input validated on
    the host (the decoder's usual checks) and copied over."""
    if is_device_array(indices) or is_device_array(values):
        return _device_results(indices, values, decoder._n_codewords)
    one = decoder._one(indices, values)
    idx, vals = (np.array([one[0]]), np.array([one[1]])) if one is not None else decoder._many(indices, values)
    return cuda.to_device(idx.astype(np.int64)), cuda.to_device(vals.astype(np.float64))


def _zero(*arrays) -> None:
    """Zero 1-D device arrays in place, on the device."""
    for arr in arrays:
        blocks, threads = launch(arr.shape[0])
        kernels.fill[blocks, threads](arr, 0)


class ProjectionState:
    """Device-resident state of a projection decoder (counts, sums, ranks, estimate)."""

    def __init__(self, cb) -> None:
        from lwpd.decoders import _layout

        largest = int(cb.blocks.sizes.max())
        if largest > _config.CUDA_MAX_DECODE_BLOCK:
            raise ValueError(
                f"codebook has a block of {largest} coordinates; the CUDA decoders accept blocks of at most "
                f"{_config.CUDA_MAX_DECODE_BLOCK} (use a finer Partition, or backend='cpu')"
            )
        lay = _layout(cb)
        ints, bounds, floats = lay.ints, lay.bounds, lay.floats
        part = [ints[bounds[i] : bounds[i + 1]] for i in range(8)]
        self._arrays = [cuda.to_device(np.ascontiguousarray(a)) for a in part]
        split = int(bounds[9])
        self._tdat = cuda.to_device(np.ascontiguousarray(floats[:split]))
        self._rdat = cuda.to_device(np.ascontiguousarray(floats[split:]))
        self._tile_blocks = int(bounds[10])
        self._m = part[1].shape[0] - 1
        self._n_blocks = cb.blocks.n_blocks
        self.counts = cuda.device_array(cb.n_codewords, dtype=np.int64)
        self.sums = cuda.device_array(cb.n_codewords)
        self.ranks = cuda.device_array(self._n_blocks, dtype=np.int64)
        self.x = cuda.device_array(cb.dim)
        self._dirty = cuda.device_array(self._n_blocks, dtype=np.int8)
        self.reset()

    def fold(self, idx, vals) -> None:
        offsets, tptr, tidx, rptr, ridx, order, gptr, rest_block = self._arrays
        if idx.shape[0] == 0:
            return
        blocks, threads = launch(idx.shape[0])
        kernels.fold_in[blocks, threads](idx, vals, self.counts, self.sums, self._m, self._tile_blocks, rest_block, self._dirty)
        blocks = max(1, min(_config.CUDA_MAX_BLOCKS, self._n_blocks))
        threads = min(_config.CUDA_THREADS_PER_BLOCK, 64)
        kernels.solve_blocks[blocks, threads](
            self._dirty, offsets, tptr, tidx, self._tdat, self._tile_blocks, rptr, ridx, self._rdat, order, gptr,
            self.counts, self.sums, _config.RANK_RTOL, self.ranks, self.x,
        )

    def reset(self) -> None:
        _zero(self.counts, self.sums, self.ranks, self.x, self._dirty)


class PeelingState:
    """Device-resident state of a peeling decoder."""

    def __init__(self, cb) -> None:
        csr = cb._csr()
        order = np.argsort(cb.block_of, kind="stable")
        counts = np.bincount(cb.block_of, minlength=cb.blocks.n_blocks)
        self._block_ptr = cuda.to_device(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self._block_codewords = cuda.to_device(order.astype(np.int64))
        self._csr = [cuda.to_device(np.ascontiguousarray(a)) for a in (csr.indptr, csr.indices, csr.data.astype(np.float64))]
        self._n_blocks = cb.blocks.n_blocks
        self.received = cuda.device_array(cb.n_codewords, dtype=np.int32)
        self.first_value = cuda.device_array(cb.n_codewords)
        self.known = cuda.device_array(cb.dim, dtype=np.uint8)
        self.coords = cuda.device_array(cb.dim)
        self.reset()

    def fold(self, idx, vals) -> None:
        if idx.shape[0] == 0:
            return
        blocks, threads = launch(idx.shape[0])
        kernels.receive[blocks, threads](idx, vals, self.received, self.first_value)
        blocks, threads = launch(self._n_blocks)
        kernels.peel_blocks[blocks, threads](
            self._block_ptr, self._block_codewords, *self._csr, self.received, self.first_value, self.known, self.coords
        )

    def reset(self) -> None:
        _zero(self.received, self.first_value, self.known, self.coords)
