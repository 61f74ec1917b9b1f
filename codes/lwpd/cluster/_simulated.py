"""A deterministic cluster on a virtual clock: an event queue, no sleeping."""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lwpd._validation import check_int
from lwpd.cluster._common import (
    Cluster,
    Completion,
    RngSource,
    as_task_ids,
    check_cost,
    check_delay_model,
    check_faults,
)


@dataclass
class _Task:
    worker: int
    result: Any
    error: BaseException | None
    submitted: float
    duration: float
    start: float = 0.0
    finish: float = 0.0
    version: int = 0
    tie: float = 0.0  # seeded random key that orders equal finish times


def _independent_stream(rng: np.random.Generator) -> np.random.Generator:
    """A generator independent of ``rng``'s stream and fixed by its current state, without
    drawing from it: a jump ahead where the bit generator has one, else seeded (through a
    SeedSequence) by the first outputs of a copy."""
    bitgen = rng.bit_generator
    if hasattr(bitgen, "jumped"):
        return np.random.Generator(bitgen.jumped())
    return np.random.default_rng(copy.deepcopy(bitgen).random_raw(4))


class SimulatedCluster(Cluster):
    """A simulated cluster of ``n_workers`` workers on a virtual clock.

    Nothing sleeps: task functions run at once on the caller's thread, and the cluster
    decides *when* each task finishes from a delay model, so a run is fully deterministic
    for a seed and costs only the computation itself.

    Timing model
    ------------
    - **Rounds.** Per-worker delays (seconds per unit of work) are drawn from
      ``delays.sample(n_workers, rng)`` once per round. A round starts with
      :meth:`new_round`; the first :meth:`submit` after construction or :meth:`reset`
      starts one automatically. A task's duration is fixed when it is submitted:
      ``delay[worker] * work`` for the round current at that moment, plus the
      communication of the result, ``latency + floats / bandwidth`` of the cluster's
      :class:`~lwpd.cost.CostModel` (``np.inf`` if the worker's delay is infinite,
      whatever the work). The worker is busy for the whole duration.
    - **Sequential workers.** Each worker runs its tasks one after another in submission
      order: a task submitted at time ``now`` to a worker busy until ``B`` starts at
      ``max(now, B)`` and finishes ``duration`` later.
    - **Completion order.** Tasks complete in order of finish time. Equal finish times
      (equal delays and work) are broken by a random key drawn per task from the cluster's
      seed, never by task or worker id, so with equal delays every worker is equally likely
      to finish first, and a run stays deterministic for its seed. The keys come from a
      stream of their own, so the delay draws do not depend on them. A worker with infinite
      delay never completes; its tasks stay pending until cancelled.

    Parameters
    ----------
    n_workers : int
        Number of workers, at least 1.
    delays : delay model or None, optional
        An object with ``sample(n_workers, rng)`` and ``reset()`` (see
        :mod:`lwpd.stragglers`). ``None`` (default): every worker takes 1 s per unit of
        work.
    seed : None, int or numpy.random.Generator, optional
        Seed for the delay draws. ``None`` draws fresh entropy once; :meth:`reset` always
        returns to the same stream.
    cost : lwpd.cost.CostModel, optional
        Prices each result's communication (``latency + floats / bandwidth``); ``None``
        (default): compute only.
    faults : fault model, optional
        Corrupts the results of some workers as they are delivered, e.g.
        :class:`lwpd.robust.Byzantine`; ``None`` (default): honest workers.

    Examples
    --------
    Three workers with fixed delays of 1 s, 2 s and forever per unit of work:

    >>> import numpy as np
    >>> from lwpd.cluster import SimulatedCluster
    >>> class Fixed:
    ...     def sample(self, n_workers, rng):
    ...         return np.array([1.0, 2.0, np.inf])
    ...     def reset(self):
    ...         pass
    >>> cluster = SimulatedCluster(3, delays=Fixed(), seed=0)
    >>> ids = [cluster.submit(w, pow, w, 2, work=1.5) for w in range(3)]
    >>> for c in cluster.as_completed(deadline=10.0):
    ...     print(c.task_id, c.worker, c.result, c.finished)
    0 0 0 1.5
    1 1 1 3.0
    >>> cluster.now, cluster.pending
    (10.0, 1)
    >>> cluster.cancel()
    1
    """

    def __init__(self, n_workers: int, delays: Any = None, seed: Any = None, cost: Any = None, faults: Any = None):
        self._n_workers = check_int("n_workers", n_workers, minimum=1)
        self._delays = check_delay_model(delays)
        self._cost = check_cost(cost)
        self._faults = check_faults(faults, self._n_workers)
        self._rng_source = RngSource(seed)
        self._clear()

    def _clear(self) -> None:
        self._now = 0.0
        self._rng = self._rng_source.rng
        self._round_delays: np.ndarray | None = None
        self._round = 0
        self._busy_until = np.zeros(self._n_workers, dtype=np.float64)
        self._queues: list[list[int]] = [[] for _ in range(self._n_workers)]
        self._tasks: dict[int, _Task] = {}  # outstanding tasks only
        self._heap: list[tuple[float, float, int, int]] = []  # (finish, tie key, task_id, version)
        self._next_id = 0
        self._tie_rng = _independent_stream(self._rng)

    # -- properties ---------------------------------------------------------------------
    @property
    def now(self) -> float:
        """Current virtual time in seconds (starts at 0.0)."""
        return self._now

    # -- operations ---------------------------------------------------------------------
    def submit(self, worker: int, fn: Callable[..., Any], *args: Any, work: float = 1.0, floats: float = 0.0,
               **kwargs: Any) -> int:
        """Run ``fn(*args, **kwargs)`` now and schedule its completion on ``worker``.

        The result (or the exception ``fn`` raised) is kept and delivered by
        :meth:`as_completed` when the task finishes on the virtual clock.

        Parameters
        ----------
        worker : int
            Worker index in ``[0, n_workers)``.
        fn : callable
            The task.
        *args, **kwargs
            Passed to ``fn``.
        work : float, optional
            Units of compute (finite, >= 0); the duration is ``delay[worker] * work`` plus
            the communication of the result.
        floats : float, optional
            Floats the result sends back (>= 0), priced by the cluster's ``cost``.

        Returns
        -------
        int
            The task id.
        """
        worker, duration = self._admit(worker, fn, work, floats)
        result, error = None, None
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # delivered at completion, like a real executor
            error = exc
        return self._schedule(worker, duration, result, error)

    def submit_many(self, worker: int, joint: Callable[[list[tuple]], list[Any]], arg_lists: Sequence[tuple],
                    works: Sequence[float], floats: Sequence[float]) -> list[int]:
        """Submit several tasks of one worker whose results one call computes.

        ``joint(arg_lists)`` is run once, now, and must return one result per entry of
        ``arg_lists``, the result its task would have returned on its own (up to rounding: a
        joint computation may sum in another order). Each task is then scheduled exactly as
        :meth:`submit` schedules it, in order, each with its own work and floats: the ids,
        modelled times and tie order are those of the tasks submitted one by one, and only the
        simulator's own wall time is saved (a worker's chunks share one forward pass at a
        thousand simulated workers). An exception raised by ``joint`` is delivered by every
        task (each counts as failed, where one by one only the raising task would).

        Parameters
        ----------
        worker : int
            Worker index in ``[0, n_workers)``.
        joint : callable
            ``joint(arg_lists) -> list`` of the tasks' results, in order.
        arg_lists : sequence of tuple
            Each task's arguments.
        works, floats : sequence of float
            Each task's units of compute and the floats its result sends (as in :meth:`submit`).

        Returns
        -------
        list of int
            The tasks' ids, in order.

        Examples
        --------
        >>> from lwpd.cluster import SimulatedCluster
        >>> cluster = SimulatedCluster(2, seed=0)
        >>> ids = cluster.submit_many(1, lambda args: [a * b for a, b in args], [(2, 3), (4, 5)],
        ...                           works=[1.0, 1.0], floats=[1.0, 1.0])
        >>> sorted(c.result for c in cluster.as_completed())
        [6, 20]
        """
        arg_lists = list(arg_lists)
        works, floats = list(works), list(floats)
        if not len(arg_lists) == len(works) == len(floats):
            raise ValueError(f"arg_lists, works and floats must have one entry per task, got {len(arg_lists)}, "
                             f"{len(works)} and {len(floats)}")
        worker, durations = self._admit_many(worker, joint, works, floats)
        results: list[Any] = [None] * len(arg_lists)
        error = None
        try:
            returned = list(joint(arg_lists))
            if len(returned) != len(arg_lists):
                raise RuntimeError(f"joint returned {len(returned)} results for {len(arg_lists)} tasks")
            results = returned
        except Exception as exc:  # delivered by every task at its completion
            error = exc
        return [self._schedule(worker, duration, result, error) for duration, result in zip(durations, results)]

    def _schedule(self, worker: int, duration: float, result: Any, error: BaseException | None) -> int:
        """Queue a task whose result is known behind ``worker``'s earlier tasks; its id."""
        tid = self._next_id
        self._next_id += 1
        start = max(self._now, float(self._busy_until[worker]))
        task = _Task(worker, result, error, self._now, duration, start, start + duration,
                     tie=float(self._tie_rng.random()))
        self._tasks[tid] = task
        self._queues[worker].append(tid)
        self._busy_until[worker] = task.finish
        self._push(tid, task)
        return tid

    def _push(self, tid: int, task: _Task) -> None:
        if np.isfinite(task.finish):
            heapq.heappush(self._heap, (task.finish, task.tie, tid, task.version))

    def _peek(self) -> tuple[float, int] | None:
        """The next live event (finish time, task id), dropping stale heap entries."""
        heap = self._heap
        while heap:
            finish, _, tid, version = heap[0]
            task = self._tasks.get(tid)
            if task is not None and task.version == version:
                return finish, tid
            heapq.heappop(heap)
        return None

    @staticmethod
    def _never_finishes(task: _Task) -> bool:
        return not np.isfinite(task.duration)

    def _iterate(self, deadline: float | None, k: int | None, errors: str) -> Iterator[Completion]:
        count = 0
        while k is None or count < k:
            event = self._peek()
            if event is None or (deadline is not None and event[0] > deadline):
                break
            finish, tid = event
            heapq.heappop(self._heap)
            task = self._tasks.pop(tid)
            self._queues[task.worker].remove(tid)
            self._now = max(self._now, finish)
            count += 1
            yield self._completion(tid, task.worker, task.result, task.error, task.submitted, task.finish, errors)
        else:
            return
        if deadline is not None and deadline > self._now:
            self._now = deadline

    def cancel(self, task_ids: Any = None) -> int:
        """Cancel outstanding tasks and free their workers at the current time.

        A worker whose running task is cancelled becomes idle now; its remaining queued
        tasks are rescheduled to start as early as possible.

        Parameters
        ----------
        task_ids : None, int or iterable of int, optional
            Tasks to cancel; ``None`` (default) cancels every outstanding task. Ids of
            tasks already completed or cancelled are ignored.

        Returns
        -------
        int
            Number of tasks cancelled.
        """
        ids = as_task_ids(task_ids, self._next_id, self._tasks)
        touched = set()
        count = 0
        for tid in ids:
            task = self._tasks.pop(tid, None)
            if task is None:
                continue
            self._queues[task.worker].remove(tid)
            touched.add(task.worker)
            count += 1
        for worker in sorted(touched):
            self._reschedule(worker)
        return count

    def _reschedule(self, worker: int) -> None:
        cursor = self._now
        for tid in self._queues[worker]:
            task = self._tasks[tid]
            if task.start <= self._now:  # already running (or finished, not yet collected)
                cursor = max(cursor, task.finish)
                continue
            task.start = cursor
            task.finish = cursor + task.duration
            task.version += 1
            self._push(tid, task)
            cursor = task.finish
        self._busy_until[worker] = cursor

    def __repr__(self) -> str:
        return f"SimulatedCluster(n_workers={self._n_workers}, now={self._now:g}, pending={self.pending})"
