"""Real clusters: wall-clock training on Dask, the scheduler's price per task, and the price of
robust decoding.

Three measurements, all from one run:

1. **Training on a 2-process Dask LocalCluster with injected delays.** Least squares
   (4,000 x 40, columns scaled to a condition number of about 5, target 1e-6 of the initial
   loss gap), 8 logical workers pinned over the two
   worker processes (16 threads each, so that injected sleeps never queue behind each other),
   per-worker delays from a shifted exponential (shift 1, rate 0.5) scaled to 30 ms of sleep
   per modelled second. Schemes: uncoded, cyclic gradient coding (s = 1), LWPD (the library
   default: four chunks per worker, 75% of the chunks) and LWPD with one chunk per worker
   (``lwpd-1chunk``: a quarter of the tasks), each waiting until it can decode
   (``policy="first_k"``). Reported: wall
   time per step and to the target, beside what the simulated cluster predicts for the same
   seeds (its modelled time times the scale): the gap is the real system's overhead.
2. **Scheduler overhead per task.** Steps of 8 tiny tasks without delays, on the Dask cluster
   and on a ``ProcessPoolExecutor`` of two processes behind :class:`~lwpd.cluster.ExecutorCluster`:
   the round trip per task, and the bytes a task carries.
3. **Robust decoding against plain decoding**, per block: :class:`~lwpd.robust.RobustDecoder`
   (``max_errors=1``) and :class:`~lwpd.ProjectionDecoder` decoding 2,000 blocks of 4
   coordinates, 12 codewords each (the compressed projective base), with no corrupted value
   and with one corrupted value in 10% of the blocks.

Run ``python benchmarks/bench_cluster.py`` (under 2 minutes on 2 cores; ``--quick`` for a
smoke run; ``--json PATH`` writes every number).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import pickle
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from lwpd import Partition, ProjectionDecoder, block_codebook, compress, projective_codebook, train
from lwpd.cluster import DaskCluster, ExecutorCluster, SimulatedCluster, dask_cluster
from lwpd.problems import LeastSquares
from lwpd.robust import RobustDecoder
from lwpd.schemes import LWPD, GradientCoding, Uncoded
from lwpd.stragglers import ShiftedExponential

TIME_SCALE = 0.03  # seconds of sleep per modelled second
WORKERS = 8


def _problem(seed: int = 0) -> tuple[LeastSquares, float]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((4000, 40)) * np.logspace(0, -0.35, 40)  # condition number ~5: tens of steps
    problem = LeastSquares(X, X @ rng.standard_normal(40) + 0.1 * rng.standard_normal(4000), fit_intercept=False)
    best = problem.loss(np.linalg.lstsq(np.c_[X], problem.y, rcond=None)[0])
    return problem, best + 1e-6 * (problem.loss(np.zeros(40)) - best)


def _schemes() -> dict:
    return {"uncoded": Uncoded(), "gc-cyclic": GradientCoding(s=1, kind="cyclic"), "lwpd": LWPD(),
            "lwpd-1chunk": LWPD(chunks=1)}


def training(client, max_steps: int) -> list[dict]:
    """Part 1: Dask wall clock against the simulated prediction, per scheme."""
    problem, target = _problem()
    rows = []
    for name, scheme in _schemes().items():
        delays = ShiftedExponential(shift=1.0, rate=0.5)
        simulated = train(problem, scheme, SimulatedCluster(WORKERS, delays, seed=1), policy="first_k",
                          max_steps=max_steps, target_loss=target, progress=False, seed=0)
        cluster = DaskCluster(client, WORKERS, ShiftedExponential(shift=1.0, rate=0.5), time_scale=TIME_SCALE, seed=1)
        start = time.perf_counter()
        real = train(problem, scheme, cluster, policy="first_k", max_steps=max_steps, target_loss=target,
                     progress=False, seed=0)
        wall = time.perf_counter() - start
        cluster.close()
        rows.append({
            "scheme": name, "steps": len(real), "reached": bool(real.loss[-1] <= target),
            "wall_per_step_ms": 1e3 * wall / len(real), "wall_to_target_s": real.time_to(target),
            "predicted_per_step_ms": 1e3 * TIME_SCALE * simulated.time[-1] / len(simulated),
            "predicted_to_target_s": TIME_SCALE * simulated.time_to(target),
            "failed": int(sum(real.failed)), "dropped": int(sum(real.dropped)),
        })
    return rows


def _tiny(theta: np.ndarray) -> float:
    return float(theta[0])


def _round_trips(cluster, steps: int) -> float:
    theta = np.ones(40)
    for _ in range(3):  # warm up (imports, connections)
        cluster.submit(0, _tiny, theta)
        cluster.wait()
    start = time.perf_counter()
    for _ in range(steps):
        cluster.new_round()
        for w in range(WORKERS):
            cluster.submit(w, _tiny, theta)
        cluster.wait()
    return 1e3 * (time.perf_counter() - start) / (steps * WORKERS)


def overhead(client, steps: int) -> dict:
    """Part 2: milliseconds per task on Dask and on a process pool; bytes a task carries."""
    dask_ms = _round_trips(DaskCluster(client, WORKERS, seed=0), steps)
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        pool_ms = _round_trips(ExecutorCluster(pool, WORKERS, seed=0), steps)
    # What one LWPD task sends on Dask (data scattered) and on a pool (everything pickled).
    problem, _ = _problem()
    scheme = LWPD()
    scheme.bind(problem, WORKERS, np.random.default_rng(0))
    task = scheme.tasks(np.zeros(40))[0]
    cluster = DaskCluster(client, WORKERS, seed=0)
    dask_bytes = len(pickle.dumps(cluster._ship(task.args)))
    cluster.close()
    return {"dask_ms_per_task": dask_ms, "pool_ms_per_task": pool_ms,
            "lwpd_task_bytes_dask": dask_bytes, "lwpd_task_bytes_pool": len(pickle.dumps(task.args))}


def robust_cost(n_blocks: int, repeats: int) -> list[dict]:
    """Part 3: microseconds per block, robust against plain projection decoding."""
    base = compress(projective_codebook(4, q=3, max_weight=2), 12, criterion="logdet")
    cb = block_codebook(base, Partition.uniform(4 * n_blocks, 4))
    rng = np.random.default_rng(0)
    g = rng.standard_normal(cb.dim)
    clean = cb.encode(g)
    lies = clean.copy()
    bad = rng.choice(n_blocks, n_blocks // 10, replace=False) * 12 + rng.integers(0, 12, n_blocks // 10)
    lies[bad] += rng.normal(0, 10, bad.size)
    for make in (ProjectionDecoder, RobustDecoder):  # warm up: kernels compiled, caches filled
        dec = make(cb)
        dec.update(np.arange(len(cb)), lies)
        dec.estimate()
    rows = []
    for label, values in (("clean", clean), ("10% of blocks corrupted", lies)):
        times = {}
        for name, make in (("projection", lambda: ProjectionDecoder(cb)), ("robust", lambda: RobustDecoder(cb))):
            best = np.inf
            for _ in range(repeats):
                dec = make()
                start = time.perf_counter()
                dec.update(np.arange(len(cb)), values)
                est = dec.estimate()
                best = min(best, time.perf_counter() - start)
            times[name] = (best, est)
        error = float(np.linalg.norm(times["robust"][1] - g) / np.linalg.norm(g))
        plain_error = float(np.linalg.norm(times["projection"][1] - g) / np.linalg.norm(g))
        rows.append({"case": label, "projection_us_per_block": 1e6 * times["projection"][0] / n_blocks,
                     "robust_us_per_block": 1e6 * times["robust"][0] / n_blocks,
                     "ratio": times["robust"][0] / times["projection"][0],
                     "robust_error": error, "projection_error": plain_error})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (few steps)")
    parser.add_argument("--json", default=None, help="also write every number to this file")
    args = parser.parse_args()
    max_steps, steps, n_blocks = (20, 10, 200) if args.quick else (300, 50, 2000)
    with dask_cluster(n_workers=2, threads_per_worker=16, silence_logs=logging.ERROR) as cluster:
        client = cluster.client
        results = {"training": training(client, max_steps), "overhead": overhead(client, steps),
                   "robust": robust_cost(n_blocks, 5)}

    print(f"## 1. Least squares on a 2-process Dask LocalCluster, {WORKERS} logical workers, shifted-exponential "
          f"delays ({1e3 * TIME_SCALE:g} ms per modelled second)\n")
    print("| scheme | steps | wall ms / step | predicted ms / step | wall s to target | predicted s to target |")
    print("|---|---:|---:|---:|---:|---:|")
    base = next(r for r in results["training"] if r["scheme"] == "uncoded")
    for r in results["training"]:
        print(f"| {r['scheme']} | {r['steps']} | {r['wall_per_step_ms']:.0f} | {r['predicted_per_step_ms']:.0f} | "
              f"{r['wall_to_target_s']:.2f} | {r['predicted_to_target_s']:.2f} |")
    lwpd = next(r for r in results["training"] if r["scheme"] == "lwpd")
    gc = next(r for r in results["training"] if r["scheme"] == "gc-cyclic")
    print(f"\nwall-clock speed-up to target over uncoded: lwpd {base['wall_to_target_s'] / lwpd['wall_to_target_s']:.2f}x, "
          f"gc-cyclic {base['wall_to_target_s'] / gc['wall_to_target_s']:.2f}x (simulated: "
          f"{base['predicted_to_target_s'] / lwpd['predicted_to_target_s']:.2f}x, "
          f"{base['predicted_to_target_s'] / gc['predicted_to_target_s']:.2f}x)")
    o = results["overhead"]
    print("\n## 2. Scheduler overhead per task (steps of 8 tiny tasks, no delays)\n")
    print("| executor | ms per task | bytes per LWPD task |")
    print("|---|---:|---:|")
    print(f"| Dask LocalCluster (2 processes) | {o['dask_ms_per_task']:.2f} | {o['lwpd_task_bytes_dask']} |")
    print(f"| ProcessPoolExecutor (2 processes) | {o['pool_ms_per_task']:.2f} | {o['lwpd_task_bytes_pool']} |")
    print(f"\nDask / pool: {o['dask_ms_per_task'] / o['pool_ms_per_task']:.1f}x the time per task, "
          f"{o['lwpd_task_bytes_dask'] / o['lwpd_task_bytes_pool']:.4f}x the bytes")
    print(f"\n## 3. Robust against plain decoding, {n_blocks} blocks of 4 coordinates, 12 codewords each\n")
    print("| values | projection us / block | robust us / block | robust / projection | error robust | error projection |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results["robust"]:
        print(f"| {r['case']} | {r['projection_us_per_block']:.2f} | {r['robust_us_per_block']:.1f} | "
              f"{r['ratio']:.0f}x | {r['robust_error']:.1e} | {r['projection_error']:.1e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
