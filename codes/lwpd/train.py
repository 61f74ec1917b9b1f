"""Coded gradient descent under stragglers: the training loop and its history."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lwpd._validation import as_rng, check_choice, check_int, check_real

__all__ = ["History", "train"]

_FIELDS = ("time", "loss", "grad_error", "received", "dropped", "staleness")


@dataclass
class History:
    """Per-step record of a training run.

    One entry per step in each list: ``time`` (cluster time at the end of the step,
    simulated or wall seconds), ``loss`` (full objective after the step), ``grad_error``
    (``||g_hat - g|| / ||g||`` of the decoded gradient against the exact one, computed for
    diagnostics only; ``nan`` when nothing could be decoded), ``received`` (results folded
    in), ``dropped`` (tasks still outstanding when the step ended, then cancelled) and
    ``staleness`` (mean parameter-version lag of the folded results; 0 for synchronous
    steps). ``scheme`` names the scheme; ``theta`` holds the final parameters.
    """

    scheme: str = ""
    time: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    grad_error: list = field(default_factory=list)
    received: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    staleness: list = field(default_factory=list)
    #: Parameters at the end of the run (not saved by :meth:`save`).
    theta: Any = field(default=None, repr=False, compare=False)

    def record(self, **values: float) -> None:
        """Append one step (every field of :data:`_FIELDS`)."""
        for name in _FIELDS:
            getattr(self, name).append(float(values[name]) if name in ("time", "loss", "grad_error", "staleness") else int(values[name]))

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
        return {"scheme": self.scheme, **{name: list(getattr(self, name)) for name in _FIELDS}}

    def save(self, path: str | Path) -> None:
        """Write the history as JSON."""
        Path(path).write_text(json.dumps(self.as_dict(), allow_nan=True))

    @classmethod
    def load(cls, path: str | Path) -> "History":
        """Read a history written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        return cls(scheme=data.get("scheme", ""), **{name: data[name] for name in _FIELDS})

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
    target_loss: float | None = None,
    callback: Callable[[int, np.ndarray, History], Any] | None = None,
    progress: bool = True,
    seed: Any = None,
    theta0: Any = None,
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
    policy : {"deadline", "first_k"}, default "deadline"
        ``"deadline"``: each step decodes what arrived within ``deadline`` time units of its
        start. ``"first_k"``: each step waits for the first ``k`` results. (The asynchronous
        policy of the design is not implemented yet.)
    deadline : float
        Required with ``policy="deadline"``.
    k : int, optional
        With ``policy="first_k"``: the number of results to wait for (1 <= k <= number of
        tasks). ``None`` waits until the scheme is ready (:meth:`Scheme.ready`): all shards
        for uncoded, ``n - s`` workers for gradient coding, ``2(K-1)+1`` for LCC, one copy of
        each shard for replication, and the scheme's ``wait_for`` fraction for LWPD and
        ignore-stragglers.
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
    check_choice("policy", policy, ("deadline", "first_k"))
    max_steps = check_int("max_steps", max_steps, minimum=1)
    if policy == "deadline":
        if deadline is None:
            raise ValueError("deadline is required with policy='deadline' (time units after each step starts)")
        deadline = check_real("deadline", deadline, positive=True)
    if time_budget is not None:
        time_budget = check_real("time_budget", time_budget, positive=True)
    rng = as_rng("seed", seed)
    scheme.bind(problem, cluster.n_workers, rng)
    lr = 1.0 / problem.lipschitz() if lr is None else check_real("lr", lr, positive=True)
    theta = np.zeros(problem.n_params) if theta0 is None else np.array(theta0, dtype=float)
    if theta.shape != (problem.n_params,):
        raise ValueError(f"theta0 must have length {problem.n_params}, got shape {theta.shape}")
    n_tasks = len(scheme.tasks(theta))
    if policy == "first_k" and k is not None:
        k = check_int("k", k, minimum=1, maximum=n_tasks)

    history = History(scheme=getattr(scheme, "name", type(scheme).__name__))
    bar = _progress(max_steps, history.scheme) if progress else None
    try:
        for step in range(max_steps):
            cluster.new_round()
            started = cluster.now
            scheme.begin()
            for task in scheme.tasks(theta):
                cluster.submit(task.worker, task.fn, *task.args, work=task.work)
            stream = cluster.as_completed(deadline=started + deadline) if policy == "deadline" else cluster.as_completed(k=k)
            received = 0
            for done in stream:
                scheme.fold(done.worker, done.result)
                received += 1
                if policy == "first_k" and k is None and scheme.ready(received):
                    break
            dropped = cluster.pending
            cluster.cancel()
            estimate = scheme.estimate()
            g = problem.gradient(theta)
            if estimate is None:
                error = math.nan
            else:
                norm = float(np.linalg.norm(g))
                error = float(np.linalg.norm(estimate - g)) / norm if norm > 0 else 0.0
                theta = theta - lr * estimate
            loss = problem.loss(theta)
            history.record(time=cluster.now, loss=loss, grad_error=error, received=received, dropped=dropped, staleness=0.0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", t=f"{cluster.now:.3g}")
            if target_loss is not None and loss <= target_loss:
                break
            if time_budget is not None and cluster.now >= time_budget:
                break
            if callback is not None and callback(step, theta, history):
                break
    finally:
        if bar is not None:
            bar.close()
    history.theta = theta
    return history


def _progress(total: int, name: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a convenience: without tqdm, run quietly
        return None
    return tqdm(total=total, desc=name, leave=False)
