"""Decoders: fold workers' directional derivatives into a gradient estimate as they arrive.

:class:`ProjectionDecoder` is optimal (least squares over whatever arrived),
:class:`PeelingDecoder` is cheap and exact (erasure peeling), and :func:`decode` decodes a
set of results in one shot. Each decoder validates its arguments and hands them to a state
object of its backend -- ``_host`` (NumPy arrays, Numba kernels) or ``_device`` (numba.cuda)
-- with one interface, so no decoder method branches on the backend. ``_packing`` packs a
codebook for the kernels once per codebook.
"""

from lwpd.decoders.oneshot import decode
from lwpd.decoders.peeling import PeelingDecoder
from lwpd.decoders.projection import ProjectionDecoder

__all__ = ["ProjectionDecoder", "PeelingDecoder", "decode"]
