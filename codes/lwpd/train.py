"""Coded gradient descent under stragglers: the training loop and its history."""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np

from lwpd import _config
from lwpd._history import History
from lwpd._quasi_newton import LbfgsMemory, backtrack
from lwpd._validation import as_rng, check_bool, check_choice, check_int, check_real
from lwpd.schemes._base import MalformedResult

__all__ = ["History", "train"]

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
    placement: Any = "iid",
    acceleration: str | None = None,
) -> History:
    """Gradient descent where each step's gradient is computed by workers of a cluster.

    Each step submits the scheme's tasks at the current parameters, folds results into the
    scheme as they arrive, stops listening by the policy's rule, cancels what is still
    outstanding, and steps with the decoded estimate (no step when nothing is decodable,
    as with uncoded gradients before the last straggler).

    **Schemes with memory** (``LWPD(memory=True)``, ``IgnoreStragglers(memory=True)``) keep
    the latest value of every row across steps, so nothing is cancelled at the end of a
    synchronous step: a worker still busy with an earlier step's task gets no new one, its
    task runs on, and its result is folded in when it arrives (counted ``late``), tagged with
    the step it was computed at. Two kinds of task are cancelled at a step's end (counted
    ``dropped``): a task the cluster has lost (:meth:`SimulatedCluster.lost`: its worker never
    returns this round -- the same failure detector by which a waiting step ends early for
    every scheme), and a task whose result would be older than the scheme's ``max_age``
    (useless, and its worker is freed). A step then uses the freshest value of every row not
    older than ``max_age``. **Step rule:** stale values make gradient descent with a fixed
    ``1 / L`` step diverge (it does at staleness 10 on a well-conditioned least squares, and
    already at ``max_staleness=2`` under ``policy="async"``), so a scheme with memory, and
    every step of ``policy="async"``, steps with ``lr / (1 + s)``, where ``s``
    (``History.staleness``) is the weighted mean age of the values its estimate used, each row
    weighed by its share of the gradient (its shard's rows; for LWPD the worst codeword;
    asynchronous results without memory: the mean lag of the step's results). For gradient descent on a
    quadratic whose rows share one curvature the delayed recursion ``x+ = x - (lr L / (1 +
    s)) sum_i a_i x_{-tau_i}`` with ``s = sum_i a_i tau_i`` is stable for every set of delays
    (checked over random delay sets by the tests), and with no stale row it is the plain
    step. ``History.lr`` records the step taken.

    Parameters
    ----------
    problem : LeastSquares, Logistic or Softmax
    scheme : Scheme
        For example ``lwpd.schemes.LWPD()`` or ``lwpd.schemes.Uncoded()``.
    cluster : SimulatedCluster or ExecutorCluster
    lr : float, optional
        Step size; default ``1 / problem.lipschitz()``, with ``acceleration="lbfgs"`` computed
        only when a gradient step needs it (for a scheme with memory and under
        ``policy="async"``, divided by ``1 + staleness`` each step, above).
    max_steps : int, default 100
    time_budget : float, optional
        Stop once the cluster clock passes this.
    policy : {"deadline", "first_k", "async"}, default "deadline"
        ``"deadline"``: each step decodes what arrived within ``deadline`` time units of its
        start (or steps as soon as no task is outstanding). ``"first_k"``: each step waits for the first ``k`` results. ``"async"``:
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
        be computed on. A scheme with memory uses its own ``max_age`` instead.
    target_loss : float, optional
        Stop once the loss is at or below this.
    callback : callable, optional
        ``callback(step, theta, history)`` after every step; return ``True`` to stop.
    progress : bool, default True
        Show a tqdm progress bar.
    seed : int or numpy.random.Generator, optional
        Seeds the placement of the data and the scheme's assignment of codewords to workers.
    theta0 : array_like, optional
        Starting parameters (zeros by default).
    track_error : bool, default True
        Compute the exact gradient at every step to record ``History.grad_error``. It is a
        diagnostic only and costs one more pass over the data per step; ``False`` records
        ``nan`` instead.
    placement : str or sequence of array_like, default "iid"
        Which rows each worker holds, for every scheme alike (:mod:`lwpd.placement`):
        ``"iid"`` (a seeded shuffle), ``"sorted"`` (contiguous rows in order of label, or
        of target for regression), ``"dirichlet:alpha=A"`` (label skew, class proportions
        per worker from Dirichlet(A)) or one index array per worker.
    acceleration : {None, "nesterov", "lbfgs", "auto"}, default None
        ``"nesterov"``: Nesterov's accelerated gradient with adaptive restart (O'Donoghue &
        Candes, "Adaptive restart for accelerated gradient schemes", 2015). The tasks of
        step ``t`` are computed at the extrapolated point ``y = x_t + (t'/(t'+3)) (x_t -
        x_{t-1})`` (``t'`` steps since the last restart), and ``x_{t+1} = y - lr g_hat``. The
        momentum restarts whenever the step points uphill (``<g_hat, x_{t+1} - x_t> > 0``)
        or the loss rose, so an inexact (partially decoded) gradient cannot build up
        momentum in a bad direction. It cuts the steps to a tolerance roughly from the
        condition number ``kappa`` to ``sqrt(kappa)``. Synchronous policies and schemes
        without memory only (stale gradients and momentum do not mix; a scheme has memory
        when its ``memory`` attribute is true, as a custom scheme that keeps values across
        steps should declare); ``History.loss`` is
        the loss at ``x``. ``"lbfgs"``: limited-memory BFGS (Nocedal & Wright, Algorithm 7.4;
        the last ``_config.LBFGS_MEMORY`` curvature pairs) whenever the decoded gradient is
        exact (:meth:`Scheme.exact`: every piece of it recovered, e.g. every task arrived),
        with a backtracking line search for sufficient decrease (Armijo) on the loss the
        master evaluates after every step anyway -- an accepted first trial costs nothing
        more; each further trial is one more loss evaluation, never a task round. A pair
        ``(s, y)`` is formed only from exact gradients, so a partially decoded gradient
        never enters the curvature memory; a step whose gradient is not exact, or whose
        search fails, is a plain gradient step of size ``lr`` (``1 / L`` computed then, when
        first needed). The first quasi-Newton step moves a unit distance (or ``lr`` times the
        gradient when ``lr`` is given); ``History.lr`` records each step's length along its
        direction. The search's extra loss evaluations, like the loss itself, are the
        master's and are not charged to the cluster's time. On a smooth problem with exact gradients it
        takes a few tens of steps where Nesterov takes hundreds. The same policies and
        schemes as ``"nesterov"``. ``"auto"``: ``"nesterov"`` where it applies, plain steps
        elsewhere.

    Returns
    -------
    History

    Raises
    ------
    Exception
        Whatever stops a run (an error of the problem, the scheme or the cluster) carries the
        :class:`History` recorded up to that point as its ``history`` attribute. A worker's
        bad result never stops a run: one that raised counts as failed; one that is not
        finite, too large or malformed as rejected; a step whose estimate overflowed as skipped.

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
    from lwpd.placement import check_placement, shard_rows

    check_choice("policy", policy, ("deadline", "first_k", "async"))
    track_error = check_bool("track_error", track_error)
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
    if acceleration is not None:
        check_choice("acceleration", acceleration, ("nesterov", "lbfgs", "auto"))
        allowed = policy != "async" and not _has_memory(scheme)
        if acceleration == "auto":
            acceleration = "nesterov" if allowed else None
        elif not allowed:
            raise ValueError(f"acceleration={acceleration!r} needs a synchronous policy and a scheme without memory "
                             f"(stale gradients mix with neither momentum nor curvature pairs); got policy={policy!r}, "
                             f"scheme {getattr(scheme, 'name', type(scheme).__name__)!r}")
    placement = check_placement(placement)
    rng = as_rng("seed", seed)
    scheme.bind(problem, cluster.n_workers, rng, shards=shard_rows(problem, cluster.n_workers, placement, rng))
    if lr is not None:
        lr = check_real("lr", lr, positive=True)
    elif acceleration != "lbfgs":  # (quasi-Newton steps need 1/L only for an inexact gradient: then)
        lr = 1.0 / problem.lipschitz()
    theta = np.zeros(problem.n_params) if theta0 is None else np.array(theta0, dtype=float)
    if theta.shape != (problem.n_params,):
        raise ValueError(f"theta0 must have length {problem.n_params}, got shape {theta.shape}")
    n_tasks = len(scheme.tasks(theta))
    if k is not None:
        k = check_int("k", k, minimum=1, maximum=n_tasks)
    elif policy == "async":
        k = max(1, n_tasks // 4)

    run = _Run(problem, theta, lr, max_steps, target_loss, time_budget, callback, cluster,
               History(scheme=getattr(scheme, "name", type(scheme).__name__), initial_loss=problem.loss(theta)),
               progress, bool(track_error), acceleration=acceleration)
    try:
        _setup(run, scheme, cluster)
        if policy == "async":
            _asynchronous(run, scheme, cluster, k, max_staleness)
        else:
            _synchronous(run, scheme, cluster, policy, deadline, k)
    except Exception as err:  # a run that must stop still hands back what it recorded
        err.history = run.history
        if hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note(f"lwpd.train: the History of the {len(run.history)} steps recorded before the error is "
                         "in this exception's .history")
        raise
    finally:
        run.history.outstanding = cluster.cancel()  # tasks still running when the run ended
        run.close()
    run.history.theta = run.theta
    return run.history


def _has_memory(scheme: Any) -> bool:
    """Whether ``scheme`` keeps its rows across steps (see :func:`train`)."""
    return bool(getattr(scheme, "memory", False))


class _Run:
    """State shared by the step loops: parameters, history, stopping rules, progress."""

    def __init__(self, problem, theta, lr, max_steps, target_loss, time_budget, callback, cluster, history, progress,
                 track_error, acceleration=None):
        self.problem, self.theta, self._lr, self.track_error = problem, theta, lr, track_error
        self._given_lr = lr
        self.max_steps, self.target_loss, self.time_budget = max_steps, target_loss, time_budget
        self.callback, self.cluster, self.history = callback, cluster, history
        self.bar = _progress(max_steps, history.scheme) if progress else None
        # Nesterov (train's acceleration=): the tasks are computed at `point`, the loss is
        # that of `theta`; `momentum_steps` counts steps since the last restart
        self.accelerate = acceleration == "nesterov"
        self.point = theta
        self.momentum_steps = 0
        self.curvature = LbfgsMemory() if acceleration == "lbfgs" else None

    @property
    def lr(self) -> float:
        """The gradient step size: given, or ``1 / L`` (for quasi-Newton runs computed at first
        use: they need it only when a gradient is not exact)."""
        if self._lr is None:
            self._lr = 1.0 / self.problem.lipschitz()
        return self._lr

    def step(self, estimate: np.ndarray | None, staleness: float, cost: "_StepCost", oldest: float = 0.0,
             stale: bool = False, exact: bool = False) -> bool:
        """Apply one step with ``estimate`` (none if ``None``), record it; True to stop.
        ``stale``: the estimate mixes values of several ages (memory, or asynchronous
        results), weighted mean ``staleness``: the step size is ``lr / (1 + staleness)``
        (:func:`train`). ``exact``: the estimate is the gradient (:meth:`Scheme.exact`),
        which a quasi-Newton step needs."""
        error = math.nan
        lr = math.nan
        loss = None
        skipped = estimate is not None and not bool(np.isfinite(estimate).all())
        if skipped:  # an overflow in the decode: never step on it
            estimate = None
        previous = self.theta
        if estimate is not None:
            if self.track_error:
                g = self.problem.gradient(self.point)
                norm = float(np.linalg.norm(g))
                error = float(np.linalg.norm(estimate - g)) / norm if norm > 0 else 0.0
            if self.curvature is not None and exact:
                lr, loss = self._quasi_newton(estimate)
            if loss is None:  # a gradient step
                lr = self.lr / (1.0 + staleness) if stale else self.lr
                self.theta = self.point - lr * estimate
        else:
            oldest = math.nan
        if loss is None:
            loss = self.problem.loss(self.theta)
        if self.accelerate:  # (before recording: the history's last loss is the previous step's)
            self._extrapolate(previous, estimate, loss)
        else:
            self.point = self.theta
        now = self.cluster.now
        self.history.record(time=now, loss=loss, grad_error=error, staleness=staleness, oldest=oldest, lr=lr,
                            skipped=int(skipped), **cost.counts())
        cost.clear()
        if self.bar is not None:
            # the postfix rides on update's redraw, which honours mininterval (set_postfix would
            # force one redraw per step: a line per step in a log)
            self.bar.set_postfix(loss=f"{loss:.4g}", t=f"{now:.3g}", refresh=False)
            self.bar.update(1)
        return (
            len(self.history) >= self.max_steps
            or (self.target_loss is not None and loss <= self.target_loss)
            or (self.time_budget is not None and now >= self.time_budget)
            or bool(self.callback is not None and self.callback(len(self.history) - 1, self.theta, self.history))
        )

    def _extrapolate(self, previous: np.ndarray, estimate: np.ndarray | None, loss: float) -> None:
        """The next point of Nesterov's method, restarting the momentum when the last step
        pointed uphill (gradient test) or raised the loss (function test), or was not taken."""
        move = self.theta - previous
        last_loss = self.history.loss[-1] if len(self.history) else math.inf
        uphill = estimate is None or float(estimate @ move) > 0.0 or not loss <= last_loss
        if uphill:
            self.momentum_steps = 0
            self.point = self.theta
            return
        self.momentum_steps += 1
        weight = self.momentum_steps / (self.momentum_steps + 3.0)
        self.point = self.theta + weight * move
        extrapolated = getattr(self.problem, "extrapolated", None)  # a linear model: its scores there, with no pass
        if extrapolated is not None:
            extrapolated(self.point, self.theta, previous, weight)

    def _quasi_newton(self, gradient: np.ndarray) -> tuple[float, float | None]:
        """An L-BFGS step from ``point`` (= ``theta``) with the exact ``gradient``: ``(step
        length along the direction, loss at the new theta)``, or ``(nan, None)`` when the line
        search found no decrease (the memory is cleared; the caller takes a gradient step)."""
        point = self.point
        loss0 = self.history.loss[-1] if len(self.history) else self.history.initial_loss
        self.curvature.observe(point, gradient)
        direction = self.curvature.direction(gradient)
        slope = float(gradient @ direction)
        if not slope < 0.0:  # not a descent direction (rounding in the pairs): start the memory afresh
            self.curvature.clear()
            self.curvature.observe(point, gradient)
            direction, slope = -gradient, -float(gradient @ gradient)
            if slope == 0.0:  # a stationary point: stay
                return 0.0, loss0
        # the first step (and the first after the memory was cleared) moves a unit distance, as
        # L-BFGS-B's does, or lr times the gradient when lr was given
        first = 1.0 if self.curvature.pairs else (self._given_lr or 1.0 / math.sqrt(-slope))
        trial = [point]

        def loss_at(length: float) -> float:
            trial[0] = point + length * direction
            return self.problem.loss(trial[0])

        found = backtrack(loss_at, loss0, slope, first)
        if found is None:
            self.curvature.clear()
            return math.nan, None
        # the search accepts the trial it evaluated last: the very array whose loss (and
        # scores) were computed
        self.theta = trial[0]
        return found

    def close(self) -> None:
        if self.bar is not None:
            if self.bar.n < self.bar.total:  # stopped early (target, time budget, callback): say so
                self.bar.set_postfix_str(f"stopped after {self.bar.n} of {self.bar.total} steps", refresh=True)
            self.bar.close()


class _StepCost:
    """What one step has cost so far -- compute dispatched, floats received, master seconds --
    and what happened to each of its tasks (folded, failed, rejected, dropped)."""

    def __init__(self) -> None:
        self._floats_of: dict[int, float] = {}  # outstanding task id -> floats its result sends
        self.clear()

    def clear(self) -> None:
        """Start counting a new step (tasks still outstanding keep their sizes: async, memory)."""
        self.compute = 0.0
        self.floats = 0.0
        self.decode_time = 0.0
        self.dispatched = self.received = self.failed = self.rejected = self.excluded = self.dropped = self.late = 0
        self.unverified = 0

    def counts(self) -> dict[str, float]:
        """The step's record for :meth:`History.record` (all but time, loss, error, staleness)."""
        return {"compute": self.compute, "floats": self.floats, "decode_time": self.decode_time,
                "dispatched": self.dispatched, "received": self.received, "failed": self.failed,
                "rejected": self.rejected, "excluded": self.excluded, "dropped": self.dropped, "late": self.late,
                "unverified": self.unverified}

    def forget_outstanding(self, cancelled: int) -> None:
        """``cancelled`` outstanding tasks were cancelled: their results will never be received."""
        self._floats_of.clear()
        self.dropped += cancelled

    def cancel(self, cluster: Any, task_ids: list[int]) -> None:
        """Cancel ``task_ids`` (outstanding), counting each as dropped."""
        if task_ids:
            self.dropped += cluster.cancel(task_ids)
            for tid in task_ids:
                self._floats_of.pop(tid, None)

    def submit(self, cluster: Any, task: Any, alone: bool = False) -> int:
        """Submit ``task`` to ``cluster``, counting its compute; returns the task id.
        ``alone``: the task runs on its own (re-dispatched), charged its ``rerun_work``."""
        work = task.rerun_work if alone and task.rerun_work is not None else task.work
        tid = cluster.submit(task.worker, task.fn, *task.args, work=work, floats=task.floats)
        self._count(tid, work, task.floats)
        return tid

    def submit_worker(self, cluster: Any, tasks: list) -> list[int]:
        """Submit one worker's tasks of a step, in order; returns their ids. Tasks that share a
        ``joint`` (:class:`lwpd.schemes.Task`) are computed in one call where the cluster can
        (:meth:`lwpd.cluster.SimulatedCluster.submit_many`): the same results up to rounding
        and the same modelled times, less of the simulator's own wall time."""
        many = getattr(cluster, "submit_many", None)
        joint = tasks[0].joint if tasks else None
        if many is None or joint is None or len(tasks) < 2 or any(task.joint is not joint for task in tasks):
            return [self.submit(cluster, task) for task in tasks]
        ids = many(tasks[0].worker, joint, [task.args for task in tasks], [task.work for task in tasks],
                   [task.floats for task in tasks])
        for tid, task in zip(ids, tasks):
            self._count(tid, task.work, task.floats)
        return ids

    def _count(self, task_id: int, work: float, floats: float) -> None:
        self.compute += work
        self.dispatched += 1
        self._floats_of[task_id] = floats

    def arrived(self, task_id: int) -> None:
        """The result of ``task_id`` arrived: count the floats it sent."""
        self.floats += self._floats_of.pop(task_id, 0.0)

    def take(self, scheme: Any, done: Any, fold: bool = True, age: int | None = None) -> bool:
        """Account for one completion and fold its result into ``scheme`` if it may be:
        a task that raised counts as failed (it sent no result), a result the scheme does
        not accept (:meth:`Scheme.accepts`, e.g. NaN) as rejected, and with ``fold=False``
        (too stale) as dropped. ``age``: for a scheme with memory, the steps since the task
        was dispatched (folded with it; late when > 0). Returns True when the result was
        folded in."""
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
        try:
            if age is None:
                self.timed(scheme.fold, done.worker, done.result)
            else:
                self.timed(lambda: scheme.fold(done.worker, done.result, age=age))
        except MalformedResult:  # refused before the scheme changed any state
            self.rejected += 1
            return False
        self.late += age is not None and age > 0
        self.received += 1
        return True

    def decode(self, scheme: Any) -> np.ndarray | None:
        """The scheme's estimate (timed), noting the results its decoder excluded."""
        estimate = self.timed(scheme.estimate)
        self.excluded = int(scheme.excluded()) if estimate is not None else 0
        self.unverified = int(scheme.unverified_blocks()) if estimate is not None else 0
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


def _lost(cluster: Any) -> list[int]:
    """Outstanding tasks the cluster knows will never finish (none for a cluster that cannot tell)."""
    lost = getattr(cluster, "lost", None)
    return list(lost()) if callable(lost) else []


def _synchronous(run: _Run, scheme: Any, cluster: Any, policy: str, deadline: float | None, k: int | None) -> None:
    """Each step: submit the tasks, listen by the policy's rule, step. Without memory, what
    is still outstanding is cancelled. With memory (:func:`train`), a worker still busy with
    an earlier step's tasks gets this step's tasks the moment it finishes them (never a
    second backlog, never idle), its late results are folded in, and only lost or
    hopelessly stale tasks are cancelled."""
    memory = _has_memory(scheme)
    cost = _StepCost()
    issued: dict[int, tuple[int, int]] = {}  # outstanding task id -> (step it was dispatched in, worker)
    step = 0
    while True:
        cluster.new_round()
        started = cluster.now
        scheme.begin()
        waiting: dict[int, list] = {}  # worker -> this step's tasks, until the worker is free
        for task in scheme.tasks(run.point):
            waiting.setdefault(task.worker, []).append(task)
        backlog = Counter(worker for _, worker in issued.values())  # outstanding tasks per worker
        this_step = 0  # this step's tasks still outstanding

        def serve(worker: int) -> None:
            nonlocal this_step
            for tid in cost.submit_worker(cluster, waiting.pop(worker, [])):
                issued[tid] = (step, worker)
                backlog[worker] += 1
                this_step += 1

        for worker in [w for w in waiting if not backlog[w]]:
            serve(worker)
        stop = {"deadline": started + deadline} if policy == "deadline" else {"k": k}
        for done in cluster.as_completed(errors="return", **stop):
            dispatched_in, worker = issued.pop(done.task_id)
            backlog[worker] -= 1
            this_step -= dispatched_in == step
            cost.take(scheme, done, age=step - dispatched_in if memory else None)
            if not backlog[worker]:
                serve(worker)  # a busy worker is free: this step's tasks, at this step's parameters
            # timed as decoding: an exact scheme's readiness is its decode (kept for the step)
            if policy == "first_k" and k is None and cost.timed(scheme.ready, cost.received):
                break
            if this_step == 0 and not any(backlog.values()):  # everything arrived: no reason to wait out a deadline
                break
        if memory:
            # lost tasks, and tasks whose result would be too old to use next step, free their workers
            hopeless = {tid for tid, (at, _) in issued.items() if step + 1 - at > scheme.max_age}
            ended = sorted(hopeless.union(_lost(cluster)))
            cost.cancel(cluster, ended)
            for tid in ended:
                issued.pop(tid, None)
        else:
            cost.forget_outstanding(cluster.cancel())
            issued.clear()
        estimate = cost.decode(scheme)
        staleness, oldest = scheme.staleness() if memory else (0.0, 0.0)
        exact = run.curvature is not None and estimate is not None and scheme.exact()
        if run.step(estimate, staleness, cost, oldest, stale=memory, exact=exact):
            return
        step += 1


def _asynchronous(run: _Run, scheme: Any, cluster: Any, k: int, max_staleness: int) -> None:
    """Workers never wait: each result is folded in the moment it arrives and its task is
    re-dispatched at once with the newest parameters. The master steps as soon as ``k``
    results have been folded since its last step and the scheme can decode, then starts a
    new estimate. A result computed on parameters more than ``max_staleness`` steps old is
    dropped (and counted); a task that failed is counted and dispatched again. A scheme with
    memory keeps its rows across steps instead of starting afresh, accepts results up to its
    own ``max_age`` and steps with the staleness-aware step of :func:`train`.

    A task that will not finish -- one the cluster knows is lost (a failed worker), or one
    outstanding for more than ``_config.ASYNC_LOST_AFTER`` times the median duration of the
    results so far (a hung worker) -- holds its worker only until the master steps, or until
    that timeout if no step comes (a scheme that needs every worker): it is then cancelled
    (counted dropped) and dispatched again in a fresh round of delays. When nothing
    outstanding can finish for ``_config.ASYNC_MAX_DEAD_ROUNDS`` fresh rounds in a row, the
    run stops with a warning saying why."""
    memory = _has_memory(scheme)
    oldest_allowed = scheme.max_age if memory else max_staleness
    version = 0
    issued: dict[int, tuple[int, Any, float]] = {}  # task id -> (parameter version, task key, submitted at)
    durations: list[float] = []  # of the results so far (the timeout for a task that never finishes)
    shortest = math.inf  # of those durations: a bound below their median, kept as they come
    cost = _StepCost()

    def current_tasks() -> dict[Any, Any]:
        return {i if task.key is None else task.key: task for i, task in enumerate(scheme.tasks(run.theta))}

    def dispatch(keys: Iterable[Any], alone: bool = False) -> None:
        tasks = current_tasks()
        for key in keys:
            issued[cost.submit(cluster, tasks[key], alone)] = (version, key, cluster.now)

    def redispatch(task_ids: list[int], fresh_round: bool) -> None:
        """Cancel ``task_ids`` (dropped) and dispatch their tasks again (in a fresh round of
        delays when no step has drawn one since they were lost)."""
        if not task_ids:
            return
        keys = [issued.pop(tid)[1] for tid in task_ids]
        cost.cancel(cluster, task_ids)
        if fresh_round:
            cluster.new_round()
        dispatch(keys, alone=True)

    def overdue() -> list[int]:
        if not durations or not issued:
            return []
        now = cluster.now
        oldest = now - min(at for _, _, at in issued.values())
        if oldest <= _config.ASYNC_LOST_AFTER * shortest:  # nothing can be overdue: skip the median
            return []
        limit = _config.ASYNC_LOST_AFTER * float(np.median(durations))
        return sorted(tid for tid, (_, _, at) in issued.items() if now - at > limit)

    cluster.new_round()
    scheme.begin()
    dispatch(current_tasks())
    n_tasks = len(issued)
    lag_sum = 0
    lag_max = 0
    unfolded = 0  # results in a row that could not be folded in
    dead_rounds = 0  # fresh rounds in a row in which nothing outstanding could finish
    while True:
        done = next(iter(cluster.as_completed(k=1, errors="return")), None)
        if done is None:  # nothing outstanding can finish in this round: free the lost tasks in a fresh one
            dead_rounds += 1
            if dead_rounds > _config.ASYNC_MAX_DEAD_ROUNDS or not issued:
                warnings.warn(f"policy='async' stopped after {len(run.history)} steps: no outstanding task could "
                              f"finish in {dead_rounds} fresh rounds of delays in a row (every worker failed)",
                              RuntimeWarning, stacklevel=3)
                run.step(None, math.nan, cost)
                return
            redispatch(sorted(issued), fresh_round=True)
            continue
        dead_rounds = 0
        computed_on, key, _ = issued.pop(done.task_id)
        lag = version - computed_on
        if done.ok:
            durations.append(done.finished - done.submitted)
            shortest = min(shortest, durations[-1])
        if cost.take(scheme, done, fold=lag <= oldest_allowed, age=lag if memory else None):
            lag_sum += lag
            lag_max = max(lag_max, lag)
            unfolded = 0
        else:
            unfolded += 1
            if unfolded > _config.ASYNC_MAX_UNFOLDED * n_tasks:
                raise RuntimeError(
                    f"{unfolded} results in a row could not be folded in ({cost.failed} failed, {cost.rejected} "
                    f"rejected, {cost.dropped} too stale this step): every worker keeps failing") from done.error
        dispatch([key], alone=True)  # the same task again, on the newest parameters
        stepped = False
        if cost.received >= k:
            estimate = cost.decode(scheme)
            if estimate is not None:
                if memory:
                    staleness, oldest = scheme.staleness()
                else:
                    staleness, oldest = lag_sum / cost.received, lag_max
                if run.step(estimate, staleness, cost, oldest, stale=True):  # results up to max_staleness steps old
                    return
                version += 1
                cluster.new_round()
                scheme.begin()
                lag_sum = lag_max = 0
                stepped = True
                # a lost task would hold its worker for good: dispatch it again in this fresh round
                redispatch(sorted(set(_lost(cluster)).union(overdue())), fresh_round=False)
        if not stepped:
            redispatch(overdue(), fresh_round=True)


def _progress(total: int, name: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a convenience: without tqdm, run quietly
        return None
    import sys

    # On a terminal the bar redraws in place; into a log file or a pipe every redraw is a new
    # line, so there it redraws at most every PROGRESS_LOG_INTERVAL seconds.
    interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
    return tqdm(total=total, desc=name, leave=False,
                mininterval=0.1 if interactive else _config.PROGRESS_LOG_INTERVAL)
