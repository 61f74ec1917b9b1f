"""Gradient coding (Tandon, Lei, Dimakis, Karampatziakis, ICML 2017) as a scheme."""

from __future__ import annotations

from typing import Any

import numpy as np

from lwpd import _gradient_coding as gc
from lwpd._validation import check_choice, check_int
from lwpd.cost import coded_combination_ops
from lwpd.schemes._base import PerWorkerResults, Task


def coded_gradient(problem: Any, theta: np.ndarray, parts: list, coefficients: np.ndarray) -> np.ndarray:
    """``sum_k c_k (m_k / m) grad_k``: a worker's coded combination of its partitions' gradients."""
    m = problem.n_samples
    return sum(c * (rows.size / m) * problem.gradient(theta, rows=rows) for c, rows in zip(coefficients, parts))


class GradientCoding(PerWorkerResults):
    """Exact gradient from any ``n - s`` workers.

    The samples are split into ``n`` partitions; worker ``i`` holds the partitions in the
    support of row ``i`` of the encoding matrix ``B`` and returns ``sum_j B[i, j] g_j``
    (``g_j`` the size-weighted partition gradient). Once the arrived rows span the all-ones
    vector, the decoding vector ``a`` (``a^T B[arrived] = 1^T``, solved over the arrived
    rows) gives the exact gradient; before that there is no estimate.

    Parameters
    ----------
    s : int, default 1
        Stragglers tolerated (``0 <= s < n_workers``).
    kind : {"frc", "cyclic"}, default "cyclic"
        Fractional repetition (needs ``(s + 1) | n_workers``) or the cyclic MDS construction.

    Examples
    --------
    >>> from lwpd.schemes import GradientCoding
    >>> GradientCoding(2, kind="frc").name
    'gc-frc'
    """

    exact_when_complete = True

    def __init__(self, s: int = 1, kind: str = "cyclic") -> None:
        self.s = check_int("s", s, minimum=0)
        self.kind = check_choice("kind", kind, ("frc", "cyclic"))
        self.name = f"gc-{kind}"

    def _bind(self, rng: np.random.Generator) -> None:
        n = self.n_workers
        if self.s >= n:
            raise ValueError(f"s must be < n_workers ({n}), got {self.s}")
        self._B = gc.frc_matrix(n, self.s) if self.kind == "frc" else gc.cyclic_matrix(n, self.s, rng)
        # FRC: workers with the same partitions form a group; a group is covered once one of
        # its workers arrived, and the gradient is decodable once every group is
        supports = [tuple(row) for row in gc.partition_assignment(self._B)]
        group_of = {support: g for g, support in enumerate(dict.fromkeys(supports))}
        self._group = np.array([group_of[support] for support in supports], dtype=np.int64)
        self._n_groups = len(group_of)
        partitions = self.shards_  # the placement's shards are the code's n partitions
        n_params = self.problem.n_params
        self._plan = []
        for i, support in enumerate(gc.partition_assignment(self._B)):
            parts = [partitions[j] for j in support]
            work = self._units(coded_combination_ops([p.size for p in parts], n_params))
            self._plan.append((parts, self._B[i, support], work))
        self.begin()

    def tasks(self, theta: np.ndarray) -> list[Task]:
        n = self.problem.n_params
        return [Task(i, coded_gradient, (self.problem, theta, parts, coef), work, floats=n)
                for i, (parts, coef, work) in enumerate(self._plan)]

    def begin(self) -> None:
        super().begin()
        self._covered = np.zeros(getattr(self, "_n_groups", 0), dtype=np.int64)  # FRC: arrivals per group
        self._n_covered = 0
        self._cached: tuple[int, np.ndarray | None] | None = None  # (results folded, estimate)

    def fold(self, worker: int, result: Any) -> None:
        key = int(worker)
        new = key not in self._results
        super().fold(worker, result)
        if new and key in self._results:
            g = self._group[key]
            self._n_covered += self._covered[g] == 0
            self._covered[g] += 1

    def ready(self, received: int) -> bool:
        # cheap necessary conditions first: a waiting step asks after every arrival, and at
        # a thousand workers a decode per arrival costs seconds
        if self.kind == "frc" and self._n_covered < self._n_groups:
            return False
        if self.kind == "cyclic" and len(self._results) < self._B.shape[0] - self.s:
            return False
        return self.estimate() is not None

    def estimate(self) -> np.ndarray | None:
        if not self._results:
            return None
        if self._cached is not None and self._cached[0] == len(self._results):
            return self._cached[1]  # results only accumulate within a step: nothing changed
        arrived = np.fromiter(sorted(self._results), dtype=int)
        a = self._decoding_vector(arrived)
        value = None if a is None else np.tensordot(a, np.stack([self._results[i] for i in arrived]), axes=1)
        self._cached = (len(self._results), value)
        return value

    def exact(self) -> bool:
        """Whenever it decodes: the decoding vector recovers the sum exactly."""
        return self.estimate() is not None

    def _decoding_vector(self, arrived: np.ndarray) -> np.ndarray | None:
        """The minimum-norm ``a`` with ``a^T B[arrived] = 1^T`` (:func:`gc.decoding_vector`),
        or ``None`` before the arrived rows span the all-ones vector. FRC in closed form: a
        group's rows are equal, so the minimum-norm solution splits each group's weight 1
        equally among its arrived workers (O(n) where the general solve is O(n^3))."""
        if self.kind == "frc":
            if self._n_covered < self._n_groups:
                return None
            return 1.0 / self._covered[self._group[arrived]]
        try:
            return gc.decoding_vector(self._B, arrived)
        except ValueError:  # the arrived rows do not yet span the all-ones vector
            return None

    def __repr__(self) -> str:
        return f"GradientCoding(s={self.s}, kind={self.kind!r})"
