"""lwpd: lightweight projective derivative codes for coded, compressed, asynchronous
gradient descent (Soto, Ilmer, Guan, Li, ICML 2022).

A worker given codeword ``v`` returns one number, the directional derivative
``<grad f, v>``; the master decodes a gradient from whichever workers answered. This package
re-exports the public API only; adapters (torch, scikit-learn, Dask) are imported from their
own modules.
"""

from lwpd.codebook import Codebook, Partition
from lwpd._compress import compress
from lwpd.constructions import (
    block_codebook,
    grassmannian_codebook,
    hadamard_codebook,
    identity_codebook,
    projective_codebook,
    projective_count,
    random_codebook,
    simplex_codebook,
)
from lwpd.decoders import PeelingDecoder, ProjectionDecoder, decode
from lwpd.metrics import (
    captured_energy,
    coherence,
    frame_potential,
    logdet_information,
    min_angle,
    mutual_information,
    summary,
    welch_bound,
)

from lwpd.train import History, train

__version__ = "0.1.0"

__all__ = [
    "Codebook",
    "Partition",
    "block_codebook",
    "captured_energy",
    "coherence",
    "compress",
    "decode",
    "frame_potential",
    "grassmannian_codebook",
    "hadamard_codebook",
    "History",
    "identity_codebook",
    "logdet_information",
    "min_angle",
    "mutual_information",
    "PeelingDecoder",
    "projective_codebook",
    "projective_count",
    "ProjectionDecoder",
    "random_codebook",
    "simplex_codebook",
    "summary",
    "train",
    "welch_bound",
]
