"""The LWPD scheme: workers return directional derivatives along projective codewords."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lwpd._validation import check_choice, check_int, check_real
from lwpd.schemes._base import Scheme, Task, codeword_derivatives


def _codeword_chunk(problem: Any, theta: np.ndarray, codebook: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of a worker's codewords: ``(indices, <grad f(theta), v_j>)``, so the master
    knows which codewords a result answers whichever chunk arrives first."""
    return indices, codeword_derivatives(problem, theta, codebook, indices)


def deal_codewords(
    block_of: np.ndarray, n_workers: int, chunks: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Deal codewords to workers: ``(codewords of each worker, its chunks)`` (private helper,
    shared by the LWPD scheme and the torch optimizer).

    Each block's codewords go to distinct workers (round-robin over the blocks in turn), so
    one straggler costs every block at most a codeword or so. A chunk is a random slice of
    its worker's codewords (sorted indices), so every chunk spans the blocks.
    """
    order = np.lexsort((rng.random(len(block_of)), block_of))
    owner = np.empty(len(order), dtype=np.int64)
    owner[order] = (np.arange(len(order)) + rng.integers(n_workers)) % n_workers
    # A stable sort by owner groups each worker's codewords in increasing index order.
    by_owner = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[by_owner], np.arange(n_workers + 1))
    worker_codewords = [by_owner[bounds[w] : bounds[w + 1]] for w in range(n_workers)]
    return worker_codewords, [
        [np.sort(chunk) for chunk in np.array_split(rng.permutation(part), chunks)] for part in worker_codewords
    ]


class LWPD(Scheme):
    """Lightweight projective derivative codes: tasks are codewords, grouped per worker.

    Each worker returns ``<grad f(theta), v_j>`` for its codewords (computed without forming
    the gradient); every result is folded into the decoder the moment it arrives, and the
    estimate is available from the first result on (a projection of the gradient, so always
    a descent direction).

    Parameters
    ----------
    codebook : Codebook, optional
        The codebook (dimension ``n_params``). By default
        ``block_codebook(projective_codebook(block_size, q, max_weight), Partition.uniform(n_params, block_size))``.
    block_size : int, default 8
        Coordinates per block of the default codebook.
    q : int, default 3
        Field size of the projective base.
    max_weight : int, default 2
        Largest Hamming weight of a base codeword.
    redundancy : float, optional
        Keep ``round(redundancy * block_size)`` codewords per block, chosen by ``compress``
        (default criterion ``"logdet"``); ``None`` keeps the whole projective base
        (``block_size**2`` codewords for q = 3, weight <= 2).
    compress : {"coherence", "frame_potential", "mutual_information", "logdet"}, optional
        Compression criterion used with ``redundancy``.
    decoder : {"projection", "peeling"}, default "projection"
    wait_for : float, default 0.75
        Fraction of the tasks (chunks) a step waits for when it waits "until ready".
    chunks : int, default 1
        Tasks per worker: each worker's codewords are split into ``chunks`` tasks that the
        worker runs one after another, each folded in the moment it finishes. With more
        than one, a slow worker still contributes the chunks it finished by a deadline
        instead of nothing; the total work is unchanged. (On a simulated cluster a
        worker's tasks run in order; an executor runs them as concurrently as it allows.)
    charge_forward : bool, default False
        Also charge each worker, per step, the forward pass its directional derivatives
        need: the scores ``x_i . theta`` of every row it reads, ``n_workers`` units (all
        ``m`` rows times all parameters), carried by its first chunk. The default cost model
        (rows read x codeword weight) leaves it out; charging it is the honest cost for
        the linear models of :mod:`lwpd.problems`, whose LWPD workers read every row.

    Examples
    --------
    >>> from lwpd.schemes import LWPD
    >>> LWPD(block_size=4, redundancy=2.0)
    LWPD(block_size=4, q=3, max_weight=2, redundancy=2.0, compress='logdet', decoder='projection', chunks=1, reassign=True, charge_forward=False)
    """

    name = "lwpd"

    def __init__(
        self,
        codebook: Any = None,
        block_size: int = 8,
        q: int = 3,
        max_weight: int = 2,
        redundancy: float | None = None,
        compress: str | None = None,
        decoder: str = "projection",
        wait_for: float = 0.75,
        chunks: int = 1,
        reassign: bool = True,
        charge_forward: bool = False,
    ) -> None:
        from lwpd.schemes._data_parallel import _check_fraction

        from lwpd.codebook import Codebook

        if codebook is not None and not isinstance(codebook, Codebook):
            raise TypeError(f"codebook must be a lwpd.Codebook or None, got {type(codebook).__name__}")
        self.codebook = codebook
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.q = check_int("q", q, minimum=2)
        self.max_weight = check_int("max_weight", max_weight, minimum=1)
        self.redundancy = None if redundancy is None else check_real("redundancy", redundancy, positive=True)
        if compress is not None:
            check_choice("compress", compress, ("coherence", "frame_potential", "mutual_information", "logdet"))
            if redundancy is None:
                raise ValueError("compress needs redundancy (how many codewords per coordinate to keep)")
        self.compress = compress or ("logdet" if redundancy is not None else None)
        self.decoder = check_choice("decoder", decoder, ("projection", "peeling"))
        self.wait_for = _check_fraction(wait_for)
        self.chunks = check_int("chunks", chunks, minimum=1)
        if not isinstance(reassign, (bool, np.bool_)):
            raise TypeError(f"reassign must be True or False, got {reassign!r}")
        self.reassign = bool(reassign)
        if not isinstance(charge_forward, (bool, np.bool_)):
            raise TypeError(f"charge_forward must be True or False, got {charge_forward!r}")
        self.charge_forward = bool(charge_forward)

    def _build_codebook(self) -> Any:
        from lwpd import Partition, block_codebook, projective_codebook
        from lwpd import compress as compress_codebook

        n = self.problem.n_params
        size = min(self.block_size, n)
        base = projective_codebook(size, q=self.q, max_weight=self.max_weight)
        if self.redundancy is not None:
            keep = int(min(len(base), max(1, round(self.redundancy * size))))
            base = compress_codebook(base, keep, criterion=self.compress)
        return block_codebook(base, Partition.uniform(n, size))

    def _bind(self, rng: np.random.Generator) -> None:
        from lwpd.decoders import PeelingDecoder, ProjectionDecoder

        n = self.problem.n_params
        if self.codebook is not None and self.codebook.dim != n:
            raise ValueError(f"codebook must have dimension {n} (the problem's n_params), got {self.codebook.dim}")
        self.codebook_ = self.codebook if self.codebook is not None else self._build_codebook()
        if len(self.codebook_) < self.n_workers:
            raise ValueError(f"the codebook has {len(self.codebook_)} codewords, fewer than n_workers ({self.n_workers})")
        self._rng = rng
        self._deal()
        smallest = min(len(part) for part in self._worker_codewords)
        if smallest < self.chunks:
            raise ValueError(f"chunks ({self.chunks}) exceeds the codewords of a worker ({smallest})")
        self._decoder = (ProjectionDecoder if self.decoder == "projection" else PeelingDecoder)(self.codebook_)

    def _deal(self) -> None:
        """Assign the codewords to workers and split each worker's share into chunks."""
        n = self.problem.n_params
        self._worker_codewords, chunks = deal_codewords(self.codebook_.block_of, self.n_workers, self.chunks, self._rng)
        weights = self.codebook_.weights
        forward = float(self.n_workers) if self.charge_forward else 0.0  # all m rows x all n parameters
        self._chunks = [
            [(chunk, self.n_workers * float(weights[chunk].sum()) / n + (forward if c == 0 else 0.0))
             for c, chunk in enumerate(parts)]
            for parts in chunks
        ]

    def tasks(self, theta: np.ndarray) -> list[Task]:
        return [
            Task(worker, _codeword_chunk, (self.problem, theta, self.codebook_, indices), work, key=(worker, c))
            for worker, chunks in enumerate(self._chunks)
            for c, (indices, work) in enumerate(chunks)
        ]

    def begin(self) -> None:
        if self.reassign:
            self._deal()
        self._decoder.reset()

    def fold(self, worker: int, result: Any) -> None:
        indices, values = result
        self._decoder.update(indices, values)

    def estimate(self) -> np.ndarray | None:
        return self._decoder.estimate() if self._decoder.n_received else None

    def ready(self, received: int) -> bool:
        return received >= math.ceil(self.wait_for * self.n_workers * self.chunks)

    def recovered_fraction(self) -> float:
        """Fraction of the gradient's dimensions the results of this step span (or peel)."""
        return self._decoder.recovered_fraction()

    def __repr__(self) -> str:
        if self.codebook is not None:
            return f"LWPD(codebook={self.codebook!r}, decoder={self.decoder!r})"
        return (
            f"LWPD(block_size={self.block_size}, q={self.q}, max_weight={self.max_weight}, "
            f"redundancy={self.redundancy}, compress={self.compress!r}, decoder={self.decoder!r}, chunks={self.chunks}, "
            f"reassign={self.reassign}, charge_forward={self.charge_forward})"
        )
