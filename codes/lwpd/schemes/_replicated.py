"""LWPD on fractional-repetition groups: two workers hold the same data and stream
codewords of their group's gradient from complementary bases."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from lwpd import _defaults
from lwpd._validation import check_bool, check_choice, check_fraction, check_int
from lwpd.codebook import Codebook, Partition
from lwpd.constructions import block_codebook
from lwpd.cost import codeword_support, derivative_ops
from lwpd.schemes._base import RowMemory, Scheme, Task, curvature_shares, group_rows, result_pair
from lwpd.schemes._lwpd import codeword_chunk, joint_chunks


#: The second member's basis: the projective weight-2 codewords, or the unit vectors reversed.
SECOND_BASES = ("weight-2", "identity")


def complementary_bases(size: int, second: str = "weight-2") -> tuple[np.ndarray, np.ndarray]:
    """Two bases of ``R^size`` in the order their holders process them: the unit vectors
    ``e_0, e_1, ..., e_{s-1}`` for the first member, and for the second (``second=
    "weight-2"``) the weight-2 codewords ``e_{s-2} + e_{s-1}, e_{s-3} + e_{s-2}, ..., e_0 +
    e_1``, then ``e_0 - e_1`` (points of ``PG(s-1, 3)`` lifted to ``{0, +1, -1}``), or
    (``second="identity"``, the uncoded twin) the unit vectors in reverse order. For every
    ``p``, the first ``p`` of the first basis and the first ``s - p`` of the second span
    ``R^size``: the second's first ``s - p`` codewords restricted to coordinates ``p..s-1``
    are triangular with unit diagonal. So a group is exact as soon as its two members have
    together finished one basis' worth of codewords, whoever did more.

    Examples
    --------
    >>> first, second = complementary_bases(3)
    >>> second.astype(int).tolist()
    [[0, 1, 1], [1, 1, 0], [1, -1, 0]]
    >>> all(np.linalg.matrix_rank(np.vstack([first[:p], second[:3 - p]])) == 3 for p in range(4))
    True
    >>> complementary_bases(3, second="identity")[1].astype(int).tolist()
    [[0, 0, 1], [0, 1, 0], [1, 0, 0]]
    """
    size = check_int("size", size, minimum=1)
    check_choice("second", second, SECOND_BASES)
    first = np.eye(size)
    if second == "identity":
        return first, first[::-1].copy()
    if size == 1:
        return first, first.copy()
    second = np.zeros((size, size))
    for i in range(size - 1):
        second[i, size - 2 - i] = second[i, size - 1 - i] = 1.0
    second[-1, 0], second[-1, 1] = 1.0, -1.0
    return first, second


class ReplicatedLWPD(Scheme):
    """LWPD on fractional-repetition groups of two workers with complementary bases.

    Workers ``2g`` and ``2g + 1`` form group ``g`` and both hold the union of their two
    shards (as :class:`Replication` and fractional-repetition gradient coding do). Over
    blocks of ``block_size`` coordinates, the first member streams the directional
    derivatives of the group's gradient along the unit vectors and the second along a
    weight-2 basis (:func:`complementary_bases`), each in ``chunks`` results processed one
    after another in a fixed order, so that the first ``p`` codewords of one and the first
    ``b - p`` of the other span every block: **a group's block is exact as soon as its two
    members have finished one basis' worth between them** (each worker reads twice the rows
    of a shard, so a whole basis costs it two units of compute, as replication does, but
    with both members working the block is done after about 1.5). The master decodes each
    group on its own (projection) and averages, per block, the groups that spanned it,
    weighted by their rows; a block no group spanned takes the mean of the groups'
    projections -- with ``partial=True``; by default a step without memory has no estimate
    until every group spans every block (the exact gradient or nothing, as replication and
    gradient coding). With ``memory=True`` a group whose fresh codewords do not span a block fills
    it from the freshest of its kept values that span it (:class:`LWPD`'s memory, per group:
    codewords up to 1, 2, 4, ... steps old), so a group with one slow member still counts --
    its partner's late codewords usually span the block at age 1; the step rule of
    :func:`lwpd.train` applies.

    This is the candidate coded layout of issue 19 ("groups of r = 2 holding the same data,
    complementary bases"); the benchmark (``benchmarks/bench_stragglers.py``) reports how it
    fares.

    Parameters
    ----------
    block_size : int, default 8
        Coordinates per block.
    chunks : int, default 4
        Results per worker and step (at most ``block_size``).
    wait_for : float, default 0.75
        With ``memory=True``: a step waiting "until ready" also stops once this fraction of
        the chunks has arrived. Without memory it waits until every group spans every
        block (the exact gradient), as gradient coding does.
    memory : bool, default False
        Fill unspanned blocks of a group from its latest kept values (above).
    max_age : int, default 20
        With ``memory=True``: the oldest value (steps since its task was dispatched) a step
        may use.
    partial : bool, default False
        Without memory: decode what arrived when not every group spans (the row-weighted
        mean of the spanning groups per block, above) instead of returning no estimate.
        Biased where a missing group's data differs from the rest.
    second : {"weight-2", "identity"}, default "weight-2"
        The second member's basis: the projective weight-2 codewords, or the unit vectors in
        reverse order -- the uncoded twin, whose codewords touch one coordinate each and so
        cost less (:func:`complementary_bases`).

    Examples
    --------
    >>> from lwpd.schemes import ReplicatedLWPD
    >>> ReplicatedLWPD().name, ReplicatedLWPD(memory=True).name
    ('lwpd-fr', 'lwpd-fr')
    """

    name = "lwpd-fr"

    def __init__(self, block_size: int = 8, chunks: int = 4, wait_for: float = _defaults.WAIT_FOR, memory: bool = False,
                 max_age: int = _defaults.MEMORY_MAX_AGE, partial: bool = False, second: str = "weight-2") -> None:

        self.block_size = check_int("block_size", block_size, minimum=1)
        self.chunks = check_int("chunks", chunks, minimum=1)
        self.wait_for = check_fraction("wait_for", wait_for)
        self.memory = check_bool("memory", memory)
        self.max_age = check_int("max_age", max_age, minimum=0)
        self.partial = check_bool("partial", partial)
        self.second = check_choice("second", second, SECOND_BASES)

    def _bind(self, rng: np.random.Generator) -> None:
        from lwpd.decoders import ProjectionDecoder

        if self.n_workers % 2:
            raise ValueError(f"n_workers must be even for ReplicatedLWPD (groups of two workers), got {self.n_workers}")
        n = self.problem.n_params
        size = min(self.block_size, n)
        if self.chunks > size:
            raise ValueError(f"chunks ({self.chunks}) exceeds block_size ({size}): a chunk needs a codeword of each block")
        self._groups = group_rows(self.shards_, np.arange(self.n_workers).reshape(-1, 2))
        self._group_weights = np.array([rows.size for rows in self._groups], dtype=float) / self.problem.n_samples
        partition = Partition.uniform(n, size)
        self.codebook_ = block_codebook(lambda s: Codebook.from_dense(np.vstack(complementary_bases(s, self.second))),
                                        partition)
        # codeword k of block b is 2 s_b positions from the block's first codeword: member 0 owns
        # the first s_b, member 1 the next s_b, each cut into `chunks` runs in processing order
        first = np.concatenate([[0], np.cumsum(2 * partition.sizes)[:-1]])
        self._chunk_codewords = [[[] for _ in range(self.chunks)] for _ in range(2)]
        for start, s in zip(first, partition.sizes):
            for member in range(2):
                for c, part in enumerate(np.array_split(start + member * s + np.arange(s), self.chunks)):
                    self._chunk_codewords[member][c].append(part)
        self._chunk_codewords = [[np.concatenate(parts) for parts in member] for member in self._chunk_codewords]
        n_groups = len(self._groups)
        self._plan = []  # per worker: [(codewords, work, rerun work)] per chunk
        for worker in range(self.n_workers):
            rows = self._groups[worker // 2].size
            charged = []
            for c, indices in enumerate(self._chunk_codewords[worker % 2]):
                touched, weight = codeword_support(self.codebook_, indices)
                charged.append((indices, self._units(derivative_ops(rows, n, touched, weight, forward=c == 0)),
                                self._units(derivative_ops(rows, n, touched, weight))))
            self._plan.append(charged)
        self._memory = RowMemory(n_groups, len(self.codebook_), "the latest value of every (group, codeword)")
        self._curvature = curvature_shares(self.problem, self._groups)
        self._decoder = ProjectionDecoder(self.codebook_)
        self._sizes = partition.sizes
        self._coordinate_block = np.repeat(np.arange(partition.n_blocks), partition.sizes)
        self._step = -1
        self._staleness = (0.0, 0.0)
        self._spanned = np.zeros((n_groups, partition.n_blocks), dtype=bool)
        self._received = np.zeros((n_groups, len(self.codebook_)), dtype=bool)
        # without memory every received row is fresh: its codewords per (group, block), kept as
        # they arrive, so ready() after every arrival is no pass over all rows
        self._fresh_counts = np.zeros((n_groups, partition.n_blocks), dtype=np.int64)
        self._filled = 0  # (group, block) pairs with as many fresh codewords as coordinates
        self._block_first = first  # each block's first codeword

    def tasks(self, theta: np.ndarray) -> list[Task]:
        out = []
        for worker, charged in enumerate(self._plan):
            joint = functools.partial(joint_chunks, codeword_chunk)  # one per worker: its chunks may be computed together
            out.extend(Task(worker, codeword_chunk, (self.problem, theta, self.codebook_, indices, self._groups[worker // 2]),
                            work, floats=float(indices.size), key=(worker, c), rerun_work=rerun, joint=joint)
                       for c, (indices, work, rerun) in enumerate(charged))
        return out

    def begin(self) -> None:
        self._step += 1
        self._received[:] = False
        self._fresh_counts[:] = 0
        self._filled = 0

    def fold(self, worker: int, result: Any, age: int = 0) -> None:
        indices, values = result_pair(result, len(self.codebook_))
        group = int(worker) // 2
        self._memory.store(group, indices, values, self._step - int(age))
        if not self.memory:
            new = indices[~self._received[group, indices]]
            if new.size > 1 and not (new[1:] > new[:-1]).all():  # a chunk's codewords come sorted; count a repeat once
                new = np.unique(new)
            blocks = self.codebook_.block_of[new]
            counts, sizes = self._fresh_counts[group], self._sizes[blocks]
            short = counts[blocks] < sizes
            np.add.at(counts, blocks, 1)
            crossed = short & (counts[blocks] >= sizes)  # blocks this result filled (a block once per entry)
            if crossed.any():
                self._filled += int(np.unique(blocks[crossed]).size)
        self._received[group, indices] = True

    def _fresh(self) -> np.ndarray:
        """The rows this step decodes as fresh: received since it began (with memory, only
        those computed at this step's parameters; late ones are kept values)."""
        if self.memory:
            return self._received & (self._memory.computed == self._step)
        return self._received

    def _decode(self, group: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(estimate, spanned blocks)`` of one group from its codeword ``rows``."""
        self._decoder.reset()
        if rows.size:
            self._decoder.update(rows, self._memory.values[group, rows])
        return self._decoder.estimate(), self._decoder.block_ranks == self._sizes

    def _levels(self) -> list[int]:
        """Ages a group's blocks are filled from, freshest first: this step's codewords, then
        (with memory) kept values up to age 1, 2, 4, ... ``max_age``, so a block takes the
        freshest set of its group's codewords that spans it."""
        if not self.memory:
            return [0]
        return [0] + [a for a in (1, 2, 4, 8, 16, 32) if a < self.max_age] + ([self.max_age] if self.max_age else [])

    def estimate(self) -> np.ndarray | None:
        step, fresh = self._step, self._fresh()
        usable = self._memory.usable(step, self.max_age) if self.memory else fresh
        if not fresh.any() and not usable.any():
            return None
        n_groups, n_blocks = self._spanned.shape
        estimates = np.zeros((n_groups, self.problem.n_params))
        spanned = np.zeros((n_groups, n_blocks), dtype=bool)
        block_age = np.zeros((n_groups, n_blocks))  # mean age of the codewords behind each group's block
        ages = self._memory.ages(step)
        for g in range(n_groups):
            for level in self._levels():
                rows = np.flatnonzero(fresh[g] if level == 0 else usable[g] & (ages[g] <= level))
                x, spans = self._decode(g, rows)
                take = spans & ~spanned[g]
                if level == 0:
                    estimates[g] = x  # unspanned blocks keep the fresh projection (used if no group spans)
                else:
                    coords = take[self._coordinate_block]
                    estimates[g, coords] = x[coords]
                    blocks = self.codebook_.block_of[rows]
                    total = np.bincount(blocks, weights=ages[g, rows], minlength=n_blocks)
                    count = np.bincount(blocks, minlength=n_blocks)
                    block_age[g, take] = total[take] / count[take]
                spanned[g] |= take
                if spanned[g].all():
                    break
        self._spanned = spanned
        if not (self.memory or self.partial or spanned.all()):
            return None  # the exact gradient or nothing
        # per block: the groups that spanned it, by their rows; else every group's projection
        weights = self._group_weights[:, None] * np.where(spanned.any(axis=0), spanned, True)
        weights = weights / weights.sum(axis=0)
        self._staleness = (float((self._curvature[:, None] * block_age * (weights > 0)).sum(axis=0).max()),
                           float(block_age.max()))
        return (weights[:, self._coordinate_block] * estimates).sum(axis=0)

    def ready(self, received: int) -> bool:
        """Every group spans every block with this step's codewords (the exact gradient); with
        memory, also once ``wait_for`` of the chunks have arrived (kept values fill the rest)."""
        if self.memory and received >= math.ceil(self.wait_for * self.n_workers * self.chunks):
            return True
        if not self.memory:
            if self._filled < self._fresh_counts.size:  # too few to span somewhere: no need to decode
                return False
        elif (np.add.reduceat(self._fresh(), self._block_first, axis=1) < self._sizes).any():
            return False
        self.estimate()
        return bool(self._spanned.all())

    def staleness(self) -> tuple[float, float]:
        """``(staleness, oldest)`` in steps of the last estimate: per block ``sum_g c_g age``
        over the groups that filled it from memory (``c_g`` the group's curvature share), the
        worst block's value; 0 for blocks spanned by fresh codewords."""
        return self._staleness if self.memory else (0.0, 0.0)

    @property
    def exact_when_complete(self) -> bool:  # type: ignore[override]
        return not self.memory

    def exact(self) -> bool:
        """Without memory: every group spanned every block with this step's codewords."""
        return not self.memory and bool(self._spanned.all())

    def spanned(self) -> np.ndarray:
        """``(n_groups, n_blocks)``: which groups' blocks the last estimate had exactly."""
        return self._spanned.copy()

    def __repr__(self) -> str:
        extra = ((f", memory=True, max_age={self.max_age}" if self.memory else "") + (", partial=True" if self.partial else "")
                 + (f", second={self.second!r}" if self.second != "weight-2" else ""))
        return f"ReplicatedLWPD(block_size={self.block_size}, chunks={self.chunks}, wait_for={self.wait_for}{extra})"
