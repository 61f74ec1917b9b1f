"""The interface every scheme implements, and the worker computations they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lwpd import _config


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
    ``joint``: a function that computes the results of several of one worker's tasks in one
    call (``joint([args, ...]) -> [result, ...]``, each the result ``fn(*args)`` returns), for
    tasks that share it (the same object); a simulated cluster uses it to save its own wall
    time (:meth:`lwpd.cluster.SimulatedCluster.submit_many`), a real one runs each task alone.
    """

    worker: int
    fn: Callable[..., Any]
    args: tuple
    work: float
    floats: float = 0.0
    key: Any = None
    rerun_work: float | None = None
    joint: Callable[[list[tuple]], list[Any]] | None = None


def all_bounded(result: Any) -> bool:
    """True when every floating (or complex) value in ``result`` is finite and at most
    ``_config.VALUE_MAX_MAGNITUDE`` in magnitude (larger ones overflow once summed); integer,
    boolean and non-numeric parts (codeword indices, piece numbers) are not checked."""
    if isinstance(result, (tuple, list)):
        return all(all_bounded(part) for part in result)
    if isinstance(result, dict):
        return all(all_bounded(part) for part in result.values())
    arr = np.asarray(result) if isinstance(result, (np.ndarray, np.generic, float, complex)) else None
    if arr is None or arr.dtype.kind not in "fc":
        return True
    # one pass: NaN fails the comparison, and so does inf
    return arr.size == 0 or bool(np.abs(arr).max() <= _config.VALUE_MAX_MAGNITUDE)


class MalformedResult(ValueError):
    """A worker's result does not have the structure its task promises (a vector of the wrong
    length, a pair that is not one, an index out of range). Raised by :meth:`Scheme.fold`
    before it changes any state; the training loop counts the result as rejected."""


def result_vector(result: Any, size: int, what: str = "result") -> np.ndarray:
    """``result`` as a float vector of length ``size``, or :class:`MalformedResult`."""
    try:
        arr = np.asarray(result, dtype=float)
    except (TypeError, ValueError) as err:
        raise MalformedResult(f"{what} must be a vector of {size} floats: {err}") from None
    if arr.shape != (size,):
        raise MalformedResult(f"{what} must have shape ({size},), got {arr.shape}")
    return arr


def result_pair(result: Any, n_rows: int, size: int | None = None) -> tuple[Any, np.ndarray]:
    """``(key, values)`` of a result that is a pair: with ``size`` given, ``key`` an integer in
    ``[0, n_rows)`` (a piece or partition) and ``values`` a vector of ``size`` floats; without,
    ``key`` a 1-D integer array of row indices in ``[0, n_rows)`` (codewords) and ``values`` one
    float per index. :class:`MalformedResult` otherwise."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise MalformedResult(f"result must be a pair (key, values), got {type(result).__name__}")
    key, values = result
    keys = np.asarray(key)
    if keys.dtype.kind not in "iu" or keys.ndim != (0 if size is not None else 1):
        raise MalformedResult(f"result's key must be {'an integer' if size is not None else 'a 1-D integer array'}, "
                              f"got dtype {keys.dtype} and shape {keys.shape}")
    if keys.size and (int(keys.min()) < 0 or int(keys.max()) >= n_rows):
        raise MalformedResult(f"result's key must lie in [0, {n_rows}), got {int(keys.min())}..{int(keys.max())}")
    if size is not None:
        return int(keys), result_vector(values, size, "result's values")
    return keys.astype(np.int64), result_vector(values, keys.size, "result's values")


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

    #: Whether the scheme keeps the latest value of every row across steps (``memory=True``
    #: of LWPD and IgnoreStragglers): :func:`lwpd.train` then lets a busy worker's task run
    #: on, folds its result late (``fold(worker, result, age=...)``) and steps by the
    #: staleness rule. Such a scheme has ``max_age`` and :meth:`staleness`.
    memory: bool = False

    #: Whether, by construction, a step in which every task arrived gives the gradient itself
    #: (:meth:`exact` then says so): what lets the scikit-learn wrappers choose quasi-Newton
    #: steps when nothing straggles. ``False`` unless a scheme declares it.
    exact_when_complete: bool = False

    def bind(self, problem: Any, n_workers: int, rng: np.random.Generator, shards: Any = None) -> None:
        """Attach to a problem and a number of workers (builds the task assignment).

        ``shards``: the rows each worker holds, one index array per worker, as
        :func:`lwpd.placement.shard_rows` returns them (:func:`lwpd.train` passes its
        ``placement``); ``None`` draws an i.i.d. placement from ``rng``. Every scheme builds
        its partitions from these shards, kept as :attr:`shards_`.
        """
        from lwpd.placement import shard_rows

        self.problem = problem
        self.n_workers = int(n_workers)
        #: The rows each worker holds (the placement every scheme builds its partitions from).
        self.shards_ = shard_rows(problem, self.n_workers, "iid" if shards is None else shards, rng)
        self._bind(rng)

    @abstractmethod
    def _bind(self, rng: np.random.Generator) -> None:
        """Build the assignment of data or codewords to workers from :attr:`shards_`."""

    @abstractmethod
    def tasks(self, theta: np.ndarray) -> list[Task]:
        """The tasks of one step at parameters ``theta``, one or more per worker."""

    @abstractmethod
    def begin(self) -> None:
        """Start a step: forget the previous step's results."""

    @abstractmethod
    def fold(self, worker: int, result: Any) -> None:
        """Fold one worker's result in, the moment it arrives. A result without the structure
        its task promises raises :class:`MalformedResult` before any state changes (the
        training loop counts it rejected and goes on)."""

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
        result as rejected and never folds it (a NaN would poison the whole decode); so is a
        value above ``_config.VALUE_MAX_MAGNITUDE``, whose sums would overflow."""
        return all_bounded(result)

    def staleness(self) -> tuple[float, float]:
        """``(weighted mean age, oldest age)`` in steps of the values the last estimate used:
        0 for a scheme without memory, whose estimate uses this step's results only."""
        return 0.0, 0.0

    def excluded(self) -> int:
        """Results of this step folded in but left out of the last estimate as corrupted (robust
        decoding); 0 for schemes that trust every result."""
        return 0

    def unverified_blocks(self) -> int:
        """Blocks of the last estimate whose values could not be checked against corrupted ones
        (robust decoding with too few spare codewords); 0 for schemes that trust every result."""
        return 0

    def exact(self) -> bool:
        """Whether the last :meth:`estimate` is the gradient itself, up to rounding (every piece
        of it recovered), rather than a partial or approximate one. Quasi-Newton steps
        (``lwpd.train(acceleration="lbfgs")``) take only such gradients. ``False`` unless a
        scheme can tell."""
        return False

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
        value = result_vector(result, self.problem.n_params)
        self._results.setdefault(self._result_key(int(worker)), value)

    def _result_key(self, worker: int) -> int:
        return worker


def group_rows(shards: list[np.ndarray], groups: Any) -> list[np.ndarray]:
    """The union of the shards of each group (``groups``: one sequence of shard indices per
    group), sorted and read-only like the shards themselves."""
    out = []
    for members in groups:
        rows = np.sort(np.concatenate([shards[int(w)] for w in members]))
        rows.flags.writeable = False
        out.append(rows)
    return out


def curvature_shares(problem: Any, groups: list[np.ndarray]) -> np.ndarray:
    """Each row group's share of the gradient's curvature, ``c_g = (|S_g| / m) L_g / L``:
    ``L_g`` bounds the curvature of the gradient over the group's rows (its weight in the
    full gradient is ``|S_g| / m``) and ``L`` that of the full gradient
    (:meth:`~lwpd.problems.LeastSquares.lipschitz`). The step rule of schemes with memory
    weighs each row's age by it (:func:`lwpd.train`): a shard whose rows dominate a direction
    of the curvature makes its stale values count for that much. ``c_g <= 1``; the shares
    sum to 1 when the groups' curvatures share their directions, and to more otherwise."""
    m, full = problem.n_samples, problem.lipschitz()
    return np.array([rows.size / m * problem.lipschitz(rows=rows) / full for rows in groups])


class RowMemory:
    """The latest value of every (group, row) pair and the step it was computed at: the
    master's memory of a scheme with ``memory=True`` (a group is a worker's shard, a row a
    codeword or a gradient coordinate).

    Parameters
    ----------
    n_groups, n_rows : int
        The table's shape; refused with a ``ValueError`` above
        ``_config.MEMORY_MAX_ENTRIES`` entries (each costs 12 bytes: a float64 value and an
        int32 step).
    what : str
        How the caller names the table in that error.
    """

    def __init__(self, n_groups: int, n_rows: int, what: str) -> None:
        entries = int(n_groups) * int(n_rows)
        if entries > _config.MEMORY_MAX_ENTRIES:
            raise ValueError(f"memory=True keeps {what}: {n_groups} x {n_rows} = {entries:,} values "
                             f"({entries * 12 / 2**30:.2f} GiB), more than the limit of {_config.MEMORY_MAX_ENTRIES:,} "
                             "(lwpd._config.MEMORY_MAX_ENTRIES); use memory=False, fewer workers or a smaller codebook")
        self.values = np.zeros((n_groups, n_rows))
        self.computed = np.full((n_groups, n_rows), -1, dtype=np.int32)  # -1: never received
        self._newest = -1  # the largest step stored so far

    def store(self, group: int, rows: Any, values: Any, computed: int) -> None:
        """Keep ``values`` for ``rows`` (indices or a slice) of ``group`` where they are at
        least as fresh as what is kept: a result computed earlier never overwrites a newer one."""
        rows = np.arange(self.values.shape[1])[rows] if isinstance(rows, slice) else np.asarray(rows)
        values = np.broadcast_to(np.asarray(values, dtype=float).reshape(-1), rows.shape)
        if computed >= self._newest:  # nothing kept is newer (every step's fresh results): no comparison
            self._newest = computed
            self.values[group, rows] = values
            self.computed[group, rows] = computed
            return
        newer = self.computed[group, rows] <= computed
        self.values[group, rows[newer]] = values[newer]
        self.computed[group, rows[newer]] = computed

    def ages(self, step: int) -> np.ndarray:
        """Age in steps of every entry at ``step`` (entries never received: -1)."""
        return np.where(self.computed >= 0, step - self.computed, -1)

    def usable(self, step: int, max_age: int) -> np.ndarray:
        """Entries received and at most ``max_age`` steps old at ``step``."""
        return (self.computed >= 0) & (self.computed >= step - max_age)
