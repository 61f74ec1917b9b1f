"""The cheap exact decoder: iterative peeling of codewords with one unknown coordinate."""

from __future__ import annotations

from typing import Any

import numpy as np

from lwpd._validation import check_real
from lwpd.codebook import Codebook
from lwpd.decoders._base import Decoder


class PeelingDecoder(Decoder):
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

    def _make_state(self, codebook: Codebook, backend: str) -> Any:
        if backend == "cuda":
            from lwpd.decoders._device import DevicePeelingState

            return DevicePeelingState(codebook)
        from lwpd.decoders._host import HostPeelingState

        return HostPeelingState(codebook)

    @property
    def known(self) -> np.ndarray:
        """Boolean mask of the coordinates recovered exactly, shape ``(n,)``."""
        return self._state.host()[1].astype(bool)

    def values(self) -> np.ndarray:
        """Recovered coordinates, NaN where a coordinate is still unknown."""
        _, known, coords = self._state.host()
        return self._state.output(np.where(known.astype(bool), coords, np.nan))

    def estimate(self, fill: float = 0.0) -> np.ndarray:
        """Recovered coordinates with ``fill`` (a finite real number; :meth:`values` gives NaN)
        where a coordinate is still unknown."""
        fill = check_real("fill", fill)
        _, known, coords = self._state.host()
        return self._state.output(np.where(known.astype(bool), coords, float(fill)))

    def recovered_fraction(self) -> float:
        """Fraction of coordinates recovered exactly."""
        return float(self._state.host()[1].mean())

    def __repr__(self) -> str:
        return f"PeelingDecoder(received={self._n_received}, known={int(self.known.sum())}/{self._codebook.dim})"
