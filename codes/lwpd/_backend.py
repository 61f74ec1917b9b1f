"""Choosing a compute backend and moving arrays to it.

``backend="cpu"`` (the default) runs the Numba CPU kernels; ``"cuda"`` the numba.cuda kernels
on an NVIDIA GPU; ``"auto"`` the GPU when one is usable, else the CPU. numba.cuda is imported
only here and only when a backend other than "cpu" is asked for, so ``import lwpd`` never
touches CUDA.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lwpd import _config
from lwpd._validation import check_choice

BACKENDS = ("cpu", "cuda", "auto")


def cuda_available() -> bool:
    """Whether numba.cuda can run kernels here (a GPU, or the CUDA simulator)."""
    from numba import cuda

    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver is as good as no device
        return False


def resolve(backend: Any) -> str:
    """``"cpu"`` or ``"cuda"`` for a requested backend; ``RuntimeError`` if CUDA is asked for
    and there is no usable device."""
    check_choice("backend", backend, BACKENDS)
    if backend == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if backend == "auto":
        return "cpu"
    raise RuntimeError(
        "backend='cuda' was requested but no CUDA device was found (numba.cuda.is_available() is "
        "False). Use backend='cpu' (the default), or backend='auto' to use a GPU only when present."
    )


def is_device_array(value: Any) -> bool:
    """True for numba device arrays and any object exposing ``__cuda_array_interface__``
    (CuPy arrays, torch CUDA tensors)."""
    if isinstance(value, np.ndarray):
        return False
    if hasattr(value, "__cuda_array_interface__"):
        return True
    from numba import cuda

    return bool(cuda.devicearray.is_cuda_ndarray(value))  # also the simulator's fake arrays


def as_device_array(value: Any):
    """A numba view of a device array, without copying (the simulator's arrays as they are)."""
    from numba import cuda

    if cuda.devicearray.is_cuda_ndarray(value):
        return value
    return cuda.as_cuda_array(value)


def launch(n_items: int) -> tuple[int, int]:
    """``(blocks, threads)`` for a grid-stride kernel over ``n_items`` items."""
    threads = _config.CUDA_THREADS_PER_BLOCK
    blocks = max(1, min(_config.CUDA_MAX_BLOCKS, math.ceil(n_items / threads)))
    return blocks, threads


def check_finite_device(name: str, arr: Any) -> None:
    """Raise ``ValueError`` naming ``name`` if the device array holds NaN or inf."""
    from numba import cuda

    from lwpd._kernels import cuda as kernels

    flat = arr.reshape(arr.size) if arr.ndim > 1 else arr
    flag = cuda.to_device(np.zeros(1, dtype=np.int64))
    blocks, threads = launch(flat.shape[0])
    kernels.count_non_finite[blocks, threads](flat, flag)
    bad = int(flag.copy_to_host()[0])
    if bad:
        raise ValueError(f"{name} must be finite; found {bad} NaN or inf entries")
