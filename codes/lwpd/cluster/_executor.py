"""A cluster over any ``concurrent.futures.Executor``, with injected straggler delays."""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from lwpd._validation import check_int, check_real
from lwpd.cluster._common import (
    Cluster,
    Completion,
    RngSource,
    as_task_ids,
    check_cost,
    check_delay_model,
    check_faults,
)


def run_task(fn: Callable[..., Any], finish_at: float, worker: int, args: tuple, kwargs: dict) -> Any:
    """Executed on the executor: sleep until the modelled finish time (``time.time()``
    seconds, shared by the processes of one machine), then run the task.

    Module-level so it pickles (process pools, Dask). ``worker`` is the logical worker
    tag; it is carried for tracing only.
    """
    wait = finish_at - time.time()
    if wait > 0:
        time.sleep(wait)
    return fn(*args, **kwargs)


@dataclass
class _Task:
    worker: int
    submitted: float
    future: cf.Future | None  # None: the worker never returns (infinite delay)


class ExecutorCluster(Cluster):
    """The cluster interface over a real ``concurrent.futures.Executor``.

    Works with any executor that implements the standard API -- ``ThreadPoolExecutor``,
    ``ProcessPoolExecutor``, or Dask's ``distributed.Client.get_executor()`` -- since it
    only uses ``submit``, ``Future.result``/``cancel``/``done``/``add_done_callback`` and
    :func:`concurrent.futures.wait`.

    Timing model
    ------------
    - **Clock.** ``now`` is wall-clock seconds since the cluster was created (or reset),
      from :func:`time.perf_counter`.
    - **Injected delays.** Per-worker delays are drawn once per round exactly as in
      :class:`~lwpd.cluster.SimulatedCluster` (:meth:`new_round`, called automatically on
      the first submit). A task's modelled duration is ``(delay[worker] * work +
      communication) * time_scale`` seconds, the communication ``latency + floats /
      bandwidth`` of the cluster's :class:`~lwpd.cost.CostModel`; the task sleeps on the
      executor until that long after its worker's previous task (see below), then runs
      ``fn``. ``delays=None`` injects no sleep. A worker with
      infinite delay never returns: its tasks are not submitted at all and count as
      pending until cancelled.
    - **Logical workers.** Executors do not expose which process runs a task, so a worker
      is a logical tag that selects the injected delay (and is passed along to the task
      wrapper). As in the simulated cluster, a logical worker's tasks are modelled as run
      one after another: a task sleeps until the modelled finish of the worker's previous
      task plus its own duration (cancelling frees the worker at once). The computations
      themselves run as concurrently as the executor allows.
    - **Cancellation.** :meth:`cancel` calls ``Future.cancel``: tasks not started yet never
      run; tasks already running finish on the executor, but their results are discarded.

    Parameters
    ----------
    executor : concurrent.futures.Executor
        Any object with a callable ``submit(fn, *args, **kwargs)`` returning a
        ``concurrent.futures.Future``. The cluster does not shut it down.
    n_workers : int
        Number of logical workers, at least 1.
    delays : delay model or None, optional
        An object with ``sample(n_workers, rng)`` and ``reset()``; ``None``: no delay.
    time_scale : float, optional
        Seconds of real sleep per second of modelled delay (finite, >= 0). Default 1.0.
    seed : None, int or numpy.random.Generator, optional
        Seed for the delay draws; :meth:`reset` returns to the same stream.
    cost : lwpd.cost.CostModel, optional
        Prices each result's communication, injected as sleep like the delays; ``None``
        (default): none.
    faults : fault model, optional
        Corrupts the results of some logical workers as they are delivered, e.g.
        :class:`lwpd.robust.Byzantine`; ``None`` (default): honest workers.

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from lwpd.cluster import ExecutorCluster
    >>> with ThreadPoolExecutor(2) as pool:
    ...     cluster = ExecutorCluster(pool, n_workers=2)
    ...     ids = [cluster.submit(w, pow, 3, w) for w in range(2)]
    ...     sorted(c.result for c in cluster.as_completed())
    [1, 3]
    """

    _DEFAULT_DELAY = 0.0  # no delay model: no injected sleep

    def __init__(self, executor: Any, n_workers: int, delays: Any = None, time_scale: float = 1.0,
                 seed: Any = None, cost: Any = None, faults: Any = None):
        if not callable(getattr(executor, "submit", None)):
            raise TypeError(
                "executor must be a concurrent.futures.Executor (an object with a callable submit), "
                f"got {type(executor).__name__}"
            )
        self._executor = executor
        self._n_workers = check_int("n_workers", n_workers, minimum=1)
        self._delays = check_delay_model(delays)
        self._cost = check_cost(cost)
        self._faults = check_faults(faults, self._n_workers)
        self._time_scale = check_real("time_scale", time_scale, nonnegative=True)
        self._rng_source = RngSource(seed)
        self._clear()

    def _clear(self) -> None:
        self._t0 = time.perf_counter()
        self._rng = self._rng_source.rng
        self._round_delays: np.ndarray | None = None
        self._round = 0
        self._tasks: dict[int, _Task] = {}  # outstanding tasks only
        self._by_future: dict[cf.Future, int] = {}
        self._finished_at: dict[int, float] = {}
        self._busy_until = np.zeros(self._n_workers)  # modelled finish of each worker's last task (time.time())
        self._next_id = 0

    # -- properties ---------------------------------------------------------------------
    @property
    def executor(self) -> Any:
        """The underlying executor."""
        return self._executor

    @property
    def time_scale(self) -> float:
        """Seconds of real sleep per second of modelled delay."""
        return self._time_scale

    @property
    def now(self) -> float:
        """Wall-clock seconds since the cluster was created or last reset."""
        return time.perf_counter() - self._t0

    # -- operations ---------------------------------------------------------------------
    def submit(self, worker: int, fn: Callable[..., Any], *args: Any, work: float = 1.0, floats: float = 0.0,
               **kwargs: Any) -> int:
        """Submit ``fn(*args, **kwargs)`` to the executor on behalf of logical ``worker``.

        Parameters
        ----------
        worker : int
            Logical worker index in ``[0, n_workers)``; selects the injected delay.
        fn : callable
            The task; must be picklable for process pools and Dask.
        *args, **kwargs
            Passed to ``fn``.
        work : float, optional
            Units of compute (finite, >= 0); the task finishes no earlier than
            ``(delay[worker] * work + communication) * time_scale`` seconds after the
            worker's previous task (or now, if the worker is idle).
        floats : float, optional
            Floats the result sends back (>= 0), priced by the cluster's ``cost``.

        Returns
        -------
        int
            The task id.
        """
        worker, duration = self._admit(worker, fn, work, floats)
        tid = self._next_id
        self._next_id += 1
        submitted = self.now
        future = None
        if not np.isinf(duration):
            start = max(time.time(), float(self._busy_until[worker]))
            finish_at = start + duration * self._time_scale
            self._busy_until[worker] = finish_at
            future = self._dispatch(worker, fn, finish_at, args, kwargs)
            self._by_future[future] = tid
            future.add_done_callback(self._record_finish)
        self._tasks[tid] = _Task(worker, submitted, future)
        return tid

    @staticmethod
    def _never_finishes(task: _Task) -> bool:
        return task.future is None

    def _dispatch(self, worker: int, fn: Callable[..., Any], finish_at: float, args: tuple, kwargs: dict) -> cf.Future:
        """Hand one task to the executor (a subclass may choose the executor or ship the
        arguments differently)."""
        return self._executor.submit(run_task, fn, finish_at, worker, args, kwargs)

    @staticmethod
    def _outcome(future: cf.Future) -> tuple[Any, BaseException | None]:
        """``(result, error)`` of a finished future."""
        if future.cancelled():  # cancelled on the executor's side
            return None, cf.CancelledError("the task was cancelled by its executor")
        error = future.exception()
        return (None, error) if error is not None else (future.result(), None)

    def _cancel_futures(self, futures: list) -> None:
        """Cancel the executor's futures (a subclass may batch it)."""
        for future in futures:
            future.cancel()

    def _record_finish(self, future: cf.Future) -> None:
        # Runs in whichever thread completes the future; dict writes are atomic in CPython.
        tid = self._by_future.get(future)
        if tid is not None:
            self._finished_at[tid] = self.now

    def _live(self) -> list[cf.Future]:
        return [t.future for t in self._tasks.values() if t.future is not None]

    def _iterate(self, deadline: float | None, k: int | None, errors: str) -> Iterator[Completion]:
        count = 0
        while k is None or count < k:
            live = self._live()
            if not live:
                break
            timeout = None if deadline is None else max(0.0, deadline - self.now)
            done, _ = cf.wait(live, timeout=timeout, return_when=cf.FIRST_COMPLETED)
            if not done:
                break  # deadline reached
            now = self.now
            batch = sorted((self._finished_at.get(self._by_future[f], now), self._by_future[f]) for f in done)
            for finished, tid in batch:
                if k is not None and count >= k:
                    break
                task = self._tasks.pop(tid, None)  # popped as yielded: a consumer that stops leaves the rest pending
                if task is None:  # cancelled meanwhile (e.g. by the consumer)
                    continue
                self._by_future.pop(task.future, None)
                self._finished_at.pop(tid, None)
                count += 1
                result, error = self._outcome(task.future)
                yield self._completion(tid, task.worker, result, error, task.submitted, finished, errors)
        else:
            return
        if deadline is not None:
            remaining = deadline - self.now
            if remaining > 0:
                time.sleep(remaining)

    def cancel(self, task_ids: Any = None) -> int:
        """Cancel outstanding tasks.

        Calls ``Future.cancel`` on each: a task that has not started never runs; a task
        already running finishes on the executor but its result is discarded. Either way
        it is no longer pending.

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
        count = 0
        futures = []
        for tid in ids:
            task = self._tasks.pop(tid, None)
            if task is None:
                continue
            if task.future is not None:
                futures.append(task.future)
                self._by_future.pop(task.future, None)
            self._finished_at.pop(tid, None)
            self._busy_until[task.worker] = min(self._busy_until[task.worker], time.time())  # free now
            count += 1
        self._cancel_futures(futures)
        return count

    def __repr__(self) -> str:
        return (f"ExecutorCluster({type(self._executor).__name__}, n_workers={self._n_workers}, "
                f"time_scale={self._time_scale:g}, pending={self.pending})")
