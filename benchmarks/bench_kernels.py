"""Benchmark the lwpd CPU kernels against what a user would otherwise write.

Every ratio in the printed table is measured in the same run, on the same data, so the
numbers can be compared with each other (absolute times depend on the machine and on
what else is running; the machine facts and load average are printed with the table).

What is measured
----------------
encode
    ``Codebook.encode(g)`` of the uniform block codebook
    ``block_codebook(projective_codebook(8, q=3, max_weight=2), Partition.uniform(n, 8))``
    (64 codewords per block of 8 coordinates), for a float64 and a float32 gradient,
    against (a) ``scipy.sparse`` CSR matvec of the same codebook, ``cb.to_scipy() @ g``;
    (b) dense NumPy per block, ``(g.reshape(-1, 8) @ B.T).ravel()`` with ``B`` the dense
    64 x 8 base; and (c) memory bandwidth: encode reads ``g`` and writes the output,
    ``itemsize * (n + N)`` bytes, compared with ``np.copyto(dst, src)`` on preallocated
    arrays moving the same number of bytes (read + written). The bandwidth row encodes into
    a preallocated ``out=`` array, so both sides skip the first touch of a fresh result.
decode
    ``lwpd.decode(cb, indices, values)`` of every block with 70% of the codewords received
    (a seeded random subset; values are the exact encode of a random gradient) against a
    Python loop of ``np.linalg.lstsq`` per block, and against batched NumPy:
    ``np.linalg.pinv`` of the per-block received matrices stacked and padded with zero
    rows to a common row count, applied to the stacked values. Both baselines are timed
    on a subset of blocks and scaled per block to all blocks (the table says so); building
    their inputs is not timed. The decoded gradient is checked against the true
    projection (batched ``pinv`` over all blocks).
update
    ``ProjectionDecoder.update(index, value)`` latency for single arrivals (median per
    call) against recomputing least squares after each arrival: (i) a block-aware user who
    re-solves only the affected block with ``np.linalg.lstsq`` on that block's received
    rows, and (ii) a naive user who re-solves the whole received set (small ``n``; the
    recompute is timed at evenly spaced arrivals, so its median is that of a received set
    growing from empty to 70%). Also ``update(indices, values)`` throughput for one batch,
    against the throughput of single-arrival calls.

Timing: ``time.perf_counter``; one warm-up call (which also excludes Numba compilation),
then the median of several repetitions with the garbage collector paused.

Run
---
From the repository root::

    python benchmarks/bench_kernels.py             # full size, under 3 minutes on 2 cores
    python benchmarks/bench_kernels.py --quick     # smaller sizes, a few seconds
    python benchmarks/bench_kernels.py --markdown  # Markdown only (paste into docs/benchmarks.md)

Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numba
import numpy as np

import lwpd
from _machine import busy_warning, load_average, machine_facts
from lwpd import Partition, ProjectionDecoder, block_codebook, decode, projective_codebook
from lwpd._kernels import cpu as cpu_kernels  # the memory floor of the decode is measured with the fold kernel itself

BLOCK = 8  # coordinates per block
RECEIVED = 0.7  # fraction of codewords received in the decode benchmarks
# the arithmetic of one block of 8 (fold its results, assemble and factor its 8 x 8 information
# matrix, two triangular solves: about 2 kflop) on one core: the floor the kernels are measured against
FLOOR_US_PER_BLOCK = 0.4
SUBSET_BLOCKS = 0.05  # fraction of blocks with arrivals in the partial-decode row


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run."""

    n_encode: int
    n_decode: int
    loop_blocks: int  # blocks timed for the lstsq loop baseline
    batched_blocks: int  # blocks timed for the batched pinv baseline
    n_update: int
    arrivals: int  # single arrivals timed
    n_naive: int
    naive_samples: int  # full recomputes timed by the naive baseline
    batch: int
    repeat: int
    n_memory: int = 10_000_000  # coordinates of the decoder whose peak memory is reported


FULL = Sizes(n_encode=4_000_000, n_decode=1_000_000, loop_blocks=2_000, batched_blocks=20_000, n_update=80_000,
             arrivals=20_000, n_naive=256, naive_samples=30, batch=10_000, repeat=7)
QUICK = Sizes(n_memory=100_000, n_encode=400_000, n_decode=100_000, loop_blocks=500, batched_blocks=5_000, n_update=16_000,
              arrivals=5_000, n_naive=256, naive_samples=20, batch=5_000, repeat=3)


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Row:
    """One line of the table. ``unit`` is ``"s"`` (lower is better) or a rate (higher is
    better); ``ratio`` is always oriented so that larger means lwpd does better."""

    case: str
    lwpd: float
    baseline: float
    unit: str
    goal: float | None = None

    @property
    def ratio(self) -> float:
        return self.baseline / self.lwpd if self.unit == "s" else self.lwpd / self.baseline

    @property
    def met(self) -> str:
        if self.goal is None:
            return "-"
        return "yes" if self.ratio >= self.goal else "no"

    def cells(self) -> list[str]:
        goal = "-" if self.goal is None else f">= {self.goal:g}x"
        ratio = f"{self.ratio:,.0f}x" if self.ratio >= 100 else f"{self.ratio:.2f}x"
        return [self.case, quantity(self.lwpd, self.unit), quantity(self.baseline, self.unit), ratio, goal, self.met]


HEADER = ["case", "lwpd", "baseline", "ratio", "goal", "met?"]


def quantity(value: float, unit: str) -> str:
    """A value with a readable unit: seconds are scaled to s/ms/us, counts get k/M."""
    if unit == "s":
        for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
            if value >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value * 1e9:.3g} ns"
    if unit.startswith("GB"):
        return f"{value:.3g} {unit}"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{prefix} {unit}"
    return f"{value:.3g} {unit}"


def text_table(rows: Sequence[Row]) -> str:
    lines = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    right = {1, 2, 3}  # numbers align right

    def fmt(line: list[str]) -> str:
        return " | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(HEADER), rule] + [fmt(r.cells()) for r in rows])


def markdown_table(rows: Sequence[Row]) -> str:
    align = ["---", "---:", "---:", "---:", "---", ":---:"]
    lines = [HEADER, align] + [r.cells() for r in rows]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines)


_START = time.perf_counter()


def progress(message: str) -> None:
    print(f"[bench {time.perf_counter() - _START:6.1f} s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- timing
def median_time(fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None,
                warmup: bool = True) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls, after one warm-up call unless
    ``warmup`` is false. ``setup`` (untimed) runs before every call, including the warm-up.
    """
    times = []
    for i in range(repeat + 1 if warmup else repeat):
        if setup is not None:
            setup()
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
        finally:
            gc.enable()
        if i or not warmup:
            times.append(elapsed)
    return float(np.median(times))


def per_call_times(fn: Callable[[int, float], object], indices: Sequence[int], values: Sequence[float]) -> np.ndarray:
    """Wall time of each ``fn(index, value)`` call, in order."""
    clock = time.perf_counter
    out = np.empty(len(indices))
    gc.collect()
    gc.disable()
    try:
        for t, (j, v) in enumerate(zip(indices, values)):
            t0 = clock()
            fn(j, v)
            out[t] = clock() - t0
    finally:
        gc.enable()
    return out


# ---------------------------------------------------------------------------- data
def base_codebook() -> lwpd.Codebook:
    """PG(7, 3) with weight at most 2: 64 codewords per block of 8."""
    return projective_codebook(BLOCK, q=3, max_weight=2)


def tiled(n: int) -> lwpd.Codebook:
    return block_codebook(base_codebook(), Partition.uniform(n, BLOCK))


def received_subset(rng: np.random.Generator, n_codewords: int, fraction: float = RECEIVED) -> np.ndarray:
    """A random ``fraction`` of the codeword indices, in random (arrival) order."""
    return rng.permutation(n_codewords)[: int(round(fraction * n_codewords))]


class Received:
    """Received codewords of a uniform tiled codebook grouped by block (sorted)."""

    def __init__(self, indices: np.ndarray, values: np.ndarray, per_block: int, n_blocks: int) -> None:
        order = np.argsort(indices, kind="stable")
        self.indices = indices[order]
        self.values = values[order]
        self.block = self.indices // per_block
        self.local = self.indices % per_block
        counts = np.bincount(self.block, minlength=n_blocks)
        self.ptr = np.concatenate([[0], np.cumsum(counts)])
        self.max_rows = int(counts.max())

    def rows(self, blk: int) -> slice:
        return slice(self.ptr[blk], self.ptr[blk + 1])

    def padded(self, base: np.ndarray, blocks: slice) -> tuple[np.ndarray, np.ndarray]:
        """Stacked received matrices ``(nb, R, b)`` and values ``(nb, R)``, zero-padded."""
        lo, hi = blocks.start, blocks.stop
        sel = slice(self.ptr[lo], self.ptr[hi])
        blk = self.block[sel] - lo
        pos = np.arange(sel.start, sel.stop) - self.ptr[self.block[sel]]
        mats = np.zeros((hi - lo, self.max_rows, base.shape[1]))
        vals = np.zeros((hi - lo, self.max_rows))
        mats[blk, pos] = base[self.local[sel]]
        vals[blk, pos] = self.values[sel]
        return mats, vals


def batched_pinv(mats: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """What a vectorising user writes: ``pinv`` of every stacked block, applied to its values."""
    return (np.linalg.pinv(mats) @ vals[..., None])[..., 0]


# ---------------------------------------------------------------------------- encode
def bench_encode(cb: lwpd.Codebook, scipy_csr, dtype: np.dtype, rng: np.random.Generator, repeat: int,
                 notes: list[str]) -> list[Row]:
    n, n_codewords = cb.dim, len(cb)
    name = np.dtype(dtype).name
    g = rng.standard_normal(n).astype(dtype)
    csr = scipy_csr.astype(dtype, copy=False)
    dense_base = base_codebook().to_dense().astype(dtype)

    progress(f"encode {name}: lwpd")
    t_lwpd = median_time(lambda: cb.encode(g), repeat)
    progress(f"encode {name}: scipy.sparse")
    t_scipy = median_time(lambda: csr @ g, repeat)
    progress(f"encode {name}: dense NumPy per block")
    t_dense = median_time(lambda: (g.reshape(-1, BLOCK) @ dense_base.T).ravel(), repeat)

    buf = np.empty(n_codewords, dtype=dtype)
    progress(f"encode {name}: lwpd into a preallocated out=")
    t_stream, stream_label = median_time(lambda: cb.encode(g, out=buf), repeat), " (out=)"
    notes.append(f"encode {name}: encode(g) {t_lwpd * 1e3:.1f} ms, encode(g, out=preallocated) "
                 f"{t_stream * 1e3:.1f} ms (the bandwidth row uses out=, like the copy)")

    nbytes = g.itemsize * (n + n_codewords)
    src = np.ones((n + n_codewords) // 2, dtype=dtype)
    dst = np.zeros_like(src)
    progress(f"encode {name}: np.copyto of the same bytes")
    t_copy = median_time(lambda: np.copyto(dst, src), repeat)
    copy_bytes = src.nbytes + dst.nbytes

    ours = cb.encode(g)
    err_scipy = float(np.abs(ours - csr @ g).max())
    err_dense = float(np.abs(ours - (g.reshape(-1, BLOCK) @ dense_base.T).ravel()).max())
    notes.append(f"encode {name}: n={n:,}, N={n_codewords:,}; {nbytes / 1e6:.0f} MB moved (read g + write output); "
                 f"max |lwpd - scipy| = {err_scipy:.1e}, max |lwpd - dense| = {err_dense:.1e}")
    return [
        Row(f"encode {name} vs scipy.sparse CSR @ g", t_lwpd, t_scipy, "s", 3.0),
        Row(f"encode {name} vs dense NumPy per block", t_lwpd, t_dense, "s"),
        Row(f"encode {name}{stream_label} bandwidth vs np.copyto", nbytes / t_stream / 1e9, copy_bytes / t_copy / 1e9,
            "GB/s", 0.5),
    ]


# ---------------------------------------------------------------------------- decode
def bench_decode(sizes: Sizes, rng: np.random.Generator, notes: list[str]) -> list[Row]:
    n = sizes.n_decode
    cb = tiled(n)
    nb, per_block = cb.blocks.n_blocks, len(base_codebook())
    base = base_codebook().to_dense()
    g = rng.standard_normal(n)
    indices = received_subset(rng, len(cb))
    values = cb.encode(g)[indices]
    rec = Received(indices, values, per_block, nb)

    progress(f"decode n={n:,}: lwpd.decode")
    t_lwpd = median_time(lambda: decode(cb, indices, values), sizes.repeat)
    estimate = decode(cb, indices, values)

    loop_blocks = min(sizes.loop_blocks, nb)
    progress(f"decode: np.linalg.lstsq loop over {loop_blocks:,} blocks")
    per_block, loop_out = lstsq_loop(rec, base, np.arange(loop_blocks), sizes)
    t_loop = per_block * nb

    batched_blocks = min(sizes.batched_blocks, nb)
    mats, vals = rec.padded(base, slice(0, batched_blocks))
    progress(f"decode: batched np.linalg.pinv over {batched_blocks:,} blocks")
    t_batched = median_time(lambda: batched_pinv(mats, vals), max(3, sizes.repeat // 2)) / batched_blocks * nb
    del mats, vals

    progress("decode: reference projection (batched pinv over all blocks, untimed)")
    chunk = 20_000
    truth = np.concatenate([batched_pinv(*rec.padded(base, slice(lo, min(lo + chunk, nb)))).ravel()
                            for lo in range(0, nb, chunk)])
    deficient = int((np.abs(truth - g).reshape(nb, BLOCK).max(axis=1) > 1e-8).sum())
    notes.append(
        f"decode: n={n:,} ({nb:,} blocks of {BLOCK}, {len(cb):,} codewords, {len(indices):,} received = "
        f"{RECEIVED:.0%}, {rec.max_rows} rows max per block); max |lwpd - true projection| = "
        f"{np.abs(estimate - truth).max():.1e}, max |lwpd - lstsq loop| = "
        f"{np.abs(estimate[: loop_blocks * BLOCK] - loop_out.ravel()).max():.1e}; "
        f"{deficient} rank-deficient blocks"
    )
    threads = numba.get_num_threads()
    per_core = t_lwpd / nb * threads * 1e6
    notes.append(f"decode: distance to the floor: {t_lwpd / nb * 1e6:.2f} us per block on {threads} thread(s), "
                 f"{per_core:.2f} us of one core's time per block, {per_core / FLOOR_US_PER_BLOCK:.1f}x the floor of "
                 f"{FLOOR_US_PER_BLOCK} us (a block's arithmetic, about 2 kflop: fold, assemble, factor, solve)")
    # The memory floor: random-order arrivals must be grouped by codeword before any block can
    # be solved, a scatter bound by memory latency that the pre-grouped baselines never pay.
    counts, sums = np.zeros(len(cb), lwpd._config.DECODER_COUNT_DTYPE), np.zeros(len(cb))
    scatter = cpu_kernels.scatter_results.serial

    def scatter_alone() -> None:
        counts[:] = 0
        sums[:] = 0.0
        scatter(indices, values, counts, sums, 1)

    t_scatter = median_time(scatter_alone, sizes.repeat)
    del counts, sums
    notes.append(f"decode: the memory floor: one serial pass scattering the {len(indices):,} random-order arrivals "
                 f"into per-codeword counts and sums (and zeroing them) takes {t_scatter * 1e3:.1f} ms, "
                 f"{t_scatter / t_lwpd:.0%} of lwpd's decode; the 50x goal allows {t_loop / 50 * 1e3:.1f} ms for "
                 "everything, and the baselines are handed the arrivals already grouped by block (untimed)")
    notes.append(f"decode baselines timed on a subset and scaled per block to all {nb:,} blocks: lstsq loop on "
                 f"{loop_blocks:,} blocks, batched pinv on {batched_blocks:,} blocks (padded to {rec.max_rows} rows; "
                 "building the stack is not timed)")
    label = f"decode 70%, n={n:,},"
    return [
        Row(f"{label} vs lstsq loop per block*", t_lwpd, t_loop, "s", 50.0),
        Row(f"{label} vs batched pinv (padded)*", t_lwpd, t_batched, "s", 5.0),
        bench_partial_decode(sizes, cb, rec, base, truth, rng, notes),
    ]


def lstsq_loop(rec: Received, base: np.ndarray, blocks: np.ndarray, sizes: Sizes) -> tuple[float, np.ndarray]:
    """What a block-aware user writes: ``np.linalg.lstsq`` on each block's received rows.
    Returns the median seconds per block and the solutions (building the inputs is not timed)."""
    pairs = [(base[rec.local[rec.rows(b)]], rec.values[rec.rows(b)]) for b in blocks]
    out = np.empty((len(pairs), base.shape[1]))

    def loop() -> None:
        for i, (mat, val) in enumerate(pairs):
            out[i] = np.linalg.lstsq(mat, val, rcond=None)[0]

    return median_time(loop, max(3, sizes.repeat // 2)) / len(pairs), out


def bench_partial_decode(sizes: Sizes, cb: lwpd.Codebook, rec: Received, base: np.ndarray, truth: np.ndarray,
                         rng: np.random.Generator, notes: list[str]) -> Row:
    """Decode the arrivals of a few blocks (early in a step, an asynchronous fold-in): the
    cost must follow the blocks with arrivals, not the blocks in the codebook."""
    nb = cb.blocks.n_blocks
    few = np.sort(rng.choice(nb, max(1, int(round(SUBSET_BLOCKS * nb))), replace=False))
    keep = np.isin(rec.block, few)
    indices, values = rec.indices[keep], rec.values[keep]
    progress(f"decode: lwpd.decode of the arrivals in {few.size:,} of {nb:,} blocks")
    t_lwpd = median_time(lambda: decode(cb, indices, values), sizes.repeat)
    estimate = decode(cb, indices, values).reshape(nb, BLOCK)
    loop_blocks = few[: min(sizes.loop_blocks, few.size)]
    progress(f"decode: np.linalg.lstsq loop over {loop_blocks.size:,} of those blocks")
    t_loop = lstsq_loop(rec, base, loop_blocks, sizes)[0] * few.size
    others = np.setdiff1d(np.arange(nb), few)
    notes.append(
        f"decode {SUBSET_BLOCKS:.0%} of blocks: {indices.size:,} arrivals in {few.size:,} blocks; max |lwpd - true "
        f"projection| on them = {np.abs(estimate[few] - truth.reshape(nb, BLOCK)[few]).max():.1e}, largest entry "
        f"elsewhere = {np.abs(estimate[others]).max():.1e}; lstsq loop timed on {loop_blocks.size:,} of them, scaled"
    )
    return Row(f"decode {SUBSET_BLOCKS:.0%} of blocks, n={cb.dim:,}, vs lstsq loop on them*", t_lwpd, t_loop, "s", 50.0)


# ---------------------------------------------------------------------------- update
class BlockLstsqUser:
    """A block-aware user: keep each block's received rows, re-solve that block with lstsq."""

    def __init__(self, base: np.ndarray, n: int) -> None:
        self.base = base
        self.rows: dict[int, list[int]] = {}
        self.vals: dict[int, list[float]] = {}
        self.x = np.zeros(n)

    def update(self, j: int, v: float) -> None:
        blk, local = divmod(j, self.base.shape[0])
        rows = self.rows.setdefault(blk, [])
        vals = self.vals.setdefault(blk, [])
        rows.append(local)
        vals.append(v)
        b = self.base.shape[1]
        self.x[blk * b: (blk + 1) * b] = np.linalg.lstsq(self.base[rows], np.asarray(vals), rcond=None)[0]


class FullLstsqUser:
    """A naive user: keep every received row, re-solve the whole received set with lstsq."""

    def __init__(self, dense: np.ndarray) -> None:
        self.dense = dense
        self.rows: list[int] = []
        self.vals: list[float] = []
        self.x = np.zeros(dense.shape[1])

    def receive(self, j: int, v: float) -> None:
        self.rows.append(j)
        self.vals.append(v)

    def solve(self) -> None:
        self.x = np.linalg.lstsq(self.dense[self.rows], np.asarray(self.vals), rcond=None)[0]

    def update(self, j: int, v: float) -> None:
        self.receive(j, v)
        self.solve()


def arrivals(cb: lwpd.Codebook, rng: np.random.Generator, count: int) -> tuple[list[int], list[float]]:
    """``count`` distinct codewords in random order with exact values, as Python scalars
    (what a result handler receives from a worker)."""
    g = rng.standard_normal(cb.dim)
    idx = rng.permutation(len(cb))[:count]
    return idx.tolist(), cb.encode(g)[idx].tolist()


def warmed_decoder(cb: lwpd.Codebook) -> ProjectionDecoder:
    """A fresh decoder whose kernels have been compiled (one update, then reset)."""
    dec = ProjectionDecoder(cb)
    dec.update(0, 1.0)
    dec.update(np.array([0, 1]), np.array([1.0, 2.0]))
    dec.reset()
    return dec


def bench_update_single(sizes: Sizes, rng: np.random.Generator, notes: list[str]) -> tuple[Row, ProjectionDecoder, float]:
    """Single arrivals against a block-aware lstsq user; returns the row, the decoder and
    the single-call throughput (arrivals per second)."""
    cb = tiled(sizes.n_update)
    count = min(sizes.arrivals, len(cb))
    js, vs = arrivals(cb, rng, count)
    dec = warmed_decoder(cb)
    progress(f"update: {count:,} single arrivals, n={cb.dim:,} (lwpd)")
    t_lwpd = per_call_times(dec.update, js, vs)
    dense_base = base_codebook().to_dense()
    BlockLstsqUser(dense_base, cb.dim).update(js[0], vs[0])  # warm-up
    user = BlockLstsqUser(dense_base, cb.dim)
    progress(f"update: {count:,} single arrivals, n={cb.dim:,} (block-aware lstsq)")
    t_user = per_call_times(user.update, js, vs)
    notes.append(f"update(j, v) n={cb.dim:,}: {count:,} arrivals, lwpd median {np.median(t_lwpd) * 1e6:.2f} us "
                 f"(mean {t_lwpd.mean() * 1e6:.2f}, p99 {np.quantile(t_lwpd, 0.99) * 1e6:.2f}); "
                 f"max |lwpd - block lstsq| = {np.abs(dec.estimate() - user.x).max():.1e}; distance to the floor "
                 f"({FLOOR_US_PER_BLOCK} us: one block's solve): {np.median(t_lwpd) * 1e6 / FLOOR_US_PER_BLOCK:.1f}x, "
                 "the rest is the Python call and its dispatch into Numba")
    row = Row(f"update(j, v), n={cb.dim:,}, vs block-aware lstsq", float(np.median(t_lwpd)),
              float(np.median(t_user)), "s", 20.0)
    return row, dec, 1.0 / float(np.mean(t_lwpd))


def bench_update_naive(sizes: Sizes, rng: np.random.Generator, notes: list[str]) -> Row:
    """Single arrivals at a small ``n`` against re-solving the whole received set."""
    cb = tiled(sizes.n_naive)
    js, vs = arrivals(cb, rng, int(round(RECEIVED * len(cb))))
    dec = warmed_decoder(cb)
    progress(f"update: {len(js):,} single arrivals, n={cb.dim} (lwpd)")
    t_lwpd = per_call_times(dec.update, js, vs)
    dense = cb.to_dense()
    FullLstsqUser(dense).update(js[0], vs[0])  # warm-up
    naive = FullLstsqUser(dense)
    stride = max(1, len(js) // sizes.naive_samples)
    progress(f"update: full lstsq recompute, n={cb.dim}, timed at every {stride}th of {len(js):,} arrivals")
    t_naive = []
    for t, (j, v) in enumerate(zip(js, vs)):
        naive.receive(j, v)
        if t % stride == stride - 1 or t == len(js) - 1:
            t_naive.append(median_time(naive.solve, 1, warmup=False))
    notes.append(f"update(j, v) n={cb.dim}: {len(js):,} arrivals (70% of {len(cb):,} codewords); "
                 f"full recompute timed at {len(t_naive)} evenly spaced arrivals; "
                 f"max |lwpd - full lstsq| = {np.abs(dec.estimate() - naive.x).max():.1e}")
    return Row(f"update(j, v), n={cb.dim}, vs full lstsq recompute", float(np.median(t_lwpd)),
               float(np.median(t_naive)), "s", 20.0)


def bench_update_batch(sizes: Sizes, dec: ProjectionDecoder, single_rate: float, rng: np.random.Generator,
                       notes: list[str]) -> Row:
    """One ``update(indices, values)`` of a batch into a fresh decoder, in arrivals per second."""
    cb = dec.codebook
    batch = min(sizes.batch, len(cb))
    idx = rng.permutation(len(cb))[:batch]
    vals = cb.encode(rng.standard_normal(cb.dim))[idx]
    progress(f"update: batch of {batch:,} arrivals, n={cb.dim:,}")
    # the batch's blocks are solved when the estimate is read: time both
    t_batch = median_time(lambda: (dec.update(idx, vals), dec.estimate()), sizes.repeat, setup=dec.reset)
    dec.reset()
    dec.update(idx, vals)
    check = np.abs(dec.estimate() - decode(cb, idx, vals)).max()
    notes.append(f"update(indices, values): batch of {batch:,} on n={cb.dim:,}; baseline = single update(j, v) "
                 f"calls (1 / mean latency); max |batched - decode| = {check:.1e}")
    return Row(f"update(batch of {batch:,}) vs single update calls", batch / t_batch, single_rate, "arrivals/s")


def bench_update(sizes: Sizes, rng: np.random.Generator, notes: list[str]) -> list[Row]:
    single, dec, single_rate = bench_update_single(sizes, rng, notes)
    naive = bench_update_naive(sizes, rng, notes)
    batch = bench_update_batch(sizes, dec, single_rate, rng, notes)
    return [single, naive, batch]


# ---------------------------------------------------------------------------- machine facts
def bench_memory(n: int, rng: np.random.Generator) -> list[str]:
    """Peak memory a ProjectionDecoder allocates beyond the gradient estimate (``n`` float64),
    for ``n`` coordinates in blocks of 8 with 70% of the codewords received, measured with
    tracemalloc (NumPy reports its buffers to it); the caller's indices and values are not
    counted. Two codebooks: 16 codewords per block (the compressed base of the quick start)
    and 64 (the whole weight-2 projective base)."""
    import tracemalloc

    lines = []
    for per_block, base in ((16, lwpd.compress(base_codebook(), 16, criterion="logdet")), (64, base_codebook())):
        cb = block_codebook(base, Partition.uniform(n, BLOCK))
        idx = received_subset(rng, len(cb))
        vals = rng.standard_normal(idx.size)
        gc.collect()
        tracemalloc.start()
        dec = ProjectionDecoder(cb)
        dec.update(idx, vals)
        estimate = dec.estimate()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        beyond = peak - estimate.nbytes
        state = dec._state.counts.nbytes + dec._state.sums.nbytes
        lines.append(f"ProjectionDecoder, n = {n:,}, block 8, {per_block} codewords per block ({len(cb):,}), 70% received: "
                     f"peak {beyond / 2**30:.2f} GiB beyond the gradient ({state / 2**30:.2f} GiB of it the per-codeword "
                     f"counts and sums); goal <= 1 GB: {'met' if beyond <= 1e9 else 'missed'}")
        del dec, estimate, idx, vals, cb
        gc.collect()
    return lines


# ---------------------------------------------------------------------------- main
def run(sizes: Sizes, seed: int) -> tuple[list[Row], list[str]]:
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    rows: list[Row] = []

    cb = tiled(sizes.n_encode)
    progress(f"encode: materialising scipy.sparse CSR of {len(cb):,} codewords (untimed)")
    csr = cb.to_scipy()
    for dtype in (np.float64, np.float32):
        rows += bench_encode(cb, csr, dtype, rng, sizes.repeat, notes)
    notes.append(f"encode: the scipy matrix is cb.to_scipy() as returned ({csr.indices.dtype} indices); "
                 "encode(g), scipy and dense NumPy allocate their output on every call (included in their times); "
                 "np.copyto writes into a preallocated array")
    del cb, csr
    gc.collect()

    rows += bench_decode(sizes, rng, notes)
    rows += bench_update(sizes, rng, notes)
    progress(f"memory: a decoder for n = {sizes.n_memory:,}")
    notes += bench_memory(sizes.n_memory, rng)
    return rows, notes


def report(rows: Sequence[Row], notes: Sequence[str], facts: Sequence[tuple[str, str]], elapsed: float,
           sizes: Sizes, markdown_only: bool, busy_warning: str = "") -> str:
    width = max(len(k) for k, _ in facts)
    setup = (f"sizes: encode n={sizes.n_encode:,}, decode n={sizes.n_decode:,}, update n={sizes.n_update:,} "
             f"and n={sizes.n_naive}; median of {sizes.repeat} repetitions after a warm-up; "
             f"ratio > 1 means lwpd is faster; total run time {elapsed:.1f} s")
    if busy_warning:
        setup += "\n" + busy_warning
    marked = ["* " + note for note in notes]
    if markdown_only:
        return "\n".join(
            ["**Machine**", ""] + [f"- {k}: {v}" for k, v in facts] + ["", markdown_table(rows), ""]
            + [f"- {line}" for line in [setup] + list(notes)]
        )
    return "\n".join(
        ["lwpd kernel benchmarks", "=" * 22, ""] + [f"{k.ljust(width)} : {v}" for k, v in facts]
        + ["", text_table(rows), "", setup] + marked
        + ["", "Markdown", "--------", "", markdown_table(rows)]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions (seconds)")
    parser.add_argument("--markdown", action="store_true", help="print the machine facts and table as Markdown only")
    parser.add_argument("--repeat", type=int, default=None, help="timed repetitions per measurement (median)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random gradients and received sets")
    parser.add_argument("--json", default=None, help="also write every row and note to this file")
    parser.add_argument("--report-from", default=None, metavar="JSON", help="print the tables of a saved run")
    args = parser.parse_args(argv)
    if args.report_from:
        with open(args.report_from) as fh:
            saved = json.load(fh)
        fields = [f.name for f in dataclasses.fields(Row)]
        rows = [Row(**{k: r[k] for k in fields}) for r in saved["rows"]]
        print(report(rows, saved["notes"], [tuple(f) for f in saved["facts"]], saved["elapsed"], Sizes(**saved["sizes"]),
                     args.markdown, saved.get("busy", "")))
        return 0

    sizes = QUICK if args.quick else FULL
    if args.repeat is not None:
        if args.repeat < 1:
            parser.error("--repeat must be >= 1")
        sizes = dataclasses.replace(sizes, repeat=args.repeat)
    load_before = load_average()
    start = time.perf_counter()
    rows, notes = run(sizes, args.seed)
    elapsed = time.perf_counter() - start
    facts, busy = machine_facts(load_before), busy_warning(load_before)
    print(report(rows, notes, facts, elapsed, sizes, args.markdown, busy))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": [dict(dataclasses.asdict(r), ratio=r.ratio, met=r.met) for r in rows], "notes": notes,
                       "facts": facts, "elapsed": elapsed, "sizes": dataclasses.asdict(sizes), "busy": busy},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
