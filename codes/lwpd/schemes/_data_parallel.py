"""Data-parallel baselines: each worker computes the gradient on a shard of the samples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lwpd import _defaults
from lwpd._validation import check_bool, check_choice, check_fraction, check_int, check_real
from lwpd.cost import gradient_ops
from lwpd.schemes._base import (PerWorkerResults, RowMemory, Task, curvature_shares, group_rows, result_pair,
                                result_vector, shard_gradient)


class _Sharded(PerWorkerResults):
    """Shared machinery: ``n_workers`` shards, results weighted by shard size."""

    def _bind(self, rng: np.random.Generator) -> None:
        self._shards = self.shards_
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
    exact_when_complete = True

    def estimate(self) -> np.ndarray | None:
        return self._weighted_mean() if self.exact() else None

    def exact(self) -> bool:
        return len(self._results) == self.n_workers


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

    With ``memory=True`` it is the **incremental aggregated gradient** (IAG: Blatt, Hero and
    Gauchman 2007; Gurbuzbalaban, Ozdaglar and Parrilo 2017) at the granularity of workers
    (or pieces): the master keeps every shard's latest gradient across steps and steps with
    their size-weighted mean, fresh where a shard answered this step and the last value
    received otherwise (values older than ``max_age`` steps are left out). A slow worker is
    never cancelled: it works on, and its gradient is folded in when it arrives (see
    :func:`lwpd.train` for the step rule). With every shard answering every step it is the
    exact gradient; with persistent stragglers on non-i.i.d. shards it removes the bias of
    ignoring them. It costs the master ``n_workers * chunks * n_params`` stored floats.

    Parameters
    ----------
    wait_for : float, default 0.75
        Fraction of the results (workers, or pieces with ``chunks > 1``) a step waits for
        when it waits "until ready".
    chunks : int, default 1
        Pieces per worker's shard (each needs at least one row).
    memory : bool, default False
        Keep every shard's (piece's) latest gradient across steps (IAG, above).
    max_age : int, default 20
        With ``memory=True``: the oldest value (in steps since its task was dispatched) a
        step may use; a task whose result would be older is cancelled and its worker freed.

    Examples
    --------
    >>> from lwpd.schemes import IgnoreStragglers
    >>> IgnoreStragglers(wait_for=0.5, chunks=4)
    IgnoreStragglers(wait_for=0.5, chunks=4)
    >>> IgnoreStragglers(memory=True).name
    'iag'
    """

    def __init__(self, wait_for: float = _defaults.WAIT_FOR, chunks: int = 1, memory: bool = False,
                 max_age: int = _defaults.MEMORY_MAX_AGE) -> None:
        self.wait_for = check_fraction("wait_for", wait_for)
        self.chunks = check_int("chunks", chunks, minimum=1)
        self.memory = check_bool("memory", memory)
        self.max_age = check_int("max_age", max_age, minimum=0)
        self.name = "iag" if self.memory else "ignore"

    def _bind(self, rng: np.random.Generator) -> None:
        self._step = -1
        super()._bind(rng)
        if self._sizes.min() < self.chunks:
            raise ValueError(f"chunks ({self.chunks}) exceeds the rows of a worker's shard ({int(self._sizes.min())})")
        self._pieces = [np.array_split(rows, self.chunks) for rows in self._shards]  # views: read-only like the shards
        self._piece_sizes = {(w, c): float(p.size) for w, parts in enumerate(self._pieces) for c, p in enumerate(parts)}
        if self.memory:
            self._memory = RowMemory(self.n_workers * self.chunks, self.problem.n_params, "each shard's last gradient")
            pieces = [p for parts in self._pieces for p in parts]
            self._group_sizes = np.array([p.size for p in pieces], dtype=float)
            self._curvature = curvature_shares(self.problem, pieces)
            self._used = (np.zeros(0), np.zeros(0))  # (curvature shares, ages) of the last estimate

    def begin(self) -> None:
        if self.memory:
            self._step += 1  # the memory is kept: only the step advances
            self._results = {}
            return
        super().begin()

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

    def fold(self, worker: int, result: Any, age: int = 0) -> None:
        n = self.problem.n_params
        piece, value = (0, result_vector(result, n)) if self.chunks == 1 else result_pair(result, self.chunks, n)
        if self.memory:
            group = int(worker) * self.chunks + piece
            self._memory.store(group, slice(None), value, self._step - int(age))
        else:
            self._results.setdefault(int(worker) if self.chunks == 1 else (int(worker), piece), value)

    def ready(self, received: int) -> bool:
        return received >= math.ceil(self.wait_for * self.n_workers * self.chunks)

    @property
    def exact_when_complete(self) -> bool:  # type: ignore[override]
        return not self.memory

    def exact(self) -> bool:
        """Every shard (piece) answered this step; never with memory (kept values may be stale)."""
        return not self.memory and len(self._results) == self.n_workers * self.chunks

    def _size_of(self, key: Any) -> float:
        return super()._size_of(key) if self.chunks == 1 else self._piece_sizes[key]

    def estimate(self) -> np.ndarray | None:
        if not self.memory:
            return self._weighted_mean()
        used = self._memory.usable(self._step, self.max_age)[:, 0]
        if not used.any():
            return None
        weights = self._group_sizes[used] / self._group_sizes[used].sum()
        self._used = (self._curvature[used], self._memory.ages(self._step)[used, 0].astype(float))
        return weights @ self._memory.values[used]

    def staleness(self) -> tuple[float, float]:
        """With ``memory=True``: ``(sum_g c_g age_g, oldest age)`` over the gradients the
        last estimate used, ``c_g`` each shard's curvature share
        (:func:`~lwpd.schemes._base.curvature_shares`; the step rule of :func:`lwpd.train`)."""
        weights, ages = self._used if self.memory else (np.zeros(0), np.zeros(0))
        return (float(weights @ ages), float(ages.max())) if ages.size else (0.0, 0.0)

    def __repr__(self) -> str:
        extra = f", memory=True, max_age={self.max_age}" if self.memory else ""
        return f"IgnoreStragglers(wait_for={self.wait_for}, chunks={self.chunks}{extra})"


class Replication(_Sharded):
    """Each of ``n_workers / r`` shards is computed by ``r`` workers; the first copy counts.

    Parameters
    ----------
    r : int
        Replication factor (>= 1); ``n_workers`` must be a multiple of ``r``.
    """

    name = "replication"
    exact_when_complete = True

    def __init__(self, r: int = 2) -> None:
        self.r = check_int("r", r, minimum=1)

    def _bind(self, rng: np.random.Generator) -> None:
        if self.n_workers % self.r:
            raise ValueError(f"n_workers ({self.n_workers}) must be a multiple of r ({self.r}) for Replication")
        # group g holds the union of its r workers' shards, as gradient coding's fractional repetition
        groups = group_rows(self.shards_, np.arange(self.n_workers).reshape(-1, self.r))
        self._group_of = np.arange(self.n_workers) // self.r
        self._shards = [groups[g] for g in self._group_of]
        self._sizes = np.array([g.size for g in groups], dtype=float)
        self.begin()

    def _result_key(self, worker: int) -> int:
        return int(self._group_of[worker])  # the first copy of each shard counts

    def estimate(self) -> np.ndarray | None:
        return self._weighted_mean() if self.exact() else None

    def exact(self) -> bool:
        return len(self._results) == self._sizes.size

    def __repr__(self) -> str:
        return f"Replication(r={self.r})"


class RobustAggregation(_Sharded):
    """Data-parallel gradients aggregated by a Byzantine-robust rule instead of the mean.

    Each worker returns its shard's gradient (as :class:`~lwpd.schemes.IgnoreStragglers`);
    the estimate is the coordinate-wise ``"median"`` or the coordinate-wise ``"trimmed_mean"``
    (dropping the ``trim`` fraction of largest and of smallest values per coordinate) of the
    results that arrived (Yin, Chen, Ramchandran, Bartlett, ICML 2018). Robust to a minority
    of liars, but biased when shards differ, and it never says which workers lied.

    Parameters
    ----------
    rule : {"median", "trimmed_mean"}, default "median"
    trim : float, default 0.1
        With ``"trimmed_mean"``: fraction trimmed at each end, in ``[0, 0.5)``.
    wait_for : float, default 1.0
        Fraction of the workers a step waits for when it waits "until ready".

    Examples
    --------
    >>> from lwpd.schemes import RobustAggregation
    >>> RobustAggregation("trimmed_mean", trim=0.2)
    RobustAggregation(rule='trimmed_mean', trim=0.2, wait_for=1.0)
    """

    def __init__(self, rule: str = "median", trim: float = 0.1, wait_for: float = 1.0) -> None:

        self.rule = check_choice("rule", rule, ("median", "trimmed_mean"))
        trim = check_real("trim", trim, nonnegative=True)
        if trim >= 0.5:
            raise ValueError(f"trim must lie in [0, 0.5), got {trim}")
        self.trim = trim
        self.wait_for = check_fraction("wait_for", wait_for)
        self.name = rule

    def estimate(self) -> np.ndarray | None:
        if not self._results:
            return None
        stacked = np.stack([self._results[key] for key in sorted(self._results)])
        if self.rule == "median":
            return np.median(stacked, axis=0)
        from scipy.stats import trim_mean

        return trim_mean(stacked, self.trim, axis=0)

    def ready(self, received: int) -> bool:
        return received >= math.ceil(self.wait_for * self.n_workers)

    def __repr__(self) -> str:
        return f"RobustAggregation(rule={self.rule!r}, trim={self.trim}, wait_for={self.wait_for})"
