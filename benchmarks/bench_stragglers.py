"""Simulated time to a target loss for every scheme, under three straggler models.

Every scheme trains the same problem on the same simulated 16-worker cluster with the same
seed. Work is counted as in :mod:`lwpd.stragglers` (one unit = one uncoded shard gradient)
and the schemes are compared in two tiers of equal total work per step:

* one unit per worker: uncoded, ignore-stragglers and ``lwpd-1x`` (LWPD compressed to one
  codeword per coordinate -- the compression keeps the weight-1 codewords, so each step
  deals the coordinates' partial derivatives afresh over the workers);
* two units per worker: replication r=2, gradient coding s=1 (fractional repetition and
  cyclic MDS) and ``lwpd-2x`` (projective base over blocks of 8, weight <= 2, compressed to
  1.5 codewords per coordinate, total weight 2 per coordinate).

Every scheme waits "until ready" (``policy="first_k"``): all shards (uncoded), one copy of
each shard (replication), n - s workers (gradient coding), 75% of the workers
(ignore-stragglers) and 75% of the tasks (LWPD, whose workers return their codewords in
``chunks=4`` pieces, each folded in as it arrives). The LWPD settings are the same for every
workload and straggler model. ``lwpd-1x+fwd`` and ``lwpd-2x+fwd`` repeat them with the forward
pass charged (``LWPD(charge_forward=True)``): the scores ``x_i . theta`` that a linear model's
directional derivatives need over every row an LWPD worker reads, ``n_workers`` units per
worker per step, which the default cost model leaves out. They are reported, not counted as
"best LWPD".

Straggler models: (a) shifted exponential (shift 1, rate 0.5), (b) 10% persistent 10x-slow
workers, (c) Pareto(alpha=1.5) heavy tail.

Workloads:

* ``digits``: scikit-learn's digits, softmax regression (650 parameters), target 2% of the
  initial loss gap -- training to a usable model on an ill-conditioned problem;
* ``lstsq``: a synthetic well-conditioned least-squares problem (20,000 x 400), target
  1e-6 of the initial gap -- solving to precision.

Run ``python benchmarks/bench_stragglers.py`` (about 3 minutes on 2 cores) or with
``--quick`` for a smoke run. Prints one table per workload and straggler model, with
speed-ups against uncoded and LWPD's time relative to each baseline, all from one run.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.optimize import minimize

from lwpd import schemes, stragglers, train
from lwpd._experiment import load_problem
from lwpd.cluster import SimulatedCluster
from lwpd.problems import LeastSquares

N_WORKERS = 16
DELAY_MODELS = {
    "(a) shifted-exp": stragglers.ShiftedExponential(shift=1.0, rate=0.5),
    "(b) 10% 10x slow": stragglers.SlowWorkers(fraction=0.1, slowdown=10.0),
    "(c) Pareto 1.5": stragglers.Pareto(alpha=1.5, scale=1.0),
}


def make_schemes() -> dict[str, schemes.Scheme]:
    """Fresh scheme objects: three at one unit of work per worker, four at two."""
    return {
        "uncoded": schemes.Uncoded(),
        "ignore": schemes.IgnoreStragglers(wait_for=0.75),
        "lwpd-1x": schemes.LWPD(block_size=8, redundancy=1.0, chunks=4, wait_for=0.75),
        "replication": schemes.Replication(2),
        "gc-frc": schemes.GradientCoding(1, kind="frc"),
        "gc-cyclic": schemes.GradientCoding(1, kind="cyclic"),
        "lwpd-2x": schemes.LWPD(block_size=8, redundancy=1.5, chunks=4, wait_for=0.75),
        # the same two, also charged the forward pass x_i . theta over every row they read
        "lwpd-1x+fwd": schemes.LWPD(block_size=8, redundancy=1.0, chunks=4, wait_for=0.75, charge_forward=True),
        "lwpd-2x+fwd": schemes.LWPD(block_size=8, redundancy=1.5, chunks=4, wait_for=0.75, charge_forward=True),
    }


def workloads(quick: bool) -> dict[str, tuple[object, float, int]]:
    """name -> (problem, target loss, max steps)."""
    problem, _, _ = load_problem("digits", "softmax", seed=0)
    rng = np.random.default_rng(0)
    m, d = (4000, 120) if quick else (20000, 400)
    X = rng.standard_normal((m, d))
    lstsq = LeastSquares(X, X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(m), alpha=1e-3)
    out = {}
    for name, prob, rel, steps in (("digits", problem, 2e-2, 600), ("lstsq", lstsq, 1e-6, 300)):
        zero = np.zeros(prob.n_params)
        best = minimize(prob.loss, zero, jac=prob.gradient, method="L-BFGS-B",
                        options={"maxiter": 5000, "gtol": 1e-13, "ftol": 1e-16})
        f_star, f_zero = float(best.fun), prob.loss(zero)
        out[name] = (prob, f_star + rel * (f_zero - f_star), 60 if quick else steps)
    return out


def run_one(problem, scheme, delays, target: float, max_steps: int) -> dict[str, float]:
    start = time.perf_counter()
    history = train(problem, scheme, SimulatedCluster(N_WORKERS, delays, seed=0), policy="first_k",
                    max_steps=max_steps, target_loss=target, progress=False, seed=0)
    work = sum(task.work for task in scheme.tasks(np.zeros(problem.n_params))) / N_WORKERS
    errors = [e for e in history.grad_error if math.isfinite(e)]
    return {"time": history.time_to(target), "steps": len(history), "work": work,
            "error": float(np.mean(errors)) if errors else math.nan, "wall": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problems, few steps (smoke run)")
    args = parser.parse_args()
    for workload, (problem, target, max_steps) in workloads(args.quick).items():
        for model_name, delays in DELAY_MODELS.items():
            rows = {name: run_one(problem, scheme, delays, target, max_steps) for name, scheme in make_schemes().items()}
            base = rows["uncoded"]["time"]
            ours = min(rows["lwpd-1x"]["time"], rows["lwpd-2x"]["time"])
            print(f"\n{workload}, {model_name}: simulated time to target (max {max_steps} steps)")
            print(f"{'scheme':<12} {'work/worker':>11} {'steps':>6} {'time':>10} {'vs uncoded':>11} {'best lwpd/this':>15} {'grad err':>9} {'wall s':>7}")
            for name, r in rows.items():
                t = f"{r['time']:10.1f}" if math.isfinite(r["time"]) else f"{'never':>10}"
                speed = base / r["time"] if math.isfinite(base) and math.isfinite(r["time"]) else math.nan
                rel = ours / r["time"] if math.isfinite(r["time"]) else math.nan
                print(f"{name:<12} {r['work']:11.2f} {r['steps']:6d} {t} {speed:10.2f}x {rel:15.2f} {r['error']:9.3f} {r['wall']:7.1f}")
            baselines = {name: r["time"] for name, r in rows.items() if not name.startswith("lwpd")}
            charged = min(rows["lwpd-1x+fwd"]["time"], rows["lwpd-2x+fwd"]["time"])
            fastest = min(baselines, key=baselines.get)
            print(f"best LWPD vs uncoded: {base / ours:.2f}x; fastest baseline {fastest}: "
                  f"LWPD {'faster' if ours < baselines[fastest] else 'slower'} by {max(ours, baselines[fastest]) / min(ours, baselines[fastest]):.2f}x; "
                  f"with the forward pass charged, best LWPD vs uncoded: {base / charged:.2f}x")

if __name__ == "__main__":
    main()
