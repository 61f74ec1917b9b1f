"""Data-parallel baselines: each worker computes the gradient on a shard of the samples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lwpd._validation import check_int, check_real
from lwpd.cost import gradient_ops
from lwpd.schemes._base import PerWorkerResults, Task, shard_gradient, split_rows


def _check_fraction(value: float) -> float:
    value = check_real("wait_for", value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"wait_for must lie in (0, 1], got {value}")
    return value


class _Sharded(PerWorkerResults):
    """Shared machinery: ``n_workers`` shards, results weighted by shard size."""

    def _bind(self, rng: np.random.Generator) -> None:
        self._shards = split_rows(self.problem.n_samples, self.n_workers, rng)
        self._sizes = np.array([s.size for s in self._shards], dtype=float)
        self.begin()

    def tasks(self, theta: np.ndarray) -> list[Task]:
        n = self.problem.n_params
        return [
            Task(w, shard_gradient, (self.problem, theta, rows), self._units(gradient_ops(rows.size, n)), floats=n)
            for w, rows in enumerate(self._shards)
        ]

    def _weighted_mean(self) -> np.ndarray | None:
        """The results averaged by the sizes of their rows, in key order (so the estimate
        does not depend on the order of arrival)."""
        if not self._results:
            return None
        keys = sorted(self._results)
        weights = np.array([self._size_of(key) for key in keys], dtype=float)
        return np.tensordot(weights / weights.sum(), np.stack([self._results[key] for key in keys]), axes=1)

    def _size_of(self, key: Any) -> float:
        """Rows behind the result kept under ``key`` (a shard)."""
        return float(self._sizes[key])


class Uncoded(_Sharded):
    """Wait for every shard: the exact gradient, as slow as the slowest worker.

    Examples
    --------
    >>> from lwpd.schemes import Uncoded
    >>> Uncoded().name
    'uncoded'
    """

    name = "uncoded"

    def estimate(self) -> np.ndarray | None:
        return self._weighted_mean() if len(self._results) == self.n_workers else None


def _piece_gradient(problem: Any, theta: np.ndarray, rows: np.ndarray, piece: int) -> tuple[int, np.ndarray]:
    """One piece of a worker's shard: ``(piece, gradient over its rows)``."""
    return piece, problem.gradient(theta, rows=rows)


class IgnoreStragglers(_Sharded):
    """Use the shards that arrived, weighted by their sizes (the rest are ignored).

    An unbiased estimate of the gradient when stragglers are random, with the variance of a
    smaller mini-batch. With ``chunks > 1`` each worker splits its shard into that many
    pieces, processed one after another, and sends each piece's gradient the moment it is
    done (``n_params`` floats per piece): a slow worker's finished pieces count, at the price
    of ``chunks`` times the floats sent.

    Parameters
    ----------
    wait_for : float, default 0.75
        Fraction of the results (workers, or pieces with ``chunks > 1``) a step waits for
        when it waits "until ready".
    chunks : int, default 1
        Pieces per worker's shard (each needs at least one row).

    Examples
    --------
    >>> from lwpd.schemes import IgnoreStragglers
    >>> IgnoreStragglers(wait_for=0.5, chunks=4)
    IgnoreStragglers(wait_for=0.5, chunks=4)
    """

    name = "ignore"

    def __init__(self, wait_for: float = 0.75, chunks: int = 1) -> None:
        self.wait_for = _check_fraction(wait_for)
        self.chunks = check_int("chunks", chunks, minimum=1)

    def _bind(self, rng: np.random.Generator) -> None:
        super()._bind(rng)
        if self._sizes.min() < self.chunks:
            raise ValueError(f"chunks ({self.chunks}) exceeds the rows of a worker's shard ({int(self._sizes.min())})")
        self._pieces = [np.array_split(rows, self.chunks) for rows in self._shards]  # views: read-only like the shards
        self._piece_sizes = {(w, c): float(p.size) for w, parts in enumerate(self._pieces) for c, p in enumerate(parts)}

    def tasks(self, theta: np.ndarray) -> list[Task]:
        if self.chunks == 1:
            return super().tasks(theta)
        n = self.problem.n_params
        return [
            Task(w, _piece_gradient, (self.problem, theta, rows, c), self._units(gradient_ops(rows.size, n)), floats=n,
                 key=(w, c))
            for w, parts in enumerate(self._pieces)
            for c, rows in enumerate(parts)
        ]

    def fold(self, worker: int, result: Any) -> None:
        if self.chunks == 1:
            return super().fold(worker, result)
        piece, value = result
        self._results.setdefault((int(worker), int(piece)), np.asarray(value, dtype=float))

    def ready(self, received: int) -> bool:
        return received >= math.ceil(self.wait_for * self.n_workers * self.chunks)

    def _size_of(self, key: Any) -> float:
        return super()._size_of(key) if self.chunks == 1 else self._piece_sizes[key]

    def estimate(self) -> np.ndarray | None:
        return self._weighted_mean()

    def __repr__(self) -> str:
        return f"IgnoreStragglers(wait_for={self.wait_for}, chunks={self.chunks})"


class Replication(_Sharded):
    """Each of ``n_workers / r`` shards is computed by ``r`` workers; the first copy counts.

    Parameters
    ----------
    r : int
        Replication factor (>= 1); ``n_workers`` must be a multiple of ``r``.
    """

    name = "replication"

    def __init__(self, r: int = 2) -> None:
        self.r = check_int("r", r, minimum=1)

    def _bind(self, rng: np.random.Generator) -> None:
        if self.n_workers % self.r:
            raise ValueError(f"n_workers ({self.n_workers}) must be a multiple of r ({self.r}) for Replication")
        groups = split_rows(self.problem.n_samples, self.n_workers // self.r, rng)
        self._group_of = np.arange(self.n_workers) // self.r
        self._shards = [groups[g] for g in self._group_of]
        self._sizes = np.array([g.size for g in groups], dtype=float)
        self.begin()

    def _result_key(self, worker: int) -> int:
        return int(self._group_of[worker])  # the first copy of each shard counts

    def estimate(self) -> np.ndarray | None:
        return self._weighted_mean() if len(self._results) == self._sizes.size else None

    def __repr__(self) -> str:
        return f"Replication(r={self.r})"
