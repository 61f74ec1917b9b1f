"""The optimal decoder: least squares over whatever arrived, folded in as it arrives."""

from __future__ import annotations

from typing import Any

import numpy as np

from lwpd.codebook import Codebook
from lwpd.decoders._base import Decoder


class ProjectionDecoder(Decoder):
    """Optimal (least-squares) decoder that folds each result in the moment it arrives.

    For the received set ``S`` with values ``r_S`` the estimate is the minimum-norm
    least-squares solution ``g_hat = pinv(V_S) r_S``; with exact values it is the orthogonal
    projection of the true gradient onto ``span{v_j : j in S}``, so
    ``<g_hat, g> = ||g_hat||^2 >= 0`` and every partial decode is a descent direction.
    The rank is numerical: per block, directions whose singular value is below about
    ``sqrt(lwpd._config.RANK_RTOL)`` (1e-6) times the largest count as not received (NumPy's
    ``pinv`` uses a far smaller cut-off, so the two differ only for nearly dependent
    codewords, where the smaller cut-off amplifies noise by up to a million times).

    Each block keeps its received codewords as counts and sums of values; a single arrival
    re-solves only its own block (pivoted Cholesky of the block's ``b x b`` information
    matrix), so its cost depends on that block and never on ``n``. A batch of arrivals is
    only folded in, and the blocks it touched are solved once when the estimate (or the
    rank) is next read, so many batches between two reads cost one solve per block. The result does not
    depend on arrival order. A codeword that arrives again counts as a repeated measurement:
    the estimate is ``pinv`` of the stacked rows, repeats included.

    Parameters
    ----------
    codebook : Codebook
        The codebook whose directional derivatives arrive. Blocks of its partition are
        decoded independently; an unpartitioned codebook is one block (at most
        ``lwpd._config.MAX_DECODE_BLOCK`` coordinates; 32 on the CUDA backend).
    backend : {"cpu", "cuda", "auto"}, default "cpu"
        ``"cuda"`` keeps the state on an NVIDIA GPU and folds results in with numba.cuda
        kernels (one thread block per gradient block); :meth:`update` then also takes device
        arrays (numba, CuPy, torch CUDA) without a host round trip, and :meth:`estimate`
        returns a device array. ``"auto"`` uses the GPU when one is usable.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import ProjectionDecoder, projective_codebook
    >>> cb = projective_codebook(2, normalize=False)     # (1,0) (0,1) (1,1) (1,-1)
    >>> g = np.array([3.0, -1.0])
    >>> dec = ProjectionDecoder(cb)
    >>> dec.update(2, cb.encode(g)[2])                     # only <g, (1,1)> so far
    >>> dec.estimate().round(12).tolist()                 # the projection of g onto (1,1)
    [1.0, 1.0]
    >>> dec.update([3], cb.encode(g)[[3]])                 # now (1,-1) too: exact
    >>> dec.estimate().round(12).tolist(), dec.rank
    ([3.0, -1.0], 2)
    """

    def _make_state(self, codebook: Codebook, backend: str) -> Any:
        if backend == "cuda":
            from lwpd.decoders._device import DeviceProjectionState

            return DeviceProjectionState(codebook)
        from lwpd.decoders._host import HostProjectionState

        return HostProjectionState(codebook)

    def estimate(self) -> np.ndarray:
        """The decoded gradient ``pinv(V_S) r_S`` as a new float64 array of length ``n``
        (a device array on the CUDA backend)."""
        return self._state.estimate()

    @property
    def rank(self) -> int:
        """Dimension of the span of the received codewords (sum of :attr:`block_ranks`)."""
        return int(self.block_ranks.sum())

    @property
    def block_ranks(self) -> np.ndarray:
        """Numerical rank of the received codewords in each block, shape ``(n_blocks,)``."""
        return self._state.block_ranks()

    def recovered_fraction(self) -> float:
        """Fraction of the ``n`` dimensions spanned so far: ``rank / n``.

        Under an isotropic gradient prior this is the expected captured energy
        ``E ||P_S g||^2 / E ||g||^2``.
        """
        return self.rank / self._codebook.dim

    def __repr__(self) -> str:
        return f"ProjectionDecoder(received={self._n_received}, rank={self.rank}/{self._codebook.dim})"
