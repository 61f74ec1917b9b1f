"""One-shot decoding of a set of results, in parallel over blocks."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from lwpd import _backend
from lwpd._validation import check_choice
from lwpd.codebook import Codebook, check_codebook
from lwpd.decoders._base import validated_results
from lwpd.decoders._packing import packed_codebook
from lwpd.decoders.peeling import PeelingDecoder
from lwpd.decoders.projection import ProjectionDecoder

_ONE_SHOT_LOCK = threading.Lock()


def decode(codebook: Codebook, indices: Any, values: Any, method: str = "projection", backend: str = "cpu") -> np.ndarray:
    """Decode a gradient from a set of results in one shot, in parallel over blocks.

    Parameters
    ----------
    codebook : Codebook
    indices : array_like of int
        Indices of the codewords whose results arrived (repeats allowed).
    values : array_like of float
        The results ``<g, v_j>``, one per index.
    method : {"projection", "peeling"}, default "projection"
        ``"projection"``: minimum-norm least squares ``pinv(V_S) r_S`` (optimal).
        ``"peeling"``: exact iterative peeling; unrecovered coordinates are 0.
    backend : {"cpu", "cuda", "auto"}, default "cpu"
        ``"cuda"`` decodes on an NVIDIA GPU; the result is a NumPy array for host inputs and
        stays on the device for device inputs.

    Returns
    -------
    numpy.ndarray, shape (n,)
        The float64 gradient estimate.

    Notes
    -----
    Only the blocks with arrivals are solved, so the cost follows what arrived, not the
    codebook's size. The per-codeword counts and sums this needs (10 bytes per codeword) are
    kept with the codebook after the first call and reused, only the entries a call touched
    being cleared; a call from a second thread at the same moment uses fresh ones.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import decode, projective_codebook
    >>> cb = projective_codebook(3, max_weight=2)
    >>> g = np.array([1.0, -2.0, 0.5])
    >>> received = [0, 4, 7, 8]                            # (1,0,0) (1,-1,0) (0,1,1) (0,1,-1)
    >>> np.allclose(decode(cb, received, cb.encode(g)[received]), g)
    True
    """
    check_choice("method", method, ("projection", "peeling"))
    check_codebook("codebook", codebook)
    on_host = _backend.resolve(backend) == "cpu"
    if method == "projection" and on_host:
        return _project_once(codebook, indices, values)
    dec = (PeelingDecoder if method == "peeling" else ProjectionDecoder)(codebook, backend=backend)
    dec.update(indices, values)
    result = dec.estimate()
    on_device = _backend.is_device_array(indices) or _backend.is_device_array(values)
    # device results stay on the device for device inputs and come back for host inputs
    return result if on_device or not _backend.is_device_array(result) else result.copy_to_host()


def _project_once(codebook: Codebook, indices: Any, values: Any) -> np.ndarray:
    """The projection decode on the host, reusing a per-codebook state's per-codeword counts
    and sums and clearing only the entries touched: fresh all-codeword scratch costs a page
    fault per page touched, more than solving a few blocks. Another thread decoding at the
    same moment gets fresh scratch instead of waiting."""
    from lwpd.decoders._host import HostProjectionState

    idx, vals = validated_results(indices, values, codebook.n_codewords)
    if not _ONE_SHOT_LOCK.acquire(blocking=False):
        return HostProjectionState(codebook).decode_once(idx, vals)
    try:
        state = codebook.internals.memo("one_shot_state", lambda: HostProjectionState(codebook))
        if state.packed is not packed_codebook(codebook):  # a changed setting repacked the codebook
            state = codebook.internals.replace("one_shot_state", HostProjectionState(codebook))
        return state.decode_once(idx, vals)
    finally:
        _ONE_SHOT_LOCK.release()
