"""Argument checks shared by the public functions.

Every check raises an exception whose message names the argument and what is accepted,
so a user sees at once which input to fix.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from lwpd import _config


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise naming ``name`` and the accepted range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    if maximum is not None and value > maximum:
        bound = f"<= {maximum}" if minimum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_real(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Return ``value`` as a finite float, or raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_fraction(name: str, value: Any, *, zero: bool = False) -> float:
    """Return ``value`` as a float in ``(0, 1]`` (``[0, 1]`` with ``zero=True``: a
    probability), or raise naming ``name``."""
    value = check_real(name, value)
    if not (0.0 <= value if zero else 0.0 < value) or value > 1.0:
        raise ValueError(f"{name} must lie in {'[0, 1]' if zero else '(0, 1]'}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool if it is ``True`` or ``False`` (NumPy's too), else ``TypeError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def is_prime(q: int) -> bool:
    """Trial division; q is small (a field size)."""
    if q < 2:
        return False
    f = 2
    while f * f <= q:
        if q % f == 0:
            return False
        f += 1
    return True


def check_prime(name: str, value: Any) -> int:
    """Return ``value`` as an int if it is prime, else raise ``ValueError`` naming ``name``."""
    q = check_int(name, value, minimum=2)
    if not is_prime(q):
        raise ValueError(f"{name} must be a prime (2, 3, 5, 7, ...), got {q}")
    return q


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {accepted}, got {value!r}")
    return value


def as_real_array(name: str, value: Any, *, ndim: tuple[int, ...], keep_float32: bool = True) -> np.ndarray:
    """Convert to a real floating array with an allowed number of dimensions.

    float32 and float64 are kept as given (float32 only when ``keep_float32``); integer and
    boolean input becomes float64; complex, object and string input is a ``TypeError``.
    """
    if hasattr(value, "__cuda_array_interface__") and not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} is a GPU array; pass backend='cuda' (or copy it to the host for the CPU backend)"
        )
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in ndim:
        shapes = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name} must be {shapes}, got an array of shape {arr.shape}")
    allowed = _config.FLOAT_DTYPES if keep_float32 else (_config.DEFAULT_DTYPE,)
    if arr.dtype not in allowed:
        arr = arr.astype(_config.DEFAULT_DTYPE)
    return arr


def check_finite(name: str, arr: np.ndarray) -> None:
    """Raise ``ValueError`` if ``arr`` holds NaN or inf, naming the first bad position."""
    from lwpd._kernels import cpu

    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.size and not cpu.all_finite(flat):
        bad = int(np.flatnonzero(~np.isfinite(flat))[0])
        where = np.unravel_index(bad, arr.shape) if arr.ndim > 1 else (bad,)
        raise ValueError(f"{name} must be finite; found {flat[bad]} at index {tuple(int(i) for i in where)}")


def as_index_array(name: str, value: Any, upper: int) -> np.ndarray:
    """Convert to a 1-D int64 array of indices in ``[0, upper)``; ``IndexError`` if out of range."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "b":
            raise TypeError(f"{name} must hold integer indices, got a boolean array (use np.flatnonzero)")
        raise TypeError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= upper:
        bad = lo if lo < 0 else hi
        raise IndexError(f"{name} must lie in [0, {upper - 1}] (there are {upper}); got {bad}")
    return arr


def as_covariance(covariance: Any, dim: int) -> np.ndarray | None:
    """Validate a gradient prior covariance: None, a length-``dim`` variance vector, or a
    symmetric positive semi-definite ``(dim, dim)`` matrix."""
    if covariance is None:
        return None
    cov = as_real_array("covariance", covariance, ndim=(1, 2), keep_float32=False)
    check_finite("covariance", cov)
    if cov.ndim == 1:
        if cov.shape[0] != dim:
            raise ValueError(f"covariance (a variance vector) must have length {dim}, got {cov.shape[0]}")
        if (cov < 0).any():
            raise ValueError("covariance (a variance vector) must be non-negative")
        return cov
    if cov.shape != (dim, dim):
        raise ValueError(f"covariance must have shape ({dim}, {dim}), got {cov.shape}")
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
        raise ValueError("covariance must be symmetric")
    scale = max(float(np.abs(cov).max()), 1.0)
    if np.linalg.eigvalsh(cov).min() < -1e-10 * scale:
        raise ValueError("covariance must be positive semi-definite")
    return cov


def as_rng(name: str, seed: Any, default: int | None = None) -> np.random.Generator:
    """A NumPy Generator from ``None``, a non-negative int or a Generator.

    ``None`` gives fresh entropy, or the fixed seed ``default`` where results must be
    reproducible without one.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng(default)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be None, a non-negative integer or a numpy.random.Generator, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed}")
    return np.random.default_rng(int(seed))
