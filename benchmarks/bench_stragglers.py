"""Simulated time to a target loss for every scheme, on honest costs (:mod:`lwpd.cost`).

Every scheme trains the same problem on the same simulated 16-worker cluster with the same
seed, and every task is charged by the one cost model of :mod:`lwpd.cost`: a task takes
``delay * compute + latency + floats / bandwidth``, its compute counting everything the
worker does (the forward pass over every row it reads, the derivative work) in units of one
uncoded shard gradient, its communication the floats its result sends. Two network
settings: ``compute`` (communication free) and ``comm`` (``bandwidth = n_params``, so
sending a full gradient costs as much as one unit of compute; latency 0). One-off setup
(moment encoding) is charged in the time.

Straggler models: (a) shifted exponential (shift 1, rate 0.5), (b) 10% persistent 10x-slow
workers, (c) Pareto(alpha=1.5), (d) Bernoulli failures, 10% of the workers each round.

Workloads:

* ``digits`` -- scikit-learn's digits, softmax regression (650 parameters), target 2% of
  the initial loss gap;
* ``lstsq`` -- synthetic least squares, 20,000 x 400, target 1e-6 of the gap;
* ``text`` -- a synthetic sparse bag-of-words logistic regression, 20,000 documents x
  10,000 terms (10,001 parameters), target 5% of the gap: a problem where communication
  matters.

Schemes. Baselines: uncoded (wait for all), ignore-stragglers (75% of the workers, and
50%), ignore-stragglers streaming (each worker sends the gradients of the four quarters of
its shard as it finishes them, 75% or 50% of the pieces: the streaming LWPD does, without
the codes),
replication (r=2), gradient coding s=1 (fractional repetition, cyclic MDS), partial-straggler
gradient coding (s=1, each partition sent as it finishes), and for least squares LCC (K=6,
any 11 of 16) and ``moments-uncoded`` (the moment-encoded gradient split by coordinates
over the workers, waiting for all: what a reviewer would pit against moment encoding).
LWPD variants: ``lwpd`` (the library default: each worker its shard, one codeword per
coordinate, four chunks, 75% of the chunks), ``lwpd-half`` (each shard answers half the
codebook: half the floats), each also waiting for 50% of the chunks (``-50%``, the same
choice of fraction the ignore-stragglers baseline gets), ``lwpd-2x`` (weight-2 projective base, two codewords per
coordinate), ``lwpd-full`` (every worker reads every row: the layout of the paper's
experiments, priced honestly), and for least squares ``lwpd-moments`` (moment encoding,
1.5 codewords per coordinate) and ``lwpd-moments-peel`` (the same, decoded by peeling as the
LDPC moment encoding of Maity, Rawat and Mazumdar is). Every scheme waits "until ready" (``policy="first_k"``).

Compute and floats per worker and step, and the master's measured decode time per step, are
shown for column (a) without communication. Run ``python benchmarks/bench_stragglers.py`` (about 4 minutes on 2 cores; ``--quick`` for a
smoke run). It prints one Markdown table per workload (simulated time to target, and the
speed-up over uncoded) and a verdict per column: the best LWPD variant against the best
baseline, all from one run; ``--json PATH`` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

N_WORKERS = 16
MODELS = ("(a) shifted-exp", "(b) 10% 10x slow", "(c) Pareto 1.5", "(d) 10% fail")
NETWORKS = ("compute", "comm")
TIE = 0.01  # times within 1% of each other are reported as a tie


def delay_model(name: str):
    from lwpd import stragglers

    return {
        "(a) shifted-exp": stragglers.ShiftedExponential(shift=1.0, rate=0.5),
        "(b) 10% 10x slow": stragglers.SlowWorkers(fraction=0.1, slowdown=10.0),
        "(c) Pareto 1.5": stragglers.Pareto(alpha=1.5, scale=1.0),
        "(d) 10% fail": stragglers.Bernoulli(p_fail=0.1),
    }[name]


def make_schemes(workload: str) -> dict:
    """Fresh scheme objects: name -> scheme (the LWPD variants' names start with ``lwpd``)."""
    from lwpd import schemes

    out = {
        "uncoded": schemes.Uncoded(),
        "ignore": schemes.IgnoreStragglers(wait_for=0.75),
        "ignore-50%": schemes.IgnoreStragglers(wait_for=0.5),
        "ignore-stream": schemes.IgnoreStragglers(chunks=4),
        "ignore-stream-50%": schemes.IgnoreStragglers(wait_for=0.5, chunks=4),
        "replication": schemes.Replication(2),
        "gc-frc": schemes.GradientCoding(1, kind="frc"),
        "gc-cyclic": schemes.GradientCoding(1, kind="cyclic"),
        "gc-partial": schemes.PartialGradientCoding(1),
    }
    if workload == "lstsq":
        out["lcc"] = schemes.LCC(6)
        out["moments-uncoded"] = schemes.LWPD(layout="moments", redundancy=1.0, chunks=1, wait_for=1.0, reassign=False)
    out.update({
        "lwpd": schemes.LWPD(),
        "lwpd-50%": schemes.LWPD(wait_for=0.5),
        "lwpd-half": schemes.LWPD(share=0.5),
        "lwpd-half-50%": schemes.LWPD(share=0.5, wait_for=0.5),
        "lwpd-2x": schemes.LWPD(redundancy=2.0),
        "lwpd-full": schemes.LWPD(layout="full"),
    })
    if workload == "lstsq":
        out["lwpd-moments"] = schemes.LWPD(layout="moments", redundancy=1.5)
        # the LDPC moment encoding's decoder (Maity, Rawat, Mazumdar): peeling, not projection
        out["lwpd-moments-peel"] = schemes.LWPD(layout="moments", redundancy=1.5, decoder="peeling")
    return out


def _text_problem(quick: bool):
    """A bag-of-words logistic regression: Zipf-distributed terms, labels from a sparse
    linear rule with noise, rows scaled to unit norm."""
    from lwpd.problems import Logistic

    rng = np.random.default_rng(1)
    m, vocab, per_doc = (4000, 2000, 30) if quick else (20000, 10000, 40)
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
    return Logistic(X, y, alpha=1e-4)


def workloads(quick: bool) -> dict:
    """name -> (problem, target loss, max steps)."""
    from lwpd._experiment import load_problem
    from lwpd.problems import LeastSquares

    digits, _, _ = load_problem("digits", "softmax", seed=0)
    rng = np.random.default_rng(0)
    m, d = (4000, 120) if quick else (20000, 400)
    X = rng.standard_normal((m, d))
    lstsq = LeastSquares(X, X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(m), alpha=1e-3)
    out = {}
    for name, prob, rel, steps in (("digits", digits, 2e-2, 3000), ("lstsq", lstsq, 1e-6, 1500),
                                   ("text", _text_problem(quick), 5e-2, 1500)):
        zero = np.zeros(prob.n_params)
        best = minimize(prob.loss, zero, jac=prob.gradient, method="L-BFGS-B",
                        options={"maxiter": 5000, "gtol": 1e-13, "ftol": 1e-16})
        f_star, f_zero = float(best.fun), prob.loss(zero)
        out[name] = (prob, f_star + rel * (f_zero - f_star), 80 if quick else steps)
    return out


_WORKLOADS: dict = {}


def _init_worker(quick: bool, chosen: list) -> None:
    """Build the workloads in each benchmark process (the same seeds: the same problems)."""
    _WORKLOADS.update({k: v for k, v in workloads(quick).items() if k in chosen})


def run_column(args: tuple) -> tuple:
    """Every scheme on one (workload, straggler model, network) column."""
    from threadpoolctl import threadpool_limits

    from lwpd import train
    from lwpd.cluster import SimulatedCluster
    from lwpd.cost import CostModel

    workload, model, network, seed = args
    problem, target, max_steps = _WORKLOADS[workload]
    cost = CostModel(bandwidth=float(problem.n_params)) if network == "comm" else CostModel()
    rows = {}
    with threadpool_limits(1):
        for name, scheme in make_schemes(workload).items():
            start = time.perf_counter()
            cluster = SimulatedCluster(N_WORKERS, delay_model(model), seed=seed, cost=cost)
            history = train(problem, scheme, cluster, policy="first_k", max_steps=max_steps, target_loss=target,
                            progress=False, seed=seed, track_error=False)
            steps = max(1, len(history))
            rows[name] = {
                "time": history.time_to(target),
                "steps": len(history),
                "setup_time": history.setup_time,
                "compute_per_worker_step": sum(history.compute) / steps / N_WORKERS,
                "floats_per_worker_step": sum(history.floats) / steps / N_WORKERS,
                "decode_ms_per_step": 1e3 * sum(history.decode_time) / steps,
                "wall": time.perf_counter() - start,
            }
    return args, rows


def _fmt_time(t: float) -> str:
    return "never" if not math.isfinite(t) else (f"{t:.0f}" if t >= 100 else f"{t:.1f}")


def report(results: dict, workload: str, problem) -> str:
    """One Markdown table for a workload: rows schemes, columns model x network."""
    columns = [(m, n) for n in NETWORKS for m in MODELS]
    names = list(results[(workload, MODELS[0], NETWORKS[0])])
    head = "| scheme | compute / worker / step | floats / worker / step | decode ms / step | " + " | ".join(
        f"{m.split()[0]} {n}" for m, n in columns) + " |"
    lines = [head, "|---|---:|---:|---:|" + "---:|" * len(columns)]
    for name in names:
        ref = results[(workload, MODELS[0], NETWORKS[0])][name]
        cells = []
        for col in columns:
            rows = results[(workload, *col)]
            t, base = rows[name]["time"], rows["uncoded"]["time"]
            speed = f" ({base / t:.2f}x)" if math.isfinite(t) and math.isfinite(base) else ""
            cells.append(_fmt_time(t) + speed)
        label = f"**{name}**" if name.startswith("lwpd") else name
        lines.append(f"| {label} | {ref['compute_per_worker_step']:.2f} | {ref['floats_per_worker_step']:.0f} | "
                     f"{ref['decode_ms_per_step']:.2f} | " + " | ".join(cells) + " |")
    lines.append("| best LWPD vs best baseline | | | | " + " | ".join(verdicts(results, workload)) + " |")
    return f"{workload}: {type(problem).__name__}, n_params = {problem.n_params}\n\n" + "\n".join(lines)


def verdicts(results: dict, workload: str) -> list[str]:
    """Per column (model x network): the best LWPD variant against the best baseline."""
    verdict = []
    for col in [(m, n) for n in NETWORKS for m in MODELS]:
        rows = results[(workload, *col)]
        ours = min((r["time"], n) for n, r in rows.items() if n.startswith("lwpd"))
        theirs = min((r["time"], n) for n, r in rows.items() if not n.startswith("lwpd"))
        if not math.isfinite(ours[0]):
            verdict.append("LWPD never")
        elif math.isfinite(theirs[0]) and abs(ours[0] / theirs[0] - 1.0) < TIE:
            verdict.append(f"tie: {ours[1]} and {theirs[1]}")
        elif not math.isfinite(theirs[0]) or ours[0] < theirs[0]:
            verdict.append(f"**won** {ours[1]} {theirs[0] / ours[0]:.2f}x vs {theirs[1]}")
        else:
            verdict.append(f"lost: {theirs[1]} {ours[0] / theirs[0]:.2f}x vs {ours[1]}")
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problems, few steps (smoke run)")
    parser.add_argument("--json", default=None, help="also write every number to this JSON file")
    parser.add_argument("--workloads", default="digits,lstsq,text", help="comma-separated subset")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the delays and of the schemes' assignments")
    args = parser.parse_args()
    start = time.perf_counter()
    chosen = [w for w in args.workloads.split(",") if w]
    _init_worker(args.quick, chosen)
    jobs = [(w, m, n, args.seed) for w in chosen for n in NETWORKS for m in MODELS]
    results = {}
    import multiprocessing

    # spawned processes (forking after OpenMP has started is unsafe), each building the problems
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(args.quick, chosen)) as pool:
        for (*key, _), rows in pool.map(run_column, jobs):
            key = tuple(key)
            results[key] = rows
            slowest = max(rows, key=lambda n: rows[n]["wall"])
            print(f"  done {key}: slowest {slowest} {rows[slowest]['wall']:.1f} s", flush=True)
    for workload in chosen:
        print()
        print(report(results, workload, _WORKLOADS[workload][0]))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            everything = {" | ".join(k): v for k, v in results.items()}
            everything["verdicts"] = {w: dict(zip((f"{m} {n}" for n in NETWORKS for m in MODELS), verdicts(results, w)))
                                      for w in chosen}
            json.dump(everything, fh, indent=1, allow_nan=True)


if __name__ == "__main__":
    main()
