"""Cost of the torch adapters on CPU: CodedOptimizer step vs the bare optimizer, and a
directional derivative by forward mode (jvp) vs by backprop.

Model: an MLP 784-1024-256-10 (1,068,810 parameters), float32, batch 128, cross-entropy.

* Step time: ``zero_grad + forward + backward + step`` with ``torch.optim.SGD(momentum=0.9)``
  bare, and wrapped in :class:`lwpd.torch.CodedOptimizer` (10 simulated workers, default
  codebook: blocks of <= 4 coordinates, PG(b-1, 3) weight <= 2 compressed to 2 codewords
  per coordinate), without stragglers and with 20% failing workers. The overhead is
  ``(coded - bare) / bare``; the goal is <= 15%.
* Directional derivatives: one ``torch.func.jvp`` (a single direction, and per direction of
  a vmapped chunk of 16) against one backprop (``loss.backward()`` then a dot product), which
  gives one derivative -- or, amortised, all of a codebook's derivatives at once.

Step times are means of interleaved repeats (200; a coded step's cost depends on which
workers answered, and a training run takes the sum of its steps); the parts and derivatives are the best of several repeats (the machine may be
shared); all measured in one run. ``--quick`` uses fewer repeats.
Run: ``python benchmarks/bench_torch.py [--quick] [--threads N] [--json PATH] [--report-from PATH]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np
import torch
import torch.nn.functional as F

from lwpd.stragglers import Bernoulli
from lwpd.torch import CodedOptimizer, directional_derivatives, flatten_grads



#: Simulated workers, pinned (the library default is 16 since 2026-12-06; this benchmark's
#: workload, and its history, are at 10).
WORKERS = 10

def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )


def best_time(fn, repeats: int, warmup: int = 2) -> float:
    """Best of ``repeats`` timings: on a shared machine, other load only ever adds time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times(fns, repeats: int, warmup: int = 2, clock=time.perf_counter, mean: bool = False,
               raw: list | None = None) -> list[float]:
    """Best (or mean) time of each function, running them in turn (interleaved) ``repeats``
    times. The mean is for steps whose cost depends on chance (which workers answered): a
    training run takes the sum of its steps, and the best -- or the median, when most steps
    are cheap -- would pick the lucky ones."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = clock()
            fn()
            times[i].append(clock() - start)
    if raw is not None:  # every repeat's time, per function
        raw.extend(times)
    return [float(np.mean(t)) if mean else min(t) for t in times]


def by_lost_workers(opt: CodedOptimizer, bare_step, step, repeats: int) -> tuple[float, list[dict]]:
    """The coded steps grouped by how many workers they lost: each group's share of the steps,
    mean time and overhead over the mean of bare steps interleaved with them -- where a mean
    overhead comes from. Returns ``(bare mean ms, groups)``."""
    lost, times, bare = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        bare_step()
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        lost.append(opt.n_workers * opt.chunks - len(opt._last_arrived))
    lost, times, bare_ms = np.array(lost), 1e3 * np.array(times), 1e3 * float(np.mean(bare))
    groups = [(f"<= {opt._tolerance} (spared)", lost <= opt._tolerance)]
    groups += [(str(k), lost == k) for k in range(opt._tolerance + 1, opt._tolerance + 3)]
    groups.append((f">= {opt._tolerance + 3}", lost >= opt._tolerance + 3))
    return bare_ms, [{"lost": label, "share": float(sel.mean()), "coded_ms": float(times[sel].mean()),
                      "overhead": float(times[sel].mean() / bare_ms - 1)} for label, sel in groups if sel.any()]


def breakdown(opt: CodedOptimizer, model: torch.nn.Module, x, y, repeats: int) -> dict:
    """Where a coded step's extra time goes: gather, encode and decode (fold + per-block solves:
    the general path, and a deployment's master), and the projection by received patterns
    that a step with the default codebook runs instead of encode + decode."""
    from lwpd.torch.optimizer import _decode, _encode
    from lwpd.torch.partitions import flatten as _flatten

    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    params = opt._params()
    g = opt.parameter_partition.to_blocks(_flatten(params))
    idx = torch.cat(opt._chunk_indices)
    values = _encode(opt.codebook, g)[idx]
    flat = _flatten(params)
    parts = {
        "flatten + reorder to blocks": lambda: opt.parameter_partition.to_blocks(_flatten(params)),
        "encode all codewords": lambda: _encode(opt.codebook, g),
        "decode (fold + solve every block)": lambda: _decode(opt.codebook, opt._decoder, idx, values, g),
    }
    if opt._runs is not None:  # what a step does with the default codebook (lwpd.torch.CodedOptimizer)
        # one lost chunk more than every block can spare (fewer need no projection at all)
        missing = np.arange(opt._tolerance + 1)
        masks, counts, _ = opt._received_patterns(missing)
        runs = opt._runs_to_project(params, counts)
        norms = opt._check_grads(params)
        not_spanned = sum(int(counts[opt._run_offset[r]:opt._run_offset[r + 1]] @ (run.ranks < run.size)) * run.size
                          for r, run in enumerate(opt._runs))
        share = not_spanned / opt.parameter_partition.dim
        parts[f"received sets ({missing.size} of {len(opt._chunk_sizes)} chunks lost)"] = lambda: opt._received_patterns(missing)
        parts["project by patterns, flat kernel"] = lambda: opt._project_by_patterns(flat, masks)
        if runs is not None:  # projection is idempotent: repeating it in place costs the same
            parts[f"project in place ({100 * share:.1f}% of coordinates)"] = lambda: opt._project_in_place(params, runs, masks, norms)
    times = best_times(list(parts.values()), max(3, repeats // 3))
    return {"batch": x.shape[0], "blocks": opt.parameter_partition.partition.n_blocks, "parameters": opt.parameter_partition.dim,
            "ms": {label: 1e3 * t for label, t in zip(parts, times)}}


def step_fn(model, opt, x, y):
    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch and Numba threads (default: all cores)")
    parser.add_argument("--json", default=None, help="also write every step time and derivative time to this file")
    parser.add_argument("--report-from", default=None, metavar="JSON", help="print the tables of a saved run (--json)")
    args = parser.parse_args()
    if args.report_from:
        with open(args.report_from) as fh:
            report(json.load(fh))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    repeats = 5 if args.quick else 30
    step_repeats = 20 if args.quick else 200  # means over the steps: more of them than for the best times
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 784, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    model = make_model()
    n = sum(p.numel() for p in model.parameters())

    variants = {
        "neuron, no stragglers": dict(partition="neuron"),
        "neuron, 2% fail": dict(partition="neuron", stragglers=Bernoulli(0.02)),
        "neuron, 20% fail": dict(partition="neuron", stragglers=Bernoulli(0.2)),
        "tensor, 20% fail": dict(partition="tensor", stragglers=Bernoulli(0.2)),
        "tensor, 20% fail, no error stats": dict(partition="tensor", stragglers=Bernoulli(0.2), exact_grad_stats=False),
    }
    steps = []
    for batch in (128, 1024):
        xb, yb = torch.randn(batch, 784, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
        for label, kwargs in variants.items():
            if batch != 128 and label != "neuron, 20% fail":
                continue
            bare_model, m = make_model(), make_model()
            bare_step = step_fn(bare_model, torch.optim.SGD(bare_model.parameters(), lr=0.01, momentum=0.9), xb, yb)
            opt = CodedOptimizer(torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), model=m, seed=0, n_workers=WORKERS, **kwargs)
            fns = [bare_step, step_fn(m, opt, xb, yb)]
            bare, t = best_times(fns, step_repeats, mean=True)
            bare_cpu, t_cpu = best_times(fns, step_repeats, clock=time.process_time, mean=True)
            err = opt.last_stats.relative_error
            steps.append({"variant": label, "batch": batch, "codewords": len(opt.codebook), "relative_error": err,
                          "bare_ms": 1e3 * bare, "coded_ms": 1e3 * t, "overhead": t / bare - 1,
                          "bare_cpu_ms": 1e3 * bare_cpu, "coded_cpu_ms": 1e3 * t_cpu, "cpu_overhead": t_cpu / bare_cpu - 1})
            if batch == 128 and label == "neuron, 20% fail":  # where the mean comes from
                steps[-1]["by_lost_bare_ms"], steps[-1]["by_lost"] = by_lost_workers(opt, *fns, 2 * step_repeats)
    parts = breakdown(opt, m, x, y, repeats)

    # directional derivatives
    v1 = torch.randn(n, generator=gen)
    v16 = torch.randn(16, n, generator=gen)

    def backprop_one():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return flatten_grads(model) @ v1

    t_back = best_time(backprop_one, repeats)
    t_jvp1 = best_time(lambda: directional_derivatives(model, F.cross_entropy, x, y, v1), repeats)
    t_jvp16 = best_time(lambda: directional_derivatives(model, F.cross_entropy, x, y, v16), max(3, repeats // 3)) / 16
    t_fwd = best_time(lambda: F.cross_entropy(model(x), y), repeats)
    derivatives = {"forward_ms": 1e3 * t_fwd, "backprop_ms": 1e3 * t_back, "jvp_one_ms": 1e3 * t_jvp1,
                   "jvp_vmapped_per_direction_ms": 1e3 * t_jvp16}
    data = {"parameters": n, "threads": {"torch": torch.get_num_threads(), "numba": numba.get_num_threads()},
            "repeats": repeats, "step_repeats": step_repeats, "statistic": "mean", "steps": steps, "parts": parts, "derivatives": derivatives}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(data, fh, indent=1)
    report(data)


def report(data: dict) -> None:
    """Print the tables of a run (measured now, or read back with ``--report-from``)."""
    threads = data.get("threads", {})
    print(f"MLP 784-1024-256-10: {data['parameters']:,} parameters, float32, {threads.get('torch', '?')} torch threads, "
          f"{threads.get('numba', '?')} Numba threads, {data.get('repeats', '?')} repeats")
    print()
    statistic = data.get("statistic", "median")  # runs saved before 2026-12-07 took the median
    print(f"Step time, {statistic} of {data.get('step_repeats', data.get('repeats', '?'))} steps (a coded step's cost "
          "depends on which workers answered; a")
    print("training run takes the sum of its steps, so the mean is its cost -- the best, or the median when most")
    print("steps are cheap, would pick the lucky ones); bare and coded steps alternate, so both see the same")
    print("background load. Wall-clock time, then CPU time of this process (summed over its threads;")
    print("insensitive to other processes on a shared machine).")
    print(
        f"{'step (SGD momentum 0.9)':<50} {'batch':>6} {'codewords':>10} {'rel.err':>8} {'bare ms':>8} {'coded ms':>9} "
        f"{'overhead':>9} {'bare cpu':>8} {'coded cpu':>9} {'overhead':>9}"
    )
    for s in data["steps"]:
        err = "" if s["relative_error"] is None else f"{s['relative_error']:.3f}"
        print(
            f"{'CodedOptimizer ' + s['variant']:<50} {s['batch']:>6} {s['codewords']:>10,} {err:>8} "
            f"{s['bare_ms']:8.2f} {s['coded_ms']:9.2f} {100 * s['overhead']:8.0f}% "
            f"{s['bare_cpu_ms']:8.2f} {s['coded_cpu_ms']:9.2f} {100 * s['cpu_overhead']:8.0f}%"
        )
    for s in data["steps"]:
        if s.get("by_lost"):
            print(f"\nCodedOptimizer {s['variant']}, batch {s['batch']}: coded steps by workers lost (of {WORKERS}), "
                  f"against the mean of bare steps interleaved with them, {s.get('by_lost_bare_ms', s['bare_ms']):.2f} ms "
                  "(wall):")
            for g in s["by_lost"]:
                print(f"  lost {g['lost']:<14} {100 * g['share']:5.1f}% of the steps  {g['coded_ms']:7.2f} ms  "
                      f"{100 * g['overhead']:+6.0f}%")
    parts = data.get("parts")
    if parts:
        print(f"\nCoded step parts, batch {parts['batch']} ({parts['blocks']:,} blocks, every codeword received):")
        for label, ms in parts["ms"].items():
            print(f"  {label:<40} {ms:8.2f} ms  ({1e6 * ms / parts['parameters']:5.1f} ns per parameter)")
    d = data["derivatives"]
    print()
    print(f"{'directional derivative':<50} {'ms':>9} {'/ backprop':>11} {'/ forward':>10}")
    for label, key in [
        ("forward only (loss)", "forward_ms"),
        ("backprop: backward + dot (one derivative)", "backprop_ms"),
        ("jvp, one direction", "jvp_one_ms"),
        ("jvp, per direction of a vmapped chunk of 16", "jvp_vmapped_per_direction_ms"),
    ]:
        print(f"{label:<50} {d[key]:9.2f} {d[key] / d['backprop_ms']:11.2f} {d[key] / d['forward_ms']:10.2f}")


if __name__ == "__main__":
    main()
