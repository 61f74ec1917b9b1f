"""GPU dispatch for encoding: validate, move to the device, launch the numba.cuda kernels (private).

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
    return cb.internals.memo("cuda", lambda: _upload(cb))


def _upload(cb) -> dict[str, Any]:
    kept = cb.internals.storage
    arrays: dict[str, Any] = {}
    if kept.base is not None and kept.tiled_blocks:
        ell_idx_t, ell_val_t = cb.internals.tile_ell(np.dtype(np.float64))
        if ell_idx_t.size <= _config.CUDA_SHARED_PATTERN:
            arrays["ell_idx_t"] = cuda.to_device(ell_idx_t.astype(np.int32))
            arrays["ell_val_t"] = cuda.to_device(np.ascontiguousarray(ell_val_t))
    if "ell_idx_t" in arrays:
        rest, first = kept.rest, kept.rows * kept.tiled_blocks
    else:  # no tile, or a base pattern too large for shared memory: everything as CSR
        rest, first = cb.internals.csr(), 0
    arrays["first"] = first
    if rest.n_rows:
        arrays["indptr"] = cuda.to_device(np.ascontiguousarray(rest.indptr))
        arrays["indices"] = cuda.to_device(np.ascontiguousarray(rest.indices))
        arrays["data"] = cuda.to_device(np.ascontiguousarray(rest.data, dtype=np.float64))
    return arrays


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
        kept = cb.internals.storage
        blocks, threads = launch(kept.tiled_blocks * kept.rows)
        kernels.encode_tiled[blocks, threads](
            g2, lay["ell_idx_t"], lay["ell_val_t"], int(cb.blocks.sizes[0]), kept.tiled_blocks, out2
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
