"""Pieces shared by the simulated and the executor cluster."""

from __future__ import annotations

import copy
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from lwpd._validation import as_rng, check_choice, check_int, check_real


@dataclass(frozen=True)
class Completion:
    """One finished task, as yielded by ``as_completed``.

    Attributes
    ----------
    task_id : int
        The id ``submit`` returned.
    worker : int
        The logical worker the task was submitted to.
    result : object
        What the task function returned.
    submitted : float
        Cluster time (seconds) at which the task was submitted.
    finished : float
        Cluster time (seconds) at which the task finished.
    error : BaseException or None
        The exception the task raised (then ``result`` is None); only delivered by
        ``as_completed(errors="return")``, which otherwise re-raises it.
    """

    task_id: int
    worker: int
    result: Any
    submitted: float
    finished: float
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the task returned (did not raise)."""
        return self.error is None

    @property
    def latency(self) -> float:
        """``finished - submitted``: queueing plus service time, in seconds."""
        return self.finished - self.submitted


def check_delay_model(delays: Any) -> Any:
    """Return ``delays`` if it is None or has callable ``sample`` and ``reset``."""
    if delays is None:
        return None
    for attr in ("sample", "reset"):
        if not callable(getattr(delays, attr, None)):
            raise TypeError(
                "delays must be None or a delay model with sample(n_workers, rng) and reset() "
                f"methods; {type(delays).__name__} has no callable {attr!r}"
            )
    return delays


def check_faults(faults: Any, n_workers: int) -> Any:
    """Return ``faults`` bound to ``n_workers`` if it is None or a fault model with
    ``bind(n_workers)``, ``corrupt(worker, result)`` and ``reset()`` (e.g.
    :class:`lwpd.robust.Byzantine`)."""
    if faults is None:
        return None
    for attr in ("bind", "corrupt", "reset"):
        if not callable(getattr(faults, attr, None)):
            raise TypeError(
                "faults must be None or a fault model with bind(n_workers), corrupt(worker, result) and reset() "
                f"methods, such as lwpd.robust.Byzantine; {type(faults).__name__} has no callable {attr!r}"
            )
    faults.bind(n_workers)
    return faults


def sample_delays(delays: Any, n_workers: int, rng: np.random.Generator, default: float) -> np.ndarray:
    """Draw one round of per-worker delays (seconds per unit of work) and check them."""
    if delays is None:
        return np.full(n_workers, default, dtype=np.float64)
    raw = delays.sample(n_workers, rng)
    arr = np.asarray(raw)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"delays.sample must return a real array, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float64)  # always a private copy
    if arr.shape != (n_workers,):
        raise ValueError(f"delays.sample must return shape ({n_workers},), got {arr.shape}")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError("delays.sample must return non-negative delays (np.inf for a worker that never returns), "
                         f"got {arr}")
    return arr


class RngSource:
    """Remembers how to rebuild the cluster's random generator, so ``reset`` repeats a run.

    ``None`` draws fresh entropy once (kept, so a reset repeats the same stream); a
    Generator is used as given and its initial state is restored on reset.
    """

    def __init__(self, seed: Any):
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        if isinstance(seed, np.random.Generator):
            self._state = copy.deepcopy(seed.bit_generator.state)
            self._bitgen = type(seed.bit_generator)
            self.rng = seed
        else:
            self.rng = as_rng("seed", seed)
            self._state = copy.deepcopy(self.rng.bit_generator.state)
            self._bitgen = type(self.rng.bit_generator)

    def reset(self) -> np.random.Generator:
        bitgen = self._bitgen()
        bitgen.state = copy.deepcopy(self._state)
        self.rng = np.random.Generator(bitgen)
        return self.rng


def check_work(work: Any) -> float:
    return check_real("work", work, nonnegative=True)


def check_cost(cost: Any) -> Any:
    """``cost`` if it is a :class:`lwpd.cost.CostModel`; ``None`` means compute only."""
    from lwpd.cost import CostModel

    if cost is None:
        return CostModel()
    if not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a lwpd.cost.CostModel or None, got {type(cost).__name__}")
    return cost


def check_worker(worker: Any, n_workers: int) -> int:
    if isinstance(worker, (bool, np.bool_)) or not isinstance(worker, numbers.Integral):
        raise TypeError(f"worker must be an integer, got {type(worker).__name__} {worker!r}")
    worker = int(worker)
    if not 0 <= worker < n_workers:
        raise IndexError(f"worker must lie in [0, {n_workers - 1}] (there are {n_workers} workers), got {worker}")
    return worker


def check_stop(deadline: Any, k: Any, errors: Any = "raise") -> tuple[float | None, int | None]:
    if deadline is not None:
        deadline = check_real("deadline", deadline)
    if k is not None:
        k = check_int("k", k, minimum=1)
    check_choice("errors", errors, ("raise", "return"))
    return deadline, k


def as_task_ids(task_ids: Any, issued: int, outstanding: Iterable[int]) -> list[int]:
    """Normalise ``cancel``'s argument: None (every outstanding task), one id, or an
    iterable of ids."""
    if task_ids is None:
        return list(outstanding)
    if isinstance(task_ids, (numbers.Integral, np.integer)) and not isinstance(task_ids, (bool, np.bool_)):
        task_ids = [task_ids]
    if not isinstance(task_ids, (Iterable, np.ndarray)):
        raise TypeError(f"task_ids must be None, a task id or an iterable of task ids, got {type(task_ids).__name__}")
    out = []
    for tid in task_ids:
        if isinstance(tid, (bool, np.bool_)) or not isinstance(tid, numbers.Integral):
            raise TypeError(f"task_ids must hold integer task ids, got {type(tid).__name__} {tid!r}")
        tid = int(tid)
        if not 0 <= tid < issued:
            raise ValueError(f"task_ids: no task {tid} was submitted (ids so far: 0..{issued - 1})")
        out.append(tid)
    return out


class Cluster(ABC):
    """What every cluster offers, and what :func:`lwpd.train`, :class:`lwpd.torch.CodedOptimizer`
    and the scikit-learn wrappers call: the interface of the package's docstring, with the
    parts every cluster shares (rounds of per-worker delays, the task count, the fault model,
    :meth:`as_completed`'s checks, :meth:`wait`, :meth:`reset`).

    A subclass implements :attr:`now`, :meth:`submit`, :meth:`cancel` and the hooks
    ``_iterate`` (the completions, in order), ``_never_finishes`` and ``_clear``, and sets
    ``_delays``, ``_n_workers``, ``_rng``, ``_rng_source``, ``_tasks`` (outstanding tasks),
    ``_round``, ``_round_delays``, ``_cost`` and ``_faults``, and ``_DEFAULT_DELAY`` (the
    delay model). A user's own cluster need not subclass it: :meth:`missing` names what an
    object lacks of :attr:`REQUIRED` (what ``CodedOptimizer`` checks), and a class whose
    methods ``submit``, ``as_completed``, ``cancel`` and ``new_round`` are callables counts as
    a subclass (``isinstance``; ``n_workers`` and ``now`` are often set per instance, so the
    class test cannot ask for them).
    """

    #: What a training loop calls on a cluster.
    REQUIRED = ("submit", "as_completed", "cancel", "new_round", "n_workers", "now")
    _METHODS = ("submit", "as_completed", "cancel", "new_round")

    @classmethod
    def __subclasshook__(cls, other: type) -> bool:
        if cls is Cluster:
            return all(callable(getattr(other, name, None)) for name in cls._METHODS) or NotImplemented
        return NotImplemented

    @classmethod
    def missing(cls, obj: Any) -> list[str]:
        """The names of :attr:`REQUIRED` that ``obj`` lacks (empty for a cluster)."""
        return [name for name in cls.REQUIRED if not hasattr(obj, name)]

    @property
    @abstractmethod
    def now(self) -> float:
        """The cluster clock."""

    @abstractmethod
    def submit(self, worker: int, fn: Callable[..., Any], *args: Any, work: float = 1.0, floats: float = 0.0,
               **kwargs: Any) -> int:
        """Hand ``fn(*args, **kwargs)`` to a worker; its task id."""

    @abstractmethod
    def cancel(self, task_ids: Any = None) -> int:
        """Cancel outstanding tasks (all by default); how many were cancelled."""

    @abstractmethod
    def _iterate(self, deadline: float | None, k: int | None, errors: str) -> Iterator[Completion]:
        """The completions, in order, until the deadline, the k-th or nothing can finish."""

    @abstractmethod
    def _never_finishes(self, task: Any) -> bool:
        """Whether an outstanding task can never finish (its worker's delay is infinite)."""

    @abstractmethod
    def _clear(self) -> None:
        """Clock to 0 and no task: the state of a new cluster."""

    def as_completed(self, deadline: float | None = None, k: int | None = None,
                     errors: str = "raise") -> Iterator[Completion]:
        """Yield finished tasks in completion order, on the cluster clock.

        Parameters
        ----------
        deadline : float, optional
            Cluster-clock time. Tasks finishing at or before it are yielded; when the
            iteration ends, the clock is at the deadline if it was still ahead (the
            simulated cluster advances it; a real one sleeps until then).
        k : int, optional
            Stop after ``k`` completions.
        errors : {"raise", "return"}, default "raise"
            What happens when a task raised (or its executor lost it): re-raise the
            exception here, or yield a :class:`Completion` carrying it (``error``) and go on.

        Yields
        ------
        Completion
            On the simulated cluster ``now`` equals ``completion.finished`` while it is
            handled; on a real one ``finished`` is when the master saw the task complete.

        Notes
        -----
        Without a deadline, the iteration also ends when no task can ever finish (nothing
        pending, or only tasks of workers with infinite delay). Tasks not yielded stay
        pending. Tasks may be submitted while iterating. An exception raised by a task is
        delivered as ``errors`` says (the task is then no longer pending).
        """
        deadline, k = check_stop(deadline, k, errors)
        return self._iterate(deadline, k, errors)

    def wait(self, deadline: float | None = None, k: int | None = None, errors: str = "raise") -> list[Completion]:
        """``list(self.as_completed(deadline, k, errors))``."""
        return list(self.as_completed(deadline, k, errors))

    def reset(self) -> None:
        """Cancel everything, restart the clock at 0, reset the delay and fault models and
        the seed (a real cluster's executor is left running)."""
        self.cancel()
        if self._delays is not None:
            self._delays.reset()
        if self._faults is not None:
            self._faults.reset()
        self._rng_source.reset()
        self._clear()

    _DEFAULT_DELAY = 1.0

    @property
    def n_workers(self) -> int:
        """Number of (logical) workers."""
        return self._n_workers

    @property
    def pending(self) -> int:
        """Number of submitted tasks not yet yielded by ``as_completed`` nor cancelled."""
        return len(self._tasks)

    @property
    def round(self) -> int:
        """Number of rounds started since construction or the last reset."""
        return self._round

    @property
    def round_delays(self) -> np.ndarray | None:
        """A copy of the current round's per-worker delays (None before the first round)."""
        return None if self._round_delays is None else self._round_delays.copy()

    @property
    def cost(self) -> Any:
        """The :class:`lwpd.cost.CostModel` that prices each result's communication."""
        return self._cost

    @property
    def faults(self) -> Any:
        """The fault model that corrupts some workers' results (None: honest workers)."""
        return self._faults

    def lost(self) -> list[int]:
        """Ids of the outstanding tasks that will never finish: their worker's delay was
        infinite in the round they were submitted in (it never returns, e.g. a
        :class:`lwpd.stragglers.Bernoulli` failure). A failure detector the cluster knows
        exactly -- the same knowledge by which ``as_completed`` stops waiting when nothing
        else can finish -- so a master can cancel them and free their workers.

        Returns
        -------
        list of int
            In increasing order.
        """
        return sorted(tid for tid, task in self._tasks.items() if self._never_finishes(task))

    def _completion(self, tid: int, worker: int, result: Any, error: BaseException | None, submitted: float,
                    finished: float, errors: str) -> Completion:
        """The record ``as_completed`` yields: a raised error re-raised (``errors="raise"``) or
        carried, a returned result passed through the fault model (a Byzantine worker lies
        about what it computed; an error stays an error)."""
        if error is not None:
            if errors == "raise":
                raise error
            return Completion(tid, worker, None, submitted, finished, error)
        if self._faults is not None:
            result = self._faults.corrupt(worker, result)
        return Completion(tid, worker, result, submitted, finished)

    def _admit(self, worker: Any, fn: Any, work: Any, floats: Any) -> tuple[int, float]:
        """Validate a submission; return ``(worker, modelled duration)``: the worker's delay
        in the current round (started now if none has been) times ``work``, plus the
        communication of ``floats`` (:meth:`lwpd.cost.CostModel.task_time`)."""
        worker = check_worker(worker, self._n_workers)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        work = check_work(work)
        floats = check_real("floats", floats, nonnegative=True)
        if self._round_delays is None:
            self.new_round()
        return worker, self._cost.task_time(float(self._round_delays[worker]), work, floats)

    def _admit_many(self, worker: Any, fn: Any, works: Any, floats: Any) -> tuple[int, list[float]]:
        """:meth:`_admit` for several tasks of one worker, validated at once: ``(worker,
        modelled duration of each)``."""
        worker = check_worker(worker, self._n_workers)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        works = [check_work(w) for w in works]  # the checks submit makes, task by task
        floats = [check_real("floats", f, nonnegative=True) for f in floats]
        if self._round_delays is None:
            self.new_round()
        delay = float(self._round_delays[worker])
        return worker, [self._cost.task_time(delay, w, f) for w, f in zip(works, floats)]

    def new_round(self) -> np.ndarray:
        """Start a round: draw fresh per-worker delays, used by tasks submitted from now on.

        Returns
        -------
        numpy.ndarray
            A copy of the delays (modelled seconds per unit of work), shape ``(n_workers,)``.
        """
        self._round_delays = sample_delays(self._delays, self._n_workers, self._rng, default=self._DEFAULT_DELAY)
        self._round += 1
        return self._round_delays.copy()
