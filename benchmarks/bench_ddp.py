"""The LWPD DDP communication hook against the hooks torch ships, on real gloo processes.

Every configuration trains the same model with ``DistributedDataParallel`` over ``world`` CPU
processes (gloo, one thread each), each rank on its shard of the training part of
scikit-learn's digits (8 x 8 images), SGD with momentum 0.9, batch 32 per rank, a fixed
number of epochs. Accuracy is cross-validated: the 1,797 digits are cut into 3 stratified
folds, each configuration is trained 3 times (each fold held out once, 1,198 images for
training), and the accuracy is that of the 1,797 held-out predictions pooled. This is
repeated for 3 seeds (model initialisation, batch order and the folds all change with the
seed); the report gives the median over seeds and the range. Hooks:

* ``allreduce`` -- no hook (DDP's own all-reduce of the gradient);
* ``fp16`` -- ``default_hooks.fp16_compress_hook`` (half the bytes; counted as half the floats);
* ``powersgd-r`` -- ``powerSGD_hook`` with rank ``r`` = 1, 2, 4, error feedback and warm start,
  compression from the third step (``start_powerSGD_iter=2``), torch's default rule for which
  tensors to compress (``min_compression_rate=2``: biases and small matrices go uncompressed);
* ``lwpd@r`` -- :func:`lwpd.torch.lwpd_comm_hook` with error feedback sending about as many
  floats as ``powersgd-r``: ``c`` codewords per block of ``b`` coordinates (``b`` in 8, 16, 32, 64,
  ``c / b`` closest to PowerSGD's ratio), codewords sent in turn from a basis of each block
  (``codewords="cyclic"``; the log-det compressed projective base, which for a whole basis is
  the unit vectors: cyclic coordinate sending);
  ``lwpd@r-noef`` the same without error feedback, ``lwpd@r-random`` with random draws of
  the weight-2 base (``codewords="random"``) and error feedback;
* ``lwpd-exact`` -- the hook with ``c = b``: every block recovered whole each step (100% of
  each bucket, the exact averaged gradient), the check that the coded path costs little
  (goal: within 1.2x allreduce's time per step).

Models: ``mlp`` (64-128-128-10, 26,122 parameters) and ``cnn`` (two 3 x 3 convolutions of 16
and 32 channels, 2 x 2 max-pooling, a linear layer: 9,930 parameters). Reported per world
size: floats sent per rank and step (the all-reduced values; 1.0 = the gradient), time per
step (the median over every step after the first of every run, so one-off set-up -- codebooks,
compiled decoders, PowerSGD's warm-up buffers -- is not counted), and the cross-validated
accuracy (rank 0's model; every rank holds the same one).

Run ``python benchmarks/bench_ddp.py`` (2 processes, 12 epochs, 3 seeds x 3 folds: about 30
minutes on 2 cores; ``--worlds 2,4`` adds 4 processes, which on 2 cores measure contention
as much as communication). ``--quick`` is a smoke test -- 1 epoch, 1 seed, 1 fold (599
held-out images): too short to train, its accuracies are no verdict. ``--json PATH`` writes
every number; ``--report-from PATH`` prints the tables of a saved run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

import numpy as np

EPOCHS = 12
SEEDS = 3
FOLDS = 3
RANKS = (1, 2, 4)
BLOCKS = (8, 16, 32, 64)
EXACT_GOAL = 1.2  # lwpd-exact within this factor of allreduce's time per step


def _digits(seed: int, fold: int):
    """Training and held-out part of fold ``fold`` of digits cut into FOLDS stratified folds
    (shuffled by ``seed``), as tensors."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold

    X, y = load_digits(return_X_y=True)
    train, test = list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(X, y))[fold]
    as_t = lambda a, dt: torch.tensor(a, dtype=dt)  # noqa: E731
    return (as_t(X[train] / 16.0, torch.float32), as_t(y[train], torch.long),
            as_t(X[test] / 16.0, torch.float32), as_t(y[test], torch.long))


def _model(name: str, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if name == "mlp":
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 10))


def powersgd_floats(model, rank: int, min_compression_rate: float = 2.0) -> int:
    """Floats PowerSGD all-reduces per step: P and Q for each compressed matrix (torch's rule:
    compress when ``(n + m) r * min_compression_rate < n m``), the rest uncompressed."""
    total = 0
    for p in model.parameters():
        if p.ndim <= 1:
            total += p.numel()
            continue
        n, m = p.shape[0], p.numel() // p.shape[0]
        total += (n + m) * rank if (n + m) * rank * min_compression_rate < n * m else n * m
    return total


def lwpd_matching(numel: int, target: float) -> tuple[int, int]:
    """``(block, codewords per block)`` whose ratio is closest to ``target / numel``."""
    ratio = target / numel
    options = [(b, max(1, min(b, round(ratio * b)))) for b in BLOCKS]
    return min(options, key=lambda bc: (abs(bc[1] / bc[0] - ratio), bc[0]))


def _configs(model) -> list[tuple[str, dict]]:
    numel = sum(p.numel() for p in model.parameters())
    out = [("allreduce", {}), ("fp16", {}), ("lwpd-exact", {"block": 8, "c": 8})]
    for r in RANKS:
        out.append((f"powersgd-{r}", {"rank": r}))
        b, c = lwpd_matching(numel, powersgd_floats(model, r))
        out.append((f"lwpd@{r}", {"block": b, "c": c}))
        out.append((f"lwpd@{r}-noef", {"block": b, "c": c, "ef": False}))
        out.append((f"lwpd@{r}-random", {"block": b, "c": c, "draw": "random"}))
    return out


def _worker(rank: int, world: int, port: int, models: tuple[str, ...], epochs: int, runs: list, out: dict) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook as psgd
    from torch.nn.parallel import DistributedDataParallel as DDP

    from lwpd.torch import LWPDHookState, lwpd_comm_hook

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = []
        for seed, fold in runs:
            Xtr, ytr, Xte, yte = _digits(seed, fold)
            shard = slice(rank, None, world)
            X, y = Xtr[shard], ytr[shard]
            for name in models:
                for label, cfg in _configs(_model(name)):
                    model = _model(name, seed)
                    numel = sum(p.numel() for p in model.parameters())
                    net = DDP(model)
                    state = None
                    if label == "fp16":
                        net.register_comm_hook(None, default_hooks.fp16_compress_hook)
                        floats = numel / 2
                    elif label.startswith("powersgd"):
                        state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=cfg["rank"],
                                                   start_powerSGD_iter=2, use_error_feedback=True, warm_start=True,
                                                   random_seed=seed)
                        net.register_comm_hook(state, psgd.powerSGD_hook)
                        floats = powersgd_floats(model, cfg["rank"])
                    elif label.startswith("lwpd"):
                        state = LWPDHookState(block_size=cfg["block"], codewords_per_block=cfg["c"],
                                              error_feedback=cfg.get("ef", True), codewords=cfg.get("draw", "cyclic"),
                                              max_weight=2 if cfg["block"] <= 16 else 1, seed=seed)
                        net.register_comm_hook(state, lwpd_comm_hook)
                        floats = None
                    else:
                        floats = numel
                    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
                    gen = torch.Generator().manual_seed(seed + 1)
                    step_ms = []
                    for _ in range(epochs):
                        order = torch.randperm(len(X), generator=gen)
                        for i in range(0, len(X) - 31, 32):
                            sel = order[i: i + 32]
                            start = time.perf_counter()
                            opt.zero_grad()
                            F.cross_entropy(net(X[sel]), y[sel]).backward()
                            opt.step()
                            step_ms.append(1e3 * (time.perf_counter() - start))
                    recovered = None
                    if label.startswith("lwpd"):
                        stats = state.last_stats.values()
                        floats = sum(s["sent"] for s in stats)
                        recovered = sum(s["recovered"] * s["numel"] for s in stats) / sum(s["numel"] for s in stats)
                    with torch.no_grad():
                        correct = int((net.module(Xte).argmax(1) == yte).sum())
                    results.append({"model": name, "hook": label, "seed": seed, "fold": fold, "numel": numel,
                                    "floats": float(floats), "ratio": float(floats) / numel, "step_ms": step_ms[1:],
                                    "correct": correct, "held_out": len(yte), "recovered": recovered, **cfg})
        if rank == 0:
            out["results"] = results
    finally:
        dist.destroy_process_group()


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (model, hook): accuracy pooled over a seed's folds, then its median and
    range over seeds; the median time per step over every step of every run."""
    out = []
    for key in dict.fromkeys((r["model"], r["hook"]) for r in rows):
        runs = [r for r in rows if (r["model"], r["hook"]) == key]
        seeds = sorted({r["seed"] for r in runs})
        acc = [sum(r["correct"] for r in runs if r["seed"] == s) / sum(r["held_out"] for r in runs if r["seed"] == s)
               for s in seeds]
        first = runs[0]
        out.append({**{k: first[k] for k in first if k not in ("seed", "fold", "step_ms", "correct", "held_out")},
                    "accuracy": float(np.median(acc)), "accuracy_min": min(acc), "accuracy_max": max(acc),
                    "seeds": len(seeds), "held_out": sum(r["held_out"] for r in runs if r["seed"] == seeds[0]),
                    "ms_per_step": float(np.median(np.concatenate([r["step_ms"] for r in runs])))})
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world: int, models: tuple[str, ...], epochs: int, runs: list) -> list[dict]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(world, _free_port(), models, epochs, runs, out), nprocs=world, join=True)
        return list(out["results"])


def report(everything: dict) -> None:
    """The tables of a run (``everything``: world size -> summarised rows, and its settings)."""
    settings = everything["settings"]
    for world, rows in everything["worlds"].items():
        for name in dict.fromkeys(r["model"] for r in rows):
            print(f"\n## {name}, {world} gloo processes, {settings['epochs']} epochs, {settings['seeds']} seed(s) x "
                  f"{settings['folds']} fold(s){' (smoke test: no verdict)' if settings['quick'] else ''}\n")
            held = rows[0]["held_out"]
            print(f"| hook | floats / step (x gradient) | ms / step | accuracy on {held:,} held out (median, range) | "
                  "recovered |")
            print("|---|---:|---:|---:|---:|")
            for r in (r for r in rows if r["model"] == name):
                shape = f" (b={r['block']}, c={r['c']})" if r["hook"].startswith("lwpd") else ""
                rec = f"{100 * r['recovered']:.0f}%" if r["recovered"] is not None else "-"
                spread = f" ({100 * r['accuracy_min']:.1f}-{100 * r['accuracy_max']:.1f})" if r["seeds"] > 1 else ""
                print(f"| {r['hook']}{shape} | {r['floats']:,.0f} ({r['ratio']:.3f}) | {r['ms_per_step']:.2f} | "
                      f"{100 * r['accuracy']:.1f}%{spread} | {rec} |")
            by = {r["hook"]: r for r in rows if r["model"] == name}
            for rk in RANKS:
                p = by[f"powersgd-{rk}"]
                lw = max((by[f"lwpd@{rk}{v}"] for v in ("", "-noef", "-random")), key=lambda r: r["accuracy"])
                print(f"- rank {rk}: best lwpd ({lw['hook']}) {100 * (lw['accuracy'] - p['accuracy']):+.1f} points of "
                      f"accuracy (median over seeds), {lw['ms_per_step'] / p['ms_per_step']:.2f}x the time per step, "
                      f"{lw['floats'] / p['floats']:.2f}x the floats (goal: within 0.5 points at lower time)")
            e, a = by["lwpd-exact"], by["allreduce"]
            ratio, goal = e["ms_per_step"] / a["ms_per_step"], settings["exact_goal"]
            print(f"- exact mode (lwpd-exact): {ratio:.2f}x allreduce's time per step "
                  f"(goal <= {goal:g}x: {'met' if ratio <= goal else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 1 seed, 1 fold")
    parser.add_argument("--worlds", default="2", help="comma-separated process counts (default 2)")
    parser.add_argument("--json", default=None, help="also write every number to this file")
    parser.add_argument("--report-from", default=None, metavar="JSON", help="print the tables of a saved run")
    args = parser.parse_args()
    if args.report_from:
        with open(args.report_from) as fh:
            report(json.load(fh))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    epochs, seeds, folds = (1, 1, 1) if args.quick else (EPOCHS, SEEDS, FOLDS)
    runs = [(seed, fold) for seed in range(seeds) for fold in range(folds)]
    everything = {"settings": {"epochs": epochs, "seeds": seeds, "folds": folds, "quick": args.quick,
                               "exact_goal": EXACT_GOAL}, "worlds": {}}
    for world in (int(w) for w in args.worlds.split(",")):
        everything["worlds"][world] = summarise(run(world, ("mlp", "cnn"), epochs, runs))
    report(everything)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(everything, fh, indent=2)


if __name__ == "__main__":
    main()
