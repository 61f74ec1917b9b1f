"""Simulated time to a target loss for every scheme, on honest costs (:mod:`lwpd.cost`),
across data placements, straggler models, networks and seeds.

Every scheme trains the same problem on the same simulated 16-worker cluster with the same
seed, placement and delays, and every task is charged by the one cost model of
:mod:`lwpd.cost`: a task takes ``delay * compute + latency + floats / bandwidth``, its compute
counting everything the worker does (the forward pass over every row it reads, the derivative
work) in units of one uncoded shard gradient, its communication the floats its result sends.

Axes
----
* **Placement** (``lwpd.placement``): ``iid`` (a seeded shuffle), ``sorted`` (rows in order of
  label, or of target for regression) and ``dirichlet:alpha=0.1`` (label skew, class
  proportions per worker from Dirichlet(0.1)). Every scheme builds its partitions from the
  same shards.
* **Straggler model**: (a) shifted exponential (shift 1, rate 0.5), (b) 10% persistent
  10x-slow workers (2 of 16), (c) Pareto(alpha=1.5), (d) Bernoulli failures, 10% of the
  workers each round. Ties between equal finish times are broken by a seeded random key.
* **Network**: ``compute`` (communication free) and ``bandwidth = n_params x {0.25, 1, 4}``
  floats per unit of time (sending a full gradient costs 4, 1 or 0.25 units of compute).
* **Seeds**: each seed draws the delays, the placement (iid, Dirichlet) and the schemes'
  assignments; tables report the median and the min-max over seeds.

Workloads (targets are below the bias floor that ignoring persistent stragglers reaches on
non-i.i.d. shards, so a biased scheme cannot reach them):

* ``digits`` -- scikit-learn's digits (train split), softmax regression, ``alpha = 1e-2``,
  650 parameters, target 1e-3 of the initial loss gap;
* ``lstsq`` -- least squares over 16 groups with their own feature distributions, regression
  vectors and target offsets (4,000 x 120; 20,000 x 400 with ``--large``), target 1e-4 of the gap;
* ``text`` -- a sparse bag-of-words logistic regression (4,000 x 2,000; 20,000 x 10,000 with
  ``--large``), ``alpha = 1e-2``, target 1e-3 of the gap.

Schemes. Baselines: ``uncoded`` (wait for all); ``ignore`` (the first 75% of the workers);
``ignore-stream`` (each worker sends its shard's gradient in four pieces as it finishes them);
``iag`` (ignore-stragglers with memory, the incremental aggregated gradient:
``IgnoreStragglers(memory=True)``); ``randk-50%`` (random-k sparsified ignore-stragglers at
the floats of ``lwpd-half``, streamed: ``RandomK(0.5)``); ``replication`` (r = 2); gradient
coding ``gc-frc``, ``gc-cyclic`` (s = 1); ``gc-partial`` (``PartialGradientCoding(1)``); and for
least squares ``lcc`` (K = 6, any 11 of 16). LWPD variants: ``lwpd`` (the library default:
each worker its shard, one codeword per coordinate, four chunks, 75% of the chunks),
``lwpd-half`` (each shard answers half the codebook), ``lwpd-2x`` (weight-2 projective base,
two codewords per coordinate), ``lwpd-mem`` (``LWPD(memory=True)``), ``lwpd-fr`` (fractional
repetition groups of two with complementary bases, exact: ``ReplicatedLWPD()``) and
``lwpd-fr-mem`` (the same with memory); with ``--schemes``, also ``lwpd-fr-identity`` (the
uncoded twin of ``lwpd-fr``: the second member streams the unit vectors in reverse order).
Every scheme waits "until ready"
(``policy="first_k"``).

Within a column (one workload, placement, model, network and seed) the exact baselines run
first; every later run stops once its simulated time exceeds ``BUDGET`` times the best time to
target so far (it could not be competitive), once it has stalled (its last 100 steps closed
less than 1% of its distance to the target: it would need more than 10,000 further steps,
past every run's limit of 1,500), or once the linear rate of its last 50 steps projects it
past that limit or that budget; it is reported as not reaching the target, with the reason.

Run ``python benchmarks/bench_stragglers.py`` (every axis, five seeds; see ``--help`` for
subsets, ``--large`` for the 20,000-row problems) or ``--quick`` (the sorted placement,
models (b) and (d), the compute network, five seeds and the main schemes). It prints Markdown
tables and the verdicts; ``--json PATH`` writes every number (and what is done so far, during
the run), ``--report-from PATH`` prints the tables of a saved run.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

N_WORKERS = 16
MODELS = ("(a) shifted-exp", "(b) 10% 10x slow", "(c) Pareto 1.5", "(d) 10% fail")
PLACEMENTS = ("iid", "sorted", "dirichlet:alpha=0.1")
NETWORKS = ("compute", "bw=n", "bw=4n", "bw=0.25n")
BANDWIDTH = {"compute": math.inf, "bw=0.25n": 0.25, "bw=n": 1.0, "bw=4n": 4.0}  # x n_params floats per unit
SEEDS = (0, 1, 2, 3, 4)
BUDGET = 3.0  # a run stops past this multiple of the best time to target in its column
STALL_WINDOW, STALL_RATE = 100, 0.01  # ... or once a window of steps closes less than 1% of its distance to the target
PROJECT_WINDOW = 50  # ... or once its recent linear rate projects it past the budget or the step limit
TIE = 0.01  # times within 1% of each other are reported as a tie
#: --quick: the non-i.i.d. regime the goal is about, on the compute network, with the main contenders
QUICK = {"placements": ("sorted",), "models": ("(b) 10% 10x slow", "(d) 10% fail"), "networks": ("compute",),
         "schemes": ("gc-partial", "replication", "lcc", "ignore", "iag", "uncoded", "lwpd", "lwpd-mem", "lwpd-fr",
                     "lwpd-fr-mem")}


def delay_model(name: str):
    from lwpd import stragglers

    return {
        "(a) shifted-exp": stragglers.ShiftedExponential(shift=1.0, rate=0.5),
        "(b) 10% 10x slow": stragglers.SlowWorkers(fraction=0.1, slowdown=10.0),
        "(c) Pareto 1.5": stragglers.Pareto(alpha=1.5, scale=1.0),
        "(d) 10% fail": stragglers.Bernoulli(p_fail=0.1),
    }[name]


#: Baselines, in the order they run (exact ones first: they set the column's time budget).
BASELINES = ("gc-partial", "replication", "gc-frc", "gc-cyclic", "lcc", "ignore", "ignore-stream", "iag", "randk-50%",
             "uncoded")
VARIANTS = ("lwpd", "lwpd-half", "lwpd-2x", "lwpd-mem", "lwpd-fr", "lwpd-fr-mem", "lwpd-fr-identity")
#: Run only when named with --schemes (the uncoded twin of lwpd-fr, for the code-against-twin table)
EXTRA = ("lwpd-fr-identity",)


def make_scheme(name: str):
    """A fresh scheme object by its table name."""
    from lwpd import schemes

    return {
        "uncoded": lambda: schemes.Uncoded(),
        "ignore": lambda: schemes.IgnoreStragglers(wait_for=0.75),
        "ignore-stream": lambda: schemes.IgnoreStragglers(chunks=4),
        "iag": lambda: schemes.IgnoreStragglers(memory=True),
        "randk-50%": lambda: schemes.RandomK(share=0.5),
        "replication": lambda: schemes.Replication(2),
        "gc-frc": lambda: schemes.GradientCoding(1, kind="frc"),
        "gc-cyclic": lambda: schemes.GradientCoding(1, kind="cyclic"),
        "gc-partial": lambda: schemes.PartialGradientCoding(1),
        "lcc": lambda: schemes.LCC(6),
        "lwpd": lambda: schemes.LWPD(),
        "lwpd-half": lambda: schemes.LWPD(share=0.5),
        "lwpd-2x": lambda: schemes.LWPD(redundancy=2.0),
        "lwpd-mem": lambda: schemes.LWPD(memory=True),
        "lwpd-fr": lambda: schemes.ReplicatedLWPD(),
        "lwpd-fr-mem": lambda: schemes.ReplicatedLWPD(memory=True),
        "lwpd-fr-identity": lambda: schemes.ReplicatedLWPD(second="identity"),
    }[name]()


def scheme_names(workload: str, quick: bool = False, chosen: str | None = None) -> list[str]:
    """The schemes of a column, in running order: the quick set, a ``--schemes`` subset
    (which may name the extras), or every baseline and variant but the extras."""
    names = [n for n in BASELINES if n != "lcc" or workload == "lstsq"] + list(VARIANTS)
    if chosen:
        return [n for n in names if n in chosen.split(",")]
    return [n for n in names if n in QUICK["schemes"]] if quick else [n for n in names if n not in EXTRA]


def _text_problem(small: bool):
    """A bag-of-words logistic regression: Zipf-distributed terms, labels from a sparse
    linear rule with noise, rows scaled to unit norm."""
    from lwpd.problems import Logistic

    rng = np.random.default_rng(1)
    m, vocab, per_doc = (4000, 2000, 30) if small else (20000, 10000, 40)
    ranks = np.arange(1, vocab + 1)
    p = 1.0 / ranks**1.1
    terms = rng.choice(vocab, size=(m, per_doc), p=p / p.sum())
    X = sp.csr_array((np.ones(m * per_doc), (np.repeat(np.arange(m), per_doc), terms.reshape(-1))), shape=(m, vocab))
    X.sum_duplicates()
    X = sp.csr_array(sp.diags_array(1.0 / np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).reshape(-1))) @ X)
    w = np.zeros(vocab)
    hot = rng.choice(vocab, size=vocab // 20, replace=False)
    w[hot] = rng.standard_normal(hot.size) * 4.0
    y = (X @ w + 0.3 * rng.standard_normal(m) > 0).astype(int)
    return Logistic(X, y, alpha=1e-2)


def _groups_problem(small: bool):
    """Least squares over 16 groups, each with its own feature means and scales, regression
    vector and target offset (3 per group), so sorting by target roughly groups them."""
    from lwpd.problems import LeastSquares

    rng = np.random.default_rng(0)
    m, d, groups = (4000, 120, 16) if small else (20000, 400, 16)
    g = np.arange(m) % groups
    means, scales = rng.standard_normal((groups, d)), rng.uniform(0.5, 2.0, (groups, d))
    X = means[g] + rng.standard_normal((m, d)) * scales[g]
    W = rng.standard_normal((groups, d)) / np.sqrt(d)
    y = np.einsum("ij,ij->i", X, W[g]) + 3.0 * g + 0.1 * rng.standard_normal(m)
    return LeastSquares(X, y, alpha=1e-3)


def workloads(small: bool, chosen: list[str] | None = None) -> dict:
    """name -> (problem, target loss, max steps, optimal loss, initial loss)."""
    from lwpd._experiment import load_problem
    from lwpd.problems import Softmax

    digits, _, _ = load_problem("digits", "softmax", seed=0)
    makers = {
        "digits": (lambda: Softmax(digits.X, digits.y, alpha=1e-2), 1e-3),
        "lstsq": (lambda: _groups_problem(small), 1e-4),
        "text": (lambda: _text_problem(small), 1e-3),
    }
    out = {}
    for name, (make, rel) in makers.items():
        if chosen is not None and name not in chosen:
            continue
        prob = make()
        zero = np.zeros(prob.n_params)
        best = minimize(prob.loss, zero, jac=prob.gradient, method="L-BFGS-B",
                        options={"maxiter": 20000, "gtol": 1e-13, "ftol": 1e-16})
        f_star, f_zero = float(best.fun), prob.loss(zero)
        out[name] = (prob, f_star + rel * (f_zero - f_star), 1500, f_star, f_zero)
    return out


_WORKLOADS: dict = {}


def _init_worker(small: bool, chosen: list) -> None:
    """Build the workloads in each benchmark process (the same seeds: the same problems)."""
    _WORKLOADS.update(workloads(small, chosen))


def run_column(args: tuple) -> tuple:
    """Every scheme on one (workload, placement, straggler model, network, seed) column."""
    from threadpoolctl import threadpool_limits

    from lwpd import train
    from lwpd.cluster import SimulatedCluster
    from lwpd.cost import CostModel

    workload, placement, model, network, seed, names = args
    problem, target, max_steps, f_star, _ = _WORKLOADS[workload]
    cost = CostModel(bandwidth=BANDWIDTH[network] * problem.n_params)
    rows = {}
    best = math.inf
    with threadpool_limits(1):
        for name in names:
            start = time.perf_counter()
            cluster = SimulatedCluster(N_WORKERS, delay_model(model), seed=seed, cost=cost)
            budget = BUDGET * best if math.isfinite(best) else None
            stalled: list = []
            limit = (max_steps, budget, f_star)
            history = train(problem, make_scheme(name), cluster, policy="first_k", max_steps=max_steps,
                            target_loss=target, time_budget=budget, progress=False, seed=seed, track_error=False,
                            placement=placement, callback=lambda step, theta, h: _hopeless(h, target, limit, stalled))
            steps = max(1, len(history))
            reached = history.time_to(target)
            best = min(best, reached)
            stop = "" if math.isfinite(reached) else stalled[0] if stalled else (
                "budget" if budget is not None and history.time[-1] >= budget else "steps")
            rows[name] = {
                "time": reached,
                "steps": len(history),
                "stopped": stop,
                "compute_per_worker_step": sum(history.compute) / steps / N_WORKERS,
                "floats_per_worker_step": sum(history.floats) / steps / N_WORKERS,
                "decode_ms_per_step": 1e3 * sum(history.decode_time) / steps,
                "mean_lr_ratio": float(np.nanmean(history.lr)) * problem.lipschitz(),
                "wall": time.perf_counter() - start,
            }
    return args, rows


def _hopeless(history, target: float, limit: tuple, why: list) -> bool:
    """True (the reason noted in ``why``) once a run cannot reach the target in time:

    * ``"stalled"``: its last ``STALL_WINDOW`` steps closed less than ``STALL_RATE`` of its
      distance to the target, so at that pace it needs more than ``STALL_WINDOW /
      STALL_RATE`` further steps, past every run's step limit (a biased scheme on its floor);
    * ``"projected"``: at the linear rate of its last ``PROJECT_WINDOW`` steps (gradient
      descent converges linearly on these problems) it would reach the target only after
      its step limit or after the column's time budget.
    """
    loss, now = history.loss, history.time
    max_steps, budget, f_star = limit
    if loss[-1] <= target:
        return False
    if len(loss) > STALL_WINDOW and loss[-1 - STALL_WINDOW] - loss[-1] < STALL_RATE * (loss[-1] - target):
        why.append("stalled")
        return True
    if len(loss) > 2 * PROJECT_WINDOW:
        before, after = loss[-1 - PROJECT_WINDOW] - f_star, loss[-1] - f_star
        if 0 < after < before:
            rate = math.log(before / after) / PROJECT_WINDOW  # per step
            steps = math.log(after / (target - f_star)) / rate
            per_step = (now[-1] - now[-1 - PROJECT_WINDOW]) / PROJECT_WINDOW
            if len(loss) + steps > max_steps or (budget is not None and now[-1] + steps * per_step > budget):
                why.append("projected")
                return True
    return False


def median_range(values: list[float]) -> tuple[float, float, float]:
    """Median, min and max, ``inf`` counting as larger than every number."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2], ordered[0], ordered[-1]  # the lower median of an even count


def _fmt(t: float) -> str:
    return "n/r" if not math.isfinite(t) else (f"{t:.0f}" if t >= 100 else f"{t:.1f}")


def cell(results: dict, key: tuple, name: str, seeds: list) -> str:
    med, lo, hi = median_range([results[(*key, s)][name]["time"] for s in seeds])
    return _fmt(med) if lo == hi else f"{_fmt(med)} ({_fmt(lo)}-{_fmt(hi)})"


def verdict(results: dict, key: tuple, seeds: list) -> dict:
    """The best LWPD variant (lowest median time) against the best baseline (likewise): the
    median and range over seeds of the baseline's time over the variant's -- LWPD's speed-up,
    above 1 a win, below 1 a loss (0 where only the baseline reached the target in a seed)."""
    names = list(results[(*key, seeds[0])])
    medians = {n: median_range([results[(*key, s)][n]["time"] for s in seeds])[0] for n in names}
    ours = min((medians[n], n) for n in names if n in VARIANTS)
    theirs = min((medians[n], n) for n in names if n not in VARIANTS)
    ratios = []
    for s in seeds:
        a, b = results[(*key, s)][ours[1]]["time"], results[(*key, s)][theirs[1]]["time"]
        ratios.append(b / a if math.isfinite(a) else (0.0 if math.isfinite(b) else math.nan))
    finite = [r for r in ratios if not math.isnan(r)]
    med, lo, hi = median_range(finite) if finite else (math.nan, math.nan, math.nan)
    if not math.isfinite(ours[0]):
        text = "LWPD never" + ("" if math.isfinite(theirs[0]) else " (nor any baseline)")
    elif not math.isfinite(theirs[0]):
        text = f"**won** {ours[1]} (no baseline reached it)"
    elif abs(med - 1.0) < TIE:
        text = f"tie: {ours[1]} and {theirs[1]}"
    else:  # the speed-up of LWPD over the baseline, median (min-max over seeds): > 1 won, < 1 lost
        text = f"{'**won**' if med > 1.0 else 'lost'} {med:.2f}x ({lo:.2f}-{hi:.2f}) {ours[1]} vs {theirs[1]}"
    return {"text": text, "variant": ours[1], "baseline": theirs[1], "ratio": med, "low": lo, "high": hi,
            "won": math.isfinite(ours[0]) and (not math.isfinite(theirs[0]) or med > 1.0 + TIE)}


@dataclass
class _Info:
    """What the tables say about a workload."""

    n_params: int
    problem: str
    target_rel: float


def report(results: dict, workload: str, info: _Info, axes: dict) -> str:
    """Markdown for one workload: per network, schemes x (placement, model) of median time
    to target (min-max over seeds), then the verdicts."""
    seeds = axes["seeds"]
    out = [f"### {workload}: {info.problem}, n_params = {info.n_params}, target {info.target_rel:.0e} of the "
           "initial gap\n"]
    for network in axes["networks"]:
        models = axes["models_of"][network]
        columns = [(p, m) for p in axes["placements"] for m in models]
        ref = results[(workload, axes["placements"][0], models[0], network, seeds[0])]
        out.append(f"**{network}** (simulated time to target, median over {len(seeds)} seeds (min-max); compute and "
                   f"floats per worker and step from {axes['placements'][0]}, {models[0]}, seed {seeds[0]})\n")
        out.append("| scheme | compute | floats | " + " | ".join(f"{p.split(':')[0]} {m.split()[0]}" for p, m in columns) + " |")
        out.append("|---|---:|---:|" + "---:|" * len(columns))
        for name in ref:
            label = f"**{name}**" if name in VARIANTS else name
            first = f"{ref[name]['compute_per_worker_step']:.2f} | {ref[name]['floats_per_worker_step']:.0f}"
            out.append(f"| {label} | {first} | " + " | ".join(
                cell(results, (workload, p, m, network), name, seeds) for p, m in columns) + " |")
        out.append("| best LWPD vs best baseline | | | " + " | ".join(
            verdict(results, (workload, p, m, network), seeds)["text"] for p, m in columns) + " |\n")
    return "\n".join(out)


def _cells(chosen: list, axes: dict) -> list[tuple]:
    """Every (workload, placement, model, network) the axes hold."""
    return [(w, p, m, n) for n in axes["networks"] for w in chosen for p in axes["placements"]
            for m in axes["models_of"][n]]


def verdict_table(results: dict, chosen: list, axes: dict) -> str:
    """Rows workload x placement x network, columns straggler models: the verdicts ("-"
    where a network was run without that model)."""
    models = [m for m in MODELS if any(m in ms for ms in axes["models_of"].values())]
    lines = ["| workload | placement | network | " + " | ".join(models) + " |", "|---|---|---|" + "---|" * len(models)]
    for n in axes["networks"]:
        for w in chosen:
            for p in axes["placements"]:
                lines.append(f"| {w} | {p} | {n} | " + " | ".join(
                    verdict(results, (w, p, m, n), axes["seeds"])["text"] if m in axes["models_of"][n] else "-"
                    for m in models) + " |")
    return "\n".join(lines)


def goal_table(results: dict, chosen: list, axes: dict) -> tuple[str, int, int]:
    """The issue's goal: on sorted and Dirichlet shards with persistent stragglers (b) and
    failures (d), an LWPD variant faster than every baseline on the median over seeds."""
    cells = [c for c in _cells(chosen, axes) if c[1] != "iid" and c[2].startswith(("(b)", "(d)"))]
    lines = ["| workload | placement | model | network | verdict |", "|---|---|---|---|---|"]
    met = 0
    for w, p, m, n in cells:
        v = verdict(results, (w, p, m, n), axes["seeds"])
        met += v["won"]
        lines.append(f"| {w} | {p} | {m} | {n} | {'met' if v['won'] else 'missed'}: {v['text']} |")
    return "\n".join(lines), met, len(cells)


def _render(results: dict, chosen: list, axes: dict, seconds: float, jobs: int, info: dict) -> None:
    """Print every table (from a run, or from the JSONs written by runs)."""
    print(f"Simulated time to target, {N_WORKERS} workers, policy first_k, seeds {axes['seeds']}; n/r: not reached "
          f"(a run stops when it has stalled, when its rate projects it past 1,500 steps or past {BUDGET:g}x the best "
          f"time in its column, or at that budget).\n")
    for workload in chosen:
        print(report(results, workload, info[workload], axes))
    print("### Verdicts: best LWPD variant against the best baseline (median over seeds, min-max)\n")
    print(verdict_table(results, chosen, axes))
    goals, met, total = goal_table(results, chosen, axes)
    print(f"\n### Goal: non-i.i.d. shards, stragglers (b) and failures (d): met in {met} of {total}\n")
    print(goals)
    print(f"\ntotal wall time {seconds:.0f} s ({len(results)} columns, {jobs} processes)")


def _load(paths: list[str]) -> tuple[dict, list, dict, float, dict]:
    """Merge the JSONs of one or more runs (the same seeds): ``(results, workloads, axes,
    seconds, info)``, ``axes`` holding every placement, model and network any run covered."""
    results, axes, seconds, info = {}, None, 0.0, {}
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        results.update({tuple(k.split(" | ")[:4]) + (int(k.split(" | ")[4]),): v for k, v in data["columns"].items()})
        info.update({w: _Info(**v) for w, v in data["workloads"].items()})
        seconds += data["seconds"]
        run = data["axes"]
        if axes is None:
            axes = {key: list(run[key]) for key in ("placements", "models", "networks", "seeds")}
        elif run["seeds"] != axes["seeds"]:
            raise SystemExit(f"--report-from: {path} has seeds {run['seeds']}, the first run {axes['seeds']}")
        for key in ("placements", "models", "networks"):
            axes[key] += [x for x in run[key] if x not in axes[key]]
    axes["models"] = [m for m in MODELS if m in axes["models"]]
    return results, list(info), axes, seconds, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="sorted placement, models (b) and (d), the compute network, the main schemes")
    parser.add_argument("--large", action="store_true", help="the large lstsq and text problems (20,000 rows)")
    parser.add_argument("--json", default=None, help="also write every number to this JSON file")
    parser.add_argument("--report-from", nargs="+", default=None, metavar="JSON",
                        help="print the tables of saved runs (merged; with --json, write the merged JSON), run nothing")
    parser.add_argument("--workloads", default="digits,lstsq,text", help="comma-separated subset")
    parser.add_argument("--placements", default=None, help=f"comma-separated subset of {', '.join(PLACEMENTS)}")
    parser.add_argument("--models", default=None, help="comma-separated letters, e.g. b,d")
    parser.add_argument("--networks", default=None, help=f"comma-separated subset of {', '.join(NETWORKS)}")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="number of seeds (0, 1, ...)")
    parser.add_argument("--schemes", default=None, help="comma-separated subset of the schemes (default: all)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    args = parser.parse_args()
    if args.report_from:
        results, chosen, axes, seconds, info = _load(args.report_from)
        _render(results, chosen, _complete(results, chosen, axes), seconds, args.jobs, info)
        if args.json:
            _save(args.json, results, chosen, axes, seconds, args, info)
        return
    start = time.perf_counter()
    chosen = [w for w in args.workloads.split(",") if w]
    pick = lambda given, allowed, default: [a for a in allowed if a in given.split(",")] if given else list(default)  # noqa: E731
    letters = {m[1]: m for m in MODELS}
    axes = {
        "placements": pick(args.placements, PLACEMENTS, QUICK["placements"] if args.quick else PLACEMENTS),
        "models": [letters[x] for x in args.models.split(",")] if args.models else
                  list(QUICK["models"] if args.quick else MODELS),
        # in the order given: the run goes network by network
        "networks": [n for n in args.networks.split(",") if n in NETWORKS] if args.networks else
                    list(QUICK["networks"] if args.quick else NETWORKS),
        "seeds": list(range(args.seeds)),
    }
    small = not args.large
    _init_worker(small, chosen)
    # network by network, so that a long run interrupted still has whole networks to report
    jobs = [(w, p, m, n, s, scheme_names(w, args.quick, args.schemes)) for n in axes["networks"] for w in chosen
            for p in axes["placements"] for m in axes["models"] for s in axes["seeds"]]
    info = {w: _Info(_WORKLOADS[w][0].n_params, type(_WORKLOADS[w][0]).__name__,
                     (_WORKLOADS[w][1] - _WORKLOADS[w][3]) / (_WORKLOADS[w][4] - _WORKLOADS[w][3])) for w in chosen}
    results = {}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(small, chosen)) as pool:
        # spawned processes (forking after OpenMP has started is unsafe), each building the problems
        for done, ((*key, _), rows) in enumerate(pool.map(run_column, jobs), start=1):
            results[tuple(key)] = rows
            if done % 10 == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)} columns, {time.perf_counter() - start:.0f} s", flush=True)
                if args.json:  # what is done so far (--report-from renders the complete networks)
                    _save(args.json, results, chosen, axes, time.perf_counter() - start, args, info)
    seconds = time.perf_counter() - start
    print()
    _render(results, chosen, _complete(results, chosen, axes), seconds, args.jobs, info)
    if args.json:
        _save(args.json, results, chosen, axes, seconds, args, info)


def _complete(results: dict, chosen: list, axes: dict) -> dict:
    """``axes`` with ``models_of``: per network, the straggler models every column of which
    (all workloads, placements and seeds) is in ``results``; networks with none are left out."""
    models_of = {n: [m for m in axes["models"] if all((w, p, m, n, s) in results for w in chosen
                                                     for p in axes["placements"] for s in axes["seeds"])]
                 for n in axes["networks"]}
    return {**axes, "networks": [n for n in axes["networks"] if models_of[n]], "models_of": models_of}


def _save(path: str, results: dict, chosen: list, axes: dict, seconds: float, args: Any, info: dict) -> None:
    done = _complete(results, chosen, axes)
    out = {"axes": {k: v for k, v in axes.items() if k != "models_of"}, "complete": done["models_of"],
           "seconds": seconds, "jobs": args.jobs, "quick": args.quick, "large": args.large,
           "workloads": {w: vars(i) for w, i in info.items()},
           "columns": {" | ".join(map(str, k)): v for k, v in results.items()},
           "verdicts": {" | ".join(c): verdict(results, c, axes["seeds"]) for c in _cells(chosen, done)},
           "goal": dict(zip(("met", "cells"), goal_table(results, chosen, done)[1:]))}
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1, allow_nan=True)


if __name__ == "__main__":
    main()
