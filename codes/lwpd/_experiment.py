"""The comparison behind ``lwpd run``: every scheme on the same problem, cluster and seed."""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lwpd import _defaults
from lwpd.schemes import registry
from lwpd.train import train

DATASETS = ("digits", "breast_cancer", "wine", "diabetes", "synthetic")
MODELS = ("auto", "least_squares", "logistic", "softmax")
_NATURAL_MODEL = {"digits": "softmax", "breast_cancer": "logistic", "wine": "softmax", "diabetes": "least_squares", "synthetic": "least_squares"}
_STRAGGLERS = {
    "none": ("NoDelay", {}),
    "shifted-exp": ("ShiftedExponential", {"shift": 1.0, "rate": 0.5}),
    "exp": ("Exponential", {"mean": 1.0}),
    "pareto": ("Pareto", {"alpha": 1.5, "scale": 1.0}),
    "bernoulli": ("Bernoulli", {"p_fail": 0.1}),
    "slow": ("SlowWorkers", {"fraction": 0.1, "slowdown": 10.0}),
    "markov": ("MarkovBursty", {"p_stay_slow": 0.8, "p_stay_fast": 0.95, "slowdown": 10.0}),
}


def parse_stragglers(spec: str) -> Any:
    """A delay model from ``name[:key=value,...]``, e.g. ``shifted-exp:shift=1,rate=0.5``."""
    from lwpd import stragglers

    name, _, params = spec.partition(":")
    if name not in _STRAGGLERS:
        raise ValueError(f"--stragglers must start with one of {', '.join(_STRAGGLERS)}; got {name!r}")
    cls_name, defaults = _STRAGGLERS[name]
    kwargs = dict(defaults)
    for item in filter(None, params.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise ValueError(f"--stragglers {name}: parameters are key=value with keys {allowed}; got {item!r}")
        try:
            kwargs[key] = float(value)
        except ValueError:
            raise ValueError(f"--stragglers {name}: {key} must be a number, got {value!r}") from None
    try:
        return getattr(stragglers, cls_name)(**kwargs)
    except (TypeError, ValueError) as err:  # the model's own message, with the flag it came from
        raise ValueError(f"--stragglers {spec}: {err}") from None


def load_problem(dataset: str, model: str, seed: int):
    """Train/test problems from an embedded data set, features standardised on the train part."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from lwpd.problems import LeastSquares, Logistic, Softmax

    if dataset == "synthetic":
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((4000, 40))
        y = X @ rng.standard_normal(40) + 0.5 * rng.standard_normal(4000)
    else:
        X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    model = _NATURAL_MODEL[dataset] if model == "auto" else model
    if model != "least_squares" and dataset in ("diabetes", "synthetic"):
        raise ValueError(f"--model {model} needs class labels; {dataset} is a regression data set")
    if model == "logistic" and len(np.unique(y)) != 2:
        raise ValueError(f"--model logistic needs two classes; {dataset} has {len(np.unique(y))} (use softmax)")
    stratify = None if model == "least_squares" else y
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=stratify)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    if model == "least_squares":
        shift, scale = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - shift) / scale, (y_te - shift) / scale
    cls = {"least_squares": LeastSquares, "logistic": Logistic, "softmax": Softmax}[model]
    alpha = 1e-2 if model == "least_squares" else 1e-3
    return cls(X_tr, y_tr, alpha=alpha), cls(X_te, y_te, alpha=alpha), model


def _score(test: Any, theta: np.ndarray) -> tuple[str, float]:
    """Test accuracy for classifiers, R^2 for least squares."""
    W, b = test.unpack(theta)
    scores = test.X @ np.atleast_2d(W).T + b
    if test.__class__.__name__ == "LeastSquares":
        y = test.y
        return "R^2", float(1 - np.sum((scores.ravel() - y) ** 2) / np.sum((y - y.mean()) ** 2))
    labels = scores.argmax(axis=1) if scores.shape[1] > 1 else (scores.ravel() > 0).astype(int)
    return "accuracy", float(np.mean(test.classes_[labels] == test.y))


@dataclass
class Outcome:
    scheme: str
    history: Any
    time_to_target: float
    final_loss: float
    metric_name: str
    metric: float
    grad_error: float
    compute: float  # units of compute per worker per step (one unit = an uncoded shard gradient)
    floats: float  # floats received per worker per step
    decode_ms: float  # master's fold + decode wall time per step, milliseconds
    steps_taken: int | None = None  # steps that moved the parameters (None: not known, nothing marked)


def run(
    dataset: str = "digits",
    model: str = "auto",
    schemes: tuple[str, ...] = registry.DEFAULT_NAMES,
    workers: int = _defaults.WORKERS,
    stragglers: str = "shifted-exp:shift=1,rate=0.5",
    policy: str = "first_k",
    backend: str = "simulated",
    seed: int = 0,
    max_steps: int = 300,
    latency: float = 0.0,
    bandwidth: float = math.inf,
    out: str | Path | None = "lwpd-results",
    progress: bool = True,
    dask_address: str | None = None,
    placement: Any = "iid",
    dask_security: Any = None,
) -> list[Outcome]:
    """Train with every scheme on the same problem, cluster model and seed; write results.

    ``backend``: ``"simulated"`` (virtual clock), ``"threads"`` / ``"processes"`` (a local
    pool) or ``"dask"`` (a LocalCluster with one worker process per core, or the scheduler at
    ``dask_address``, with TLS credentials ``dask_security``, a
    ``distributed.security.Security``); the real backends sleep 1 ms per modelled time unit. ``placement``:
    which training rows each worker holds, the same for every scheme (:mod:`lwpd.placement`:
    ``"iid"``, ``"sorted"``, ``"dirichlet:alpha=A"``, or one index array per worker into the
    75% training split); invalid specs raise ``ValueError`` or ``TypeError`` naming
    ``placement`` before anything is loaded."""
    from scipy.optimize import minimize

    from lwpd.cost import CostModel
    from lwpd.placement import check_placement, shard_rows

    if dask_address is not None and backend != "dask":
        raise ValueError(f"--dask-address needs --backend dask, got --backend {backend}")
    if dask_security is not None and dask_address is None:
        raise ValueError("--tls-* needs --dask-address (a tls:// scheduler)")
    placement = check_placement(placement)
    delays = parse_stragglers(stragglers)
    cost = CostModel(latency=latency, bandwidth=bandwidth)
    problem, test, model = load_problem(dataset, model, seed)
    if "lcc" in schemes and model != "least_squares":
        raise ValueError("--schemes lcc applies to least squares only (--dataset diabetes or synthetic)")
    if not isinstance(placement, str):  # given shards: one per worker, a partition of the training rows
        shard_rows(problem, workers, placement)
    best = minimize(problem.loss, np.zeros(problem.n_params), jac=problem.gradient, method="L-BFGS-B",
                    options={"maxiter": 2000, "gtol": 1e-10})
    f_star, f_zero = float(best.fun), problem.loss(np.zeros(problem.n_params))
    target = f_star + 0.02 * (f_zero - f_star)
    outcomes = []
    with contextlib.ExitStack() as stack:
        if backend == "dask":
            from lwpd.cluster import dask_cluster

            dask = stack.enter_context(dask_cluster(dask_address, n_workers=min(workers, os.cpu_count() or 1),
                                                    security=dask_security))
        for name in schemes:
            outcomes.append(_run_one(name, problem, test, workers, delays, cost, policy, backend, seed, max_steps, target,
                                     progress, dask.client if backend == "dask" else None, placement))
    if out is not None:
        # a named placement as typed; explicit shards as lists of row indices (JSON has no arrays)
        recorded = placement if isinstance(placement, str) else [part.tolist() for part in placement]
        _write(Path(out), outcomes, dict(dataset=dataset, model=model, workers=workers, stragglers=stragglers,
                                         policy=policy, backend=backend, seed=seed, latency=latency,
                                         bandwidth=bandwidth, placement=recorded, target_loss=target,
                                         optimal_loss=f_star))
    return outcomes


def _run_one(name: str, problem: Any, test: Any, workers: int, delays: Any, cost: Any, policy: str, backend: str,
             seed: int, max_steps: int, target: float, progress: bool, client: Any, placement: Any = "iid") -> Outcome:
    """One scheme's run on a fresh cluster of the chosen backend (``client``: the Dask client),
    its data placed by ``placement`` (the warm-up steps too)."""
    from lwpd.cluster import DaskCluster, ExecutorCluster, SimulatedCluster

    scheme = registry.make_scheme(name, workers)
    pool = None
    if backend == "simulated":
        cluster = SimulatedCluster(workers, delays, seed=seed, cost=cost)
    elif backend == "dask":
        cluster = DaskCluster(client, workers, delays, time_scale=1e-3, seed=seed, cost=cost)
    else:
        pool = (ThreadPoolExecutor if backend == "threads" else ProcessPoolExecutor)(max_workers=min(workers, 8))
        cluster = ExecutorCluster(pool, workers, delays, time_scale=1e-3, seed=seed, cost=cost)
    try:
        # stale gradients (async) want a shorter step than the 1/L of synchronous steps
        lr = _defaults.ASYNC_STEP_FRACTION / problem.lipschitz() if policy == "async" else None
        deadline = 3.0 if policy == "deadline" else None
        # Two untimed steps first, on a throwaway simulated cluster: the first call of each
        # kernel compiles it (seconds, once per machine while the cache is cold), which the
        # decode column would otherwise charge to the master.
        train(problem, registry.make_scheme(name, workers), SimulatedCluster(workers, delays, seed=seed, cost=cost),
              policy=policy, deadline=deadline, lr=lr, max_steps=2, progress=False, seed=seed, track_error=False,
              placement=placement)
        history = train(problem, scheme, cluster, policy=policy, deadline=deadline, lr=lr, max_steps=max_steps,
                        target_loss=target, progress=progress, seed=seed, placement=placement)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if backend == "dask":
            cluster.close()
    metric_name, metric = _score(test, history.theta)
    errors = [e for e in history.grad_error if math.isfinite(e)]
    steps = max(1, len(history))
    return Outcome(scheme.name, history, history.time_to(target), history.loss[-1], metric_name, metric,
                   float(np.mean(errors)) if errors else math.nan,
                   sum(history.compute) / steps / workers, sum(history.floats) / steps / workers,
                   1e3 * sum(history.decode_time) / steps, int(np.isfinite(history.lr).sum()))


def table(outcomes: list[Outcome]) -> str:
    """The comparison as aligned text: per worker and step the compute (units of
    :mod:`lwpd.cost`) and floats sent, the master's decode time, then time to target and
    speed-up against uncoded."""
    base = next((o.time_to_target for o in outcomes if o.scheme == "uncoded"), math.nan)
    metric = outcomes[0].metric_name if outcomes else ""
    lines = [f"{'scheme':<12} {'compute':>8} {'floats':>8} {'decode ms':>10} {'time to target':>15} {'speed-up':>9} "
             f"{'final loss':>11} {'test ' + metric:>14} {'grad error':>11}"]
    for o in outcomes:
        # a time of 0: the initial loss already met the target (no speed-up to state)
        speed = (base / o.time_to_target if 0 < o.time_to_target < math.inf and math.isfinite(base) else math.nan)
        reached = f"{o.time_to_target:15.1f}" if math.isfinite(o.time_to_target) else f"{'not reached':>15}"
        speed_text = f"{speed:8.2f}x" if math.isfinite(speed) else f"{'-':>9}"
        name = o.scheme + ("*" if o.steps_taken == 0 else "")
        lines.append(f"{name:<12} {o.compute:8.2f} {o.floats:8.0f} {o.decode_ms:10.3f} {reached} {speed_text} "
                     f"{o.final_loss:11.4f} {o.metric:14.3f} {o.grad_error:11.3g}")
    lines.append("compute: units per worker and step (1 = one uncoded shard gradient, forward pass included); "
                 "floats: received by the master per worker and step; decode ms: master's fold + decode time per step, "
                 "kernels compiled beforehand")
    idle = [o.scheme for o in outcomes if o.steps_taken == 0]
    if idle:
        lines.append(f"* took no step: {', '.join(idle)} (no step's results could be decoded under this policy); "
                     "its final loss and test score are those of the initial parameters")
    if outcomes and not any(o.scheme == "uncoded" for o in outcomes):
        lines.append("speed-up: against uncoded, which is not among the schemes run (add it to --schemes)")
    return "\n".join(lines)


def _write(out: Path, outcomes: list[Outcome], config: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lwpd._history import strict_json

    out.mkdir(parents=True, exist_ok=True)
    data = {
        "config": config,
        "results": [
            {"scheme": o.scheme, "compute_per_worker_step": o.compute, "floats_per_worker_step": o.floats,
             "decode_ms_per_step": o.decode_ms, "time_to_target": o.time_to_target, "final_loss": o.final_loss,
             o.metric_name: o.metric, "mean_grad_error": o.grad_error, "steps_taken": o.steps_taken,
             "history": o.history.as_dict()}
            for o in outcomes
        ],
    }
    (out / "results.json").write_text(strict_json(data, indent=1))  # null: not a finite number (e.g. never reached)
    # fit for a slide: large type, the LWPD variants drawn bold over the baselines, the time to
    # target in the legend, the policy and the cost model in the title
    fig, ax = plt.subplots(figsize=(8, 5))
    for o in outcomes:
        times, losses = o.history.curve()  # from the initial point: every curve starts together
        ours = o.scheme.startswith("lwpd")
        reached = f"{o.time_to_target:,.0f}" if math.isfinite(o.time_to_target) else "not reached"
        ax.plot(times, np.maximum(losses - config["optimal_loss"], 1e-12), label=f"{o.scheme}: {reached}",
                lw=2.8 if ours else 1.5, alpha=1.0 if ours else 0.75, zorder=3 if ours else 2)
    ax.axhline(config["target_loss"] - config["optimal_loss"], color="grey", ls=":", lw=1.2, label="target")
    ax.set_yscale("log")
    ax.set_xlabel("simulated time" if config["backend"] == "simulated" else "wall time (s)", fontsize=13)
    ax.set_ylabel("loss - optimal loss", fontsize=13)
    ax.tick_params(labelsize=11)
    placement = config.get("placement", "iid")
    placement = placement if isinstance(placement, str) else "given shards"
    network = ("compute only" if config["latency"] == 0 and math.isinf(config["bandwidth"]) else
               f"latency {config['latency']:g}, bandwidth {config['bandwidth']:g}")
    ax.set_title(f"{config['dataset']}, {config['model']}, {config['workers']} workers, policy {config['policy']}\n"
                 f"stragglers {config['stragglers']}, placement {placement}, costs: {network}", fontsize=12)
    ax.legend(title="scheme: time to target", fontsize=10, title_fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "loss_vs_time.png", dpi=120)
    plt.close(fig)
