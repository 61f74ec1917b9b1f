"""What every decoder shares: argument checks, then a hand-off to its backend's state (private)."""

from __future__ import annotations

import math
import numbers
import operator
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from lwpd import _backend, _config
from lwpd._validation import as_index_array, as_real_array, check_finite
from lwpd.codebook import Codebook, check_codebook


class Decoder(ABC):
    """Validate arrivals (one ``(index, value)`` or arrays of them) and fold them into the
    backend's state object, chosen once by :meth:`_make_state`; no method branches on the
    backend. Device arrays are handed to the state as they are (it validates them there).
    """

    def __init__(self, codebook: Codebook, backend: str = "cpu") -> None:
        self._codebook = check_codebook("codebook", codebook)
        self._n_codewords = codebook.n_codewords
        self._n_received = 0
        self._backend = _backend.resolve(backend)
        self._state = self._make_state(codebook, self._backend)

    @abstractmethod
    def _make_state(self, codebook: Codebook, backend: str) -> Any:
        """The state object that holds this decoder's results on ``backend``."""

    @property
    def backend(self) -> str:
        """``"cpu"`` or ``"cuda"``: where the decoder's state lives and its kernels run."""
        return self._backend

    @property
    def codebook(self) -> Codebook:
        """The codebook whose results are decoded."""
        return self._codebook

    @property
    def n_received(self) -> int:
        """Number of results folded in so far, repeats included."""
        return self._n_received

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
            (Projection decoder, CPU.) A codeword would arrive more than 65,535 times since
            the last :meth:`reset`, more than its count holds
            (``lwpd._config.DECODER_COUNT_DTYPE``). Nothing is folded in then.
        """
        one = self._one(indices, values)  # first: the common update(int, float) stays the cheapest call
        if one is not None:
            self._state.fold_one(*one)
            self._n_received += 1
            return
        if self._state.takes_device(indices, values):
            self._n_received += self._state.fold_device(indices, values)
            return
        idx, vals = self._many(indices, values)
        if idx.size:
            self._state.fold_many(idx, vals)
            self._n_received += int(idx.size)

    @property
    def received(self) -> np.ndarray:
        """Sorted indices of the distinct codewords received so far."""
        return self._state.received()

    def reset(self) -> None:
        """Forget every result (start a new gradient step)."""
        self._n_received = 0
        self._state.reset()

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
        n = self._n_codewords
        if not 0 <= j < n:
            raise IndexError(f"index must lie in [0, {n - 1}] (there are {n} codewords); got {j}")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"value must be a real number, got {type(value).__name__}")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"value must be finite, got {v} for codeword {j}")
        check_magnitude("value", abs(v))
        return j, v

    def _many(self, indices: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
        return validated_results(indices, values, self._n_codewords)


class HostOnlyState:
    """For states that live on the host: arrivals are always validated and converted by the
    decoder, never taken as device arrays."""

    @staticmethod
    def takes_device(indices: Any, values: Any) -> bool:
        return False

    def fold_device(self, indices: Any, values: Any) -> int:
        """Not reached (:meth:`takes_device` is False)."""
        raise TypeError("device arrays need backend='cuda'")


def validated_results(indices: Any, values: Any, n_codewords: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of arrivals checked as :meth:`Decoder.update` documents: int64 indices in range,
    finite float64 values of bounded magnitude, one per index."""
    idx = as_index_array("indices", indices, n_codewords)
    vals = as_real_array("values", values, ndim=(0, 1), keep_float32=False).reshape(-1)
    if vals.shape[0] != idx.shape[0]:
        raise ValueError(
            f"values must have one entry per index: got {idx.shape[0]} indices and {vals.shape[0]} values"
        )
    check_finite("values", vals)
    if vals.size:  # finite here: the extremes bound the magnitude, no temporary array
        check_magnitude("values", max(float(vals.max()), -float(vals.min())))
    return idx, np.ascontiguousarray(vals)


def check_magnitude(name: str, largest: float) -> None:
    """Refuse results so large that their sums or products with codeword entries overflow."""
    if largest > _config.VALUE_MAX_MAGNITUDE:
        raise ValueError(f"{name} must have magnitude at most {_config.VALUE_MAX_MAGNITUDE:g} "
                         f"(lwpd._config.VALUE_MAX_MAGNITUDE: sums of such results would overflow); got {largest:.3g}")
