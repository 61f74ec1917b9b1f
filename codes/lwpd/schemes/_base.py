"""The interface every scheme implements, and the worker computations they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Task:
    """One worker's job for one step: ``fn(*args)`` on ``worker``.

    ``work`` is its compute in units of one uncoded shard gradient and ``floats`` the size
    of the result it sends back, both counted by the rules of :mod:`lwpd.cost`; a cluster
    turns them into time (``delay * work + latency + floats / bandwidth``). ``key``
    identifies the task across steps when a scheme reorders its tasks from step to step
    (``None``: its position in the list). ``rerun_work`` is the compute when the task is run
    on its own, re-dispatched with new parameters by ``policy="async"`` (``None``: ``work``):
    a chunk that shares its worker's forward pass within a step needs its own when re-run.
    """

    worker: int
    fn: Callable[..., Any]
    args: tuple
    work: float
    floats: float = 0.0
    key: Any = None
    rerun_work: float | None = None


def all_finite(result: Any) -> bool:
    """True when every floating (or complex) value in ``result`` is finite; integer, boolean and
    non-numeric parts (codeword indices, piece numbers) are not checked."""
    if isinstance(result, (tuple, list)):
        return all(all_finite(part) for part in result)
    if isinstance(result, dict):
        return all(all_finite(part) for part in result.values())
    arr = np.asarray(result) if isinstance(result, (np.ndarray, np.generic, float, complex)) else None
    if arr is None or arr.dtype.kind not in "fc":
        return True
    return bool(np.isfinite(arr).all())


def shard_gradient(problem: Any, theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A worker's gradient on its shard of samples (the mean over ``rows``)."""
    return problem.gradient(theta, rows=rows)


class Scheme(ABC):
    """How a step's gradient is split into worker tasks and put back together.

    The training loop calls :meth:`bind` once, then per step :meth:`begin`, :meth:`tasks`,
    :meth:`fold` for each result as it arrives, and :meth:`estimate`.
    """

    #: Short name used in tables and plots.
    name: str = "scheme"

    #: Whether every result of a step must be computed at the same parameters (a robust
    #: decoder would take stale values for lies); training refuses stale asynchronous results then.
    consistent_results: bool = False

    def bind(self, problem: Any, n_workers: int, rng: np.random.Generator) -> None:
        """Attach to a problem and a number of workers (builds the task assignment)."""
        self.problem = problem
        self.n_workers = int(n_workers)
        self._bind(rng)

    @abstractmethod
    def _bind(self, rng: np.random.Generator) -> None:
        """Build the assignment of data or codewords to workers."""

    @abstractmethod
    def tasks(self, theta: np.ndarray) -> list[Task]:
        """The tasks of one step at parameters ``theta``, one or more per worker."""

    @abstractmethod
    def begin(self) -> None:
        """Start a step: forget the previous step's results."""

    @abstractmethod
    def fold(self, worker: int, result: Any) -> None:
        """Fold one worker's result in, the moment it arrives."""

    @abstractmethod
    def estimate(self) -> np.ndarray | None:
        """The gradient estimate from the results so far, or ``None`` if none is possible."""

    def _units(self, ops: float) -> float:
        """``ops`` multiply-adds in units of compute for the bound problem (:func:`lwpd.cost.units`)."""
        from lwpd.cost import units

        return units(ops, self.problem.n_samples, self.n_workers, self.problem.n_params)

    def setup_tasks(self) -> list[Task]:
        """One-off tasks run before the first step (e.g. forming moments); none by default.

        Their results are handed to :meth:`fold_setup`; their time and cost count towards
        the run like any step's.
        """
        return []

    def fold_setup(self, worker: int, result: Any) -> None:
        """Fold one setup result in (only called for schemes with :meth:`setup_tasks`)."""
        raise TypeError(f"{type(self).__name__} has no setup tasks")

    def accepts(self, result: Any) -> bool:
        """Whether a result that arrived may be folded in: by default every floating value in
        it (arrays, nested in tuples or lists) is finite. The training loop counts a refused
        result as rejected and never folds it (a NaN would poison the whole decode)."""
        return all_finite(result)

    def excluded(self) -> int:
        """Results of this step folded in but left out of the last estimate as corrupted (robust
        decoding); 0 for schemes that trust every result."""
        return 0

    def ready(self, received: int) -> bool:
        """Whether a step waiting "until ready" may stop after ``received`` results.

        Exact schemes are ready as soon as they can decode; schemes that can always decode
        something (LWPD, ignoring stragglers) wait for a fraction of the workers instead.
        """
        return self.estimate() is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PerWorkerResults(Scheme):
    """A scheme whose workers each return one array: the first result per key is kept
    (the key is the worker, unless :meth:`_result_key` says otherwise)."""

    def begin(self) -> None:
        self._results: dict[int, np.ndarray] = {}

    def fold(self, worker: int, result: Any) -> None:
        self._results.setdefault(self._result_key(int(worker)), np.asarray(result, dtype=float))

    def _result_key(self, worker: int) -> int:
        return worker


def split_rows(n_samples: int, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded random split of the samples into ``n_parts`` read-only shards of near-equal size."""
    if n_parts > n_samples:
        raise ValueError(f"n_workers ({n_parts}) must not exceed the number of samples ({n_samples})")
    shards = [np.sort(part) for part in np.array_split(rng.permutation(n_samples), n_parts)]
    for shard in shards:  # read-only: the problem may then cache the shard's rows and scores
        shard.flags.writeable = False
    return shards
