"""Gradient coding that uses the finished work of partial stragglers (after Ramamoorthy,
Meng and Girimaji, NeurIPS 2024, arXiv:2405.19509; see :class:`PartialGradientCoding` for
how this implementation relates to the paper)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lwpd import _gradient_coding as gc
from lwpd import cost
from lwpd._validation import check_choice, check_int
from lwpd.schemes._base import MalformedResult, Scheme, Task, result_pair


def partition_chunk(problem: Any, theta: np.ndarray, partition: int, rows: np.ndarray) -> tuple[int, np.ndarray]:
    """One chunk of a worker's work: ``(partition, (m_k / m) grad_k)``, the size-weighted
    gradient of one data partition, tagged with the partition it answers."""
    return partition, (rows.size / problem.n_samples) * problem.gradient(theta, rows=rows)


def chunk_orders(n_workers: int, s: int, kind: str, order: str) -> list[np.ndarray]:
    """The partitions each worker processes, in its processing order (private helper).

    ``kind`` chooses which partitions a worker holds (the supports of the cyclic or the
    fractional-repetition gradient code: ``s + 1`` partitions, each held by ``s + 1``
    workers); ``order`` the order it works through them. ``"staggered"`` rotates the
    holders' orders so that the ``s + 1`` holders of every partition process it at
    ``s + 1`` different positions, one of them first; ``"sorted"`` is increasing partition
    index.
    """
    n = n_workers
    if kind == "frc":
        held = gc.partition_assignment(gc.frc_matrix(n, s))  # raises unless (s + 1) | n
        if order == "staggered":  # member r of a group starts at its group's r-th partition
            return [np.roll(parts, -(i % (s + 1))) for i, parts in enumerate(held)]
        return [np.sort(parts) for parts in held]
    cyclic = [(i + np.arange(s + 1, dtype=np.int64)) % n for i in range(n)]  # i, i + 1, ..., i + s
    return cyclic if order == "staggered" else [np.sort(parts) for parts in cyclic]


class PartialGradientCoding(Scheme):
    """Exact gradient coding whose workers report each data partition as they finish it.

    The samples are split into ``n`` partitions (``n`` = number of workers) and every
    worker holds ``s + 1`` of them, assigned as in gradient coding (``kind``), so each
    partition is held by ``s + 1`` different workers. Instead of one coded combination at
    the end, a worker works through its partitions one after another in a designed order
    and sends each partition's size-weighted gradient ``(m_k / m) g_k`` the moment it is
    done: one task (chunk) per partition, ``key=(worker, position)``. The master keeps the
    first copy of every partition and, as soon as every partition has arrived from some
    worker, returns their sum, the exact full gradient; before that there is no estimate.
    No linear system is solved, so decoding is exact up to the rounding of one sum.

    What it tolerates:

    * any ``s`` stragglers that send nothing, as gradient coding (the other ``n - s``
      workers hold every partition);
    * any mix of partial results that covers every partition: a slow worker's finished
      chunks count. With ``order="staggered"`` every partition is the *first* chunk of one
      of its holders, so with equal speeds the step ends after one chunk (``1 / (s + 1)``
      of a gradient-coding worker's time), and a partition is also recovered once a holder
      that has it at position ``j`` finishes ``j + 1`` chunks. The order matters: with
      ``order="sorted"`` and ``kind="frc"`` all holders of a group start on the same
      partition.

    The price is communication: a worker sends ``s + 1`` messages of ``n_params`` floats per
    step rather than one. Compute is charged by :mod:`lwpd.cost` for gradient coding: per
    chunk the partition's gradient plus its weighting, ``coded_combination_ops([m_k], n)``,
    so a worker's ``s + 1`` chunks cost what one gradient-coding worker's result does.

    Source and deviation: Ramamoorthy, Meng and Girimaji, "Leveraging partial stragglers
    within gradient coding" (NeurIPS 2024, arXiv:2405.19509). Only its abstract and
    introduction could be read; its protocol (how and when workers encode, and its
    algorithm for optimising the chunk order) could not. This class is the natural scheme
    the abstract describes -- uncoded per-chunk results decoded once every partition is
    covered, with a fixed staggered order -- and not the paper's exact construction.

    Parameters
    ----------
    s : int, default 1
        Stragglers tolerated (``0 <= s < n_workers``); each worker holds ``s + 1``
        partitions.
    kind : {"cyclic", "frc"}, default "cyclic"
        Worker ``i`` holds partitions ``i, ..., i + s (mod n)``, or the fractional
        repetition groups (needs ``(s + 1) | n_workers``).
    order : {"staggered", "sorted"}, default "staggered"
        Processing order of a worker's partitions (see above).

    Examples
    --------
    >>> from lwpd.schemes import PartialGradientCoding
    >>> PartialGradientCoding(2).name, PartialGradientCoding(1, kind="frc").name
    ('gc-partial', 'gc-partial-frc')
    """

    exact_when_complete = True

    def __init__(self, s: int = 1, kind: str = "cyclic", order: str = "staggered") -> None:
        self.s = check_int("s", s, minimum=0)
        self.kind = check_choice("kind", kind, ("cyclic", "frc"))
        self.order = check_choice("order", order, ("staggered", "sorted"))
        self.name = "gc-partial" + ("-frc" if kind == "frc" else "") + ("-sorted" if order == "sorted" else "")

    def _bind(self, rng: np.random.Generator) -> None:
        n = self.n_workers
        if self.s >= n:
            raise ValueError(f"s must be < n_workers ({n}), got {self.s}")
        problem = self.problem
        #: ``orders_[i]``: the partitions worker ``i`` processes, in order.
        self.orders_ = chunk_orders(n, self.s, self.kind, self.order)
        #: ``partitions_[k]``: the sample rows of partition ``k`` (the placement's shard ``k``).
        self.partitions_ = self.shards_
        m, p = problem.n_samples, problem.n_params
        self._plan = [
            [(int(k), self.partitions_[k], cost.units(cost.coded_combination_ops([self.partitions_[k].size], p), m, n, p))
             for k in parts]
            for parts in self.orders_
        ]
        self._held = [frozenset(int(k) for k in parts) for parts in self.orders_]
        self.begin()

    def tasks(self, theta: np.ndarray) -> list[Task]:
        p = float(self.problem.n_params)
        return [
            Task(worker, partition_chunk, (self.problem, theta, k, rows), work, floats=p, key=(worker, c))
            for worker, chunks in enumerate(self._plan)
            for c, (k, rows, work) in enumerate(chunks)
        ]

    def begin(self) -> None:
        self._parts: dict[int, np.ndarray] = {}
        self._sources: dict[int, int] = {}

    def fold(self, worker: int, result: Any) -> None:
        partition, value = result_pair(result, self.n_workers, self.problem.n_params)
        worker = int(worker)
        if partition not in self._held[worker]:
            raise MalformedResult(f"worker {worker} does not hold partition {partition} (it holds "
                                  f"{sorted(self._held[worker])})")
        if partition not in self._parts:  # every copy of a partition is the same vector
            self._parts[partition] = value
            self._sources[partition] = worker

    def estimate(self) -> np.ndarray | None:
        if not self.exact():
            return None
        # Summed in partition order, so the estimate does not depend on arrival order.
        return np.sum([self._parts[k] for k in range(self.n_workers)], axis=0)

    def ready(self, received: int) -> bool:
        return self.exact()

    def exact(self) -> bool:
        return len(self._parts) == self.n_workers

    def sources(self) -> dict[int, int]:
        """``{partition: worker}``: whose copy of each partition received so far was used."""
        return dict(self._sources)

    def __repr__(self) -> str:
        return f"PartialGradientCoding(s={self.s}, kind={self.kind!r}, order={self.order!r})"
