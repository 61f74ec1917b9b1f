"""Coded gradient descent under stragglers: the training loop and its history."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from lwpd import _config
from lwpd._validation import as_rng, check_choice, check_int, check_real

__all__ = ["History", "train"]

_FIELDS = ("time", "loss", "grad_error", "received", "dropped", "staleness", "compute", "floats", "decode_time",
           "dispatched", "failed", "rejected", "excluded")
_COUNTS = ("received", "dropped", "dispatched", "failed", "rejected", "excluded")
_SETUP = ("setup_time", "setup_compute", "setup_floats", "outstanding")
_FAULTS = ("dispatched", "failed", "rejected", "excluded")


@dataclass
class History:
    """Per-step record of a training run.

    One entry per step in each list: ``time`` (cluster time at the end of the step,
    simulated or wall seconds), ``loss`` (full objective after the step), ``grad_error``
    (``||g_hat - g|| / ||g||`` of the decoded gradient against the exact one, computed for
    diagnostics only; ``nan`` when nothing could be decoded), ``received`` (results folded
    in), ``dropped`` (tasks still outstanding when the step ended, then cancelled, or with
    ``policy="async"`` results dropped as too stale), ``staleness`` (mean parameter-version
    lag of the folded results; 0 for synchronous steps), ``compute`` (units of compute of
    the tasks dispatched in the step, all workers together, by :mod:`lwpd.cost`),
    ``floats`` (floats sent by the results received in the step) and ``decode_time``
    (wall-clock seconds the master spent folding results in and decoding the estimate).

    What happened to every task is counted, so nothing is lost or counted twice:
    ``dispatched`` (tasks submitted in the step), ``failed`` (tasks that raised, or that
    their executor lost, e.g. a Dask worker that died while running them too often; never
    folded), ``rejected`` (results that arrived but were refused before folding: not finite,
    :meth:`Scheme.accepts`), ``excluded`` (results folded in but left out of the decode by a
    robust decoder, as corrupted; they are also counted in ``received``). For synchronous
    steps ``dispatched == received + failed + rejected + dropped``; with ``policy="async"``
    the sums over the run balance the same way once ``outstanding`` (tasks still running
    when the run ended, then cancelled) is added to the right-hand side.

    ``setup_time``, ``setup_compute`` and ``setup_floats`` record a scheme's one-off setup
    (e.g. moment encoding; zero for most schemes); its time is included in ``time``.
    ``scheme`` names the scheme; ``theta`` holds the final parameters.
    """

    scheme: str = ""
    time: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    grad_error: list = field(default_factory=list)
    received: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    staleness: list = field(default_factory=list)
    compute: list = field(default_factory=list)
    floats: list = field(default_factory=list)
    decode_time: list = field(default_factory=list)
    setup_time: float = 0.0
    setup_compute: float = 0.0
    setup_floats: float = 0.0
    outstanding: float = 0.0
    dispatched: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    excluded: list = field(default_factory=list)
    #: Parameters at the end of the run (not saved by :meth:`save`).
    theta: Any = field(default=None, repr=False, compare=False)

    def record(self, **values: float) -> None:
        """Append one step: every field of :data:`_FIELDS` (the fault counts ``dispatched``,
        ``failed``, ``rejected`` and ``excluded`` default to 0)."""
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise TypeError(f"History.record got unknown fields {sorted(unknown)}; fields are {list(_FIELDS)}")
        for name in _FIELDS:
            value = values[name] if name in values or name not in _FAULTS else 0
            getattr(self, name).append(int(value) if name in _COUNTS else float(value))

    def totals(self) -> dict[str, float]:
        """The run's totals: steps, compute units and floats (setup included), decode seconds.

        Examples
        --------
        >>> h = History(scheme="demo")
        >>> h.record(time=1.0, loss=0.5, grad_error=0.0, received=4, dropped=0, staleness=0.0,
        ...          compute=4.0, floats=40, decode_time=0.001)
        >>> h.totals()["compute"]
        4.0
        """
        return {
            "steps": len(self),
            "compute": self.setup_compute + float(sum(self.compute)),
            "floats": self.setup_floats + float(sum(self.floats)),
            "decode_time": float(sum(self.decode_time)),
            **{name: int(sum(getattr(self, name))) for name in _FAULTS},
        }

    def __len__(self) -> int:
        return len(self.time)

    def time_to(self, loss: float) -> float:
        """First time the loss is at or below ``loss``; ``inf`` if never."""
        for t, value in zip(self.time, self.loss):
            if value <= loss:
                return t
        return math.inf

    def as_dict(self) -> dict[str, Any]:
        """Plain lists, ready for JSON."""
        return {"scheme": self.scheme, **{name: list(getattr(self, name)) for name in _FIELDS},
                **{name: getattr(self, name) for name in _SETUP}}

    def save(self, path: str | Path) -> None:
        """Write the history as JSON."""
        Path(path).write_text(json.dumps(self.as_dict(), allow_nan=True))

    @classmethod
    def load(cls, path: str | Path) -> "History":
        """Read a history written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        steps = len(data["time"])
        # files written before a field existed: NaN per step (zero for the fault counts and
        # the one-off setup)
        return cls(scheme=data.get("scheme", ""),
                   **{name: data.get(name, [0 if name in _FAULTS else math.nan] * steps) for name in _FIELDS},
                   **{name: data.get(name, 0.0) for name in _SETUP})

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Loss against time (log scale) on ``ax`` (a new figure if ``None``); returns ``ax``."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        ax.plot(self.time, self.loss, label=kwargs.pop("label", self.scheme), **kwargs)
        ax.set_xlabel("time")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        return ax


def train(
    problem: Any,
    scheme: Any,
    cluster: Any,
    *,
    lr: float | None = None,
    max_steps: int = 100,
    time_budget: float | None = None,
    policy: str = "deadline",
    deadline: float | None = None,
    k: int | None = None,
    max_staleness: int = 2,
    target_loss: float | None = None,
    callback: Callable[[int, np.ndarray, History], Any] | None = None,
    progress: bool = True,
    seed: Any = None,
    theta0: Any = None,
    track_error: bool = True,
) -> History:
    """Gradient descent where each step's gradient is computed by workers of a cluster.

    Each step submits the scheme's tasks at the current parameters, folds results into the
    scheme as they arrive, stops listening by the policy's rule, cancels what is still
    outstanding, and steps with the decoded estimate (no step when nothing is decodable,
    as with uncoded gradients before the last straggler).

    Parameters
    ----------
    problem : LeastSquares, Logistic or Softmax
    scheme : Scheme
        For example ``lwpd.schemes.LWPD()`` or ``lwpd.schemes.Uncoded()``.
    cluster : SimulatedCluster or ExecutorCluster
    lr : float, optional
        Step size; default ``1 / problem.lipschitz()``.
    max_steps : int, default 100
    time_budget : float, optional
        Stop once the cluster clock passes this.
    policy : {"deadline", "first_k", "async"}, default "deadline"
        ``"deadline"``: each step decodes what arrived within ``deadline`` time units of its
        start (or steps as soon as every task has arrived). ``"first_k"``: each step waits for the first ``k`` results. ``"async"``:
        workers never wait -- every result is folded in the moment it arrives, its task is
        re-dispatched with the newest parameters, and the master steps once ``k`` results
        (default a quarter of the tasks) have been folded since its last step and the scheme
        can decode; results more than ``max_staleness`` steps old are dropped and counted.
    deadline : float
        Required with ``policy="deadline"``.
    k : int, optional
        With ``policy="first_k"``: the number of tasks to wait for (1 <= k <= number of
        tasks; a task that failed counts among them). ``None`` waits until the scheme is ready (:meth:`Scheme.ready`): all shards
        for uncoded, ``n - s`` workers for gradient coding, ``2(K-1)+1`` for LCC, one copy of
        each shard for replication, and the scheme's ``wait_for`` fraction for LWPD and
        ignore-stragglers. With ``policy="async"``: results folded per step.
    max_staleness : int, default 2
        With ``policy="async"``: the oldest parameter version (in steps) a folded result may
        be computed on.
    target_loss : float, optional
        Stop once the loss is at or below this.
    callback : callable, optional
        ``callback(step, theta, history)`` after every step; return ``True`` to stop.
    progress : bool, default True
        Show a tqdm progress bar.
    seed : int or numpy.random.Generator, optional
        Seeds the scheme's assignment of data and codewords to workers.
    theta0 : array_like, optional
        Starting parameters (zeros by default).
    track_error : bool, default True
        Compute the exact gradient at every step to record ``History.grad_error``. It is a
        diagnostic only and costs one more pass over the data per step; ``False`` records
        ``nan`` instead.

    Returns
    -------
    History

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import train
    >>> from lwpd.cluster import SimulatedCluster
    >>> from lwpd.problems import LeastSquares
    >>> from lwpd.schemes import LWPD
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 7)); y = X @ np.arange(7.0)
    >>> h = train(LeastSquares(X, y), LWPD(block_size=4), SimulatedCluster(4, seed=0),
    ...           deadline=100.0, max_steps=200, progress=False, seed=0)
    >>> h.loss[-1] < 1e-6 * h.loss[0]
    True
    """
    check_choice("policy", policy, ("deadline", "first_k", "async"))
    if not isinstance(track_error, (bool, np.bool_)):
        raise TypeError(f"track_error must be True or False, got {track_error!r}")
    max_steps = check_int("max_steps", max_steps, minimum=1)
    max_staleness = check_int("max_staleness", max_staleness, minimum=0)
    if policy == "deadline":
        if deadline is None:
            raise ValueError("deadline is required with policy='deadline' (time units after each step starts)")
        deadline = check_real("deadline", deadline, positive=True)
    if time_budget is not None:
        time_budget = check_real("time_budget", time_budget, positive=True)
    if policy == "async" and max_staleness > 0 and getattr(scheme, "consistent_results", False):
        raise ValueError(f"{type(scheme).__name__} needs every result of a step computed at the same parameters "
                         f"(robust decoding takes stale values for lies): use max_staleness=0 with policy='async', "
                         f"or a synchronous policy; got max_staleness={max_staleness}")
    rng = as_rng("seed", seed)
    scheme.bind(problem, cluster.n_workers, rng)
    lr = 1.0 / problem.lipschitz() if lr is None else check_real("lr", lr, positive=True)
    theta = np.zeros(problem.n_params) if theta0 is None else np.array(theta0, dtype=float)
    if theta.shape != (problem.n_params,):
        raise ValueError(f"theta0 must have length {problem.n_params}, got shape {theta.shape}")
    n_tasks = len(scheme.tasks(theta))
    if k is not None:
        k = check_int("k", k, minimum=1, maximum=n_tasks)
    elif policy == "async":
        k = max(1, n_tasks // 4)

    run = _Run(problem, theta, lr, max_steps, target_loss, time_budget, callback, cluster,
               History(scheme=getattr(scheme, "name", type(scheme).__name__)), progress, bool(track_error))
    try:
        _setup(run, scheme, cluster)
        if policy == "async":
            _asynchronous(run, scheme, cluster, k, max_staleness)
        else:
            _synchronous(run, scheme, cluster, policy, deadline, k)
    finally:
        run.history.outstanding = cluster.cancel()  # tasks still running when the run ended (async)
        run.close()
    run.history.theta = run.theta
    return run.history


class _Run:
    """State shared by the step loops: parameters, history, stopping rules, progress."""

    def __init__(self, problem, theta, lr, max_steps, target_loss, time_budget, callback, cluster, history, progress,
                 track_error):
        self.problem, self.theta, self.lr, self.track_error = problem, theta, lr, track_error
        self.max_steps, self.target_loss, self.time_budget = max_steps, target_loss, time_budget
        self.callback, self.cluster, self.history = callback, cluster, history
        self.bar = _progress(max_steps, history.scheme) if progress else None

    def step(self, estimate: np.ndarray | None, staleness: float, cost: "_StepCost") -> bool:
        """Apply one step with ``estimate`` (none if ``None``), record it; True to stop."""
        error = math.nan
        if estimate is not None:
            if self.track_error:
                g = self.problem.gradient(self.theta)
                norm = float(np.linalg.norm(g))
                error = float(np.linalg.norm(estimate - g)) / norm if norm > 0 else 0.0
            self.theta = self.theta - self.lr * estimate
        loss = self.problem.loss(self.theta)
        now = self.cluster.now
        self.history.record(time=now, loss=loss, grad_error=error, staleness=staleness, **cost.counts())
        cost.clear()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", t=f"{now:.3g}")
        return (
            len(self.history) >= self.max_steps
            or (self.target_loss is not None and loss <= self.target_loss)
            or (self.time_budget is not None and now >= self.time_budget)
            or bool(self.callback is not None and self.callback(len(self.history) - 1, self.theta, self.history))
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _StepCost:
    """What one step has cost so far -- compute dispatched, floats received, master seconds --
    and what happened to each of its tasks (folded, failed, rejected, dropped)."""

    def __init__(self) -> None:
        self._floats_of: dict[int, float] = {}  # outstanding task id -> floats its result sends
        self.clear()

    def clear(self) -> None:
        """Start counting a new step (tasks still outstanding keep their sizes: async)."""
        self.compute = 0.0
        self.floats = 0.0
        self.decode_time = 0.0
        self.dispatched = self.received = self.failed = self.rejected = self.excluded = self.dropped = 0

    def counts(self) -> dict[str, float]:
        """The step's record for :meth:`History.record` (all but time, loss, error, staleness)."""
        return {"compute": self.compute, "floats": self.floats, "decode_time": self.decode_time,
                "dispatched": self.dispatched, "received": self.received, "failed": self.failed,
                "rejected": self.rejected, "excluded": self.excluded, "dropped": self.dropped}

    def forget_outstanding(self, cancelled: int) -> None:
        """``cancelled`` outstanding tasks were cancelled: their results will never be received."""
        self._floats_of.clear()
        self.dropped += cancelled

    def submit(self, cluster: Any, task: Any, alone: bool = False) -> int:
        """Submit ``task`` to ``cluster``, counting its compute; returns the task id.
        ``alone``: the task runs on its own (re-dispatched), charged its ``rerun_work``."""
        work = task.rerun_work if alone and task.rerun_work is not None else task.work
        tid = cluster.submit(task.worker, task.fn, *task.args, work=work, floats=task.floats)
        self.compute += work
        self.dispatched += 1
        self._floats_of[tid] = task.floats
        return tid

    def arrived(self, task_id: int) -> None:
        """The result of ``task_id`` arrived: count the floats it sent."""
        self.floats += self._floats_of.pop(task_id, 0.0)

    def take(self, scheme: Any, done: Any, fold: bool = True) -> bool:
        """Account for one completion and fold its result into ``scheme`` if it may be:
        a task that raised counts as failed (it sent no result), a result the scheme does
        not accept (:meth:`Scheme.accepts`, e.g. NaN) as rejected, and with ``fold=False``
        (too stale) as dropped. Returns True when the result was folded in."""
        if not done.ok:
            self._floats_of.pop(done.task_id, None)
            self.failed += 1
            return False
        self.arrived(done.task_id)
        if not fold:
            self.dropped += 1
            return False
        if not scheme.accepts(done.result):
            self.rejected += 1
            return False
        self.timed(scheme.fold, done.worker, done.result)
        self.received += 1
        return True

    def decode(self, scheme: Any) -> np.ndarray | None:
        """The scheme's estimate (timed), noting the results its decoder excluded."""
        estimate = self.timed(scheme.estimate)
        self.excluded = int(scheme.excluded()) if estimate is not None else 0
        return estimate

    def timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, its wall time added to the master's decode time."""
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.decode_time += time.perf_counter() - start


def _setup(run: _Run, scheme: Any, cluster: Any) -> None:
    """Run the scheme's one-off setup tasks until each has arrived once (a task whose worker
    never returns, that raised or that sent non-finite values is dispatched again in a fresh
    round) and record their cost. A Byzantine worker's setup result is not checked further:
    setup is trusted."""
    tasks = dict(enumerate(scheme.setup_tasks()))
    if not tasks:
        return
    cost = _StepCost()
    last_error = None
    for _ in range(_config.SETUP_MAX_ROUNDS):
        cluster.new_round()
        ids = {cost.submit(cluster, task): i for i, task in tasks.items()}
        for done in cluster.as_completed(errors="return"):
            if done.ok and scheme.accepts(done.result):
                cost.arrived(done.task_id)
                cost.timed(scheme.fold_setup, done.worker, done.result)
                del tasks[ids[done.task_id]]
            else:  # raised, or sent a non-finite result: dispatched again next round
                last_error = done.error or ValueError(f"setup task on worker {done.worker} returned non-finite values")
        cluster.cancel()
        cost.forget_outstanding(0)
        if not tasks:
            break
    else:
        raise RuntimeError(f"{len(tasks)} setup task(s) of {run.history.scheme} never returned in "
                           f"{_config.SETUP_MAX_ROUNDS} rounds (every worker that held them failed each time)"
                           ) from last_error
    history = run.history
    history.setup_time, history.setup_compute, history.setup_floats = cluster.now, cost.compute, cost.floats


def _synchronous(run: _Run, scheme: Any, cluster: Any, policy: str, deadline: float | None, k: int | None) -> None:
    """Each step: submit every task, listen by the policy's rule, cancel the rest, step."""
    cost = _StepCost()
    while True:
        cluster.new_round()
        started = cluster.now
        scheme.begin()
        for task in scheme.tasks(run.theta):
            cost.submit(cluster, task)
        stop = {"deadline": started + deadline} if policy == "deadline" else {"k": k}
        for done in cluster.as_completed(errors="return", **stop):
            cost.take(scheme, done)
            if policy == "first_k" and k is None and scheme.ready(cost.received):
                break
            if cluster.pending == 0:  # everything arrived: no reason to wait out a deadline
                break
        cost.forget_outstanding(cluster.cancel())
        if run.step(cost.decode(scheme), 0.0, cost):
            return


def _asynchronous(run: _Run, scheme: Any, cluster: Any, k: int, max_staleness: int) -> None:
    """Workers never wait: each result is folded in the moment it arrives and its task is
    re-dispatched at once with the newest parameters. The master steps as soon as ``k``
    results have been folded since its last step and the scheme can decode, then starts a
    new estimate. A result computed on parameters more than ``max_staleness`` steps old is
    dropped (and counted); a task that failed is counted and dispatched again."""
    version = 0
    issued: dict[int, tuple[int, Any]] = {}  # task id -> (parameter version, task key)
    cost = _StepCost()

    def current_tasks() -> dict[Any, Any]:
        return {i if task.key is None else task.key: task for i, task in enumerate(scheme.tasks(run.theta))}

    def dispatch(keys: Iterable[Any], alone: bool = False) -> None:
        tasks = current_tasks()
        for key in keys:
            issued[cost.submit(cluster, tasks[key], alone)] = (version, key)

    cluster.new_round()
    scheme.begin()
    dispatch(current_tasks())
    n_tasks = len(issued)
    lag_sum = 0
    unfolded = 0  # results in a row that could not be folded in
    while True:
        done = next(iter(cluster.as_completed(k=1, errors="return")), None)
        if done is None:  # nothing outstanding can ever finish (every worker failed)
            run.step(None, math.nan, cost)
            return
        computed_on, key = issued.pop(done.task_id)
        lag = version - computed_on
        if cost.take(scheme, done, fold=lag <= max_staleness):
            lag_sum += lag
            unfolded = 0
        else:
            unfolded += 1
            if unfolded > _config.ASYNC_MAX_UNFOLDED * n_tasks:
                raise RuntimeError(
                    f"{unfolded} results in a row could not be folded in ({cost.failed} failed, {cost.rejected} "
                    f"rejected, {cost.dropped} too stale this step): every worker keeps failing") from done.error
        dispatch([key], alone=True)  # the same task again, on the newest parameters
        if cost.received >= k:
            estimate = cost.decode(scheme)
            if estimate is not None:
                if run.step(estimate, lag_sum / cost.received, cost):
                    return
                version += 1
                cluster.new_round()
                scheme.begin()
                lag_sum = 0


def _progress(total: int, name: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a convenience: without tqdm, run quietly
        return None
    return tqdm(total=total, desc=name, leave=False)
