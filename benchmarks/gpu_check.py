"""GPU check for lwpd's CUDA backend: verify every kernel family, then time the large cases.

Run on a machine with an NVIDIA GPU (one command, a few minutes on an H200)::

    python benchmarks/gpu_check.py            # full sizes: n up to 1e8, blocks of 8 and 16
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_check.py --quick   # rehearsal without a GPU

Part 1 checks each CUDA kernel family against the CPU kernels on a medium problem: encode (the
shared-memory tiled path and the CSR path), batched projection decode, fold-in of several
batches of device-resident arrivals, and peeling; and, if CuPy or torch is installed, the
zero-copy ``__cuda_array_interface__`` path. Part 2 times encode and the batched decode with
CUDA events (compilation excluded by a warm-up launch) and prints throughput as a fraction of
the device-to-device copy bandwidth measured in the same run, and the decode speed-up over the
CPU kernel on the same problem. Goals: encode >= 60% and decode >= 30% of copy bandwidth;
decode >= 20x the CPU kernel. Every part is guarded: a failure is printed and the rest runs.
It needs only lwpd's own dependencies (numpy, scipy, numba).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

import lwpd  # noqa: E402
from lwpd import _config  # noqa: E402

from numba import cuda, uint64  # noqa: E402  (after lwpd: NUMBA_ENABLE_CUDASIM is read at import)

RESULTS: list[tuple[str, str]] = []
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def goal(met: bool, value: str) -> str:
    if SIMULATED:
        return "n/a (simulator timings)"
    return "met" if met else f"missed ({value})"


def guarded(title):
    """Run a section; print its failure and carry on with the next."""

    def wrap(fn):
        def run(*args, **kwargs):
            print(f"\n== {title}", flush=True)
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # report and continue: the script must always finish
                traceback.print_exc(limit=3)
                RESULTS.append((title, f"FAILED: {type(exc).__name__}: {exc}"))
                return None

        return run

    return wrap


def codebook(n: int, block: int) -> lwpd.Codebook:
    return lwpd.block_codebook(lwpd.projective_codebook(block, max_weight=2), lwpd.Partition.uniform(n, block))


def check(name: str, got, want, rtol: float) -> None:
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want)) / (1.0 + np.abs(np.asarray(want)))))
    status = "ok" if err <= rtol else "MISMATCH"
    print(f"  {name:<52} max rel err {err:.2e}  {status}")
    RESULTS.append((name, status))


def event_time(fn, repeat: int) -> float:
    """Median seconds of ``fn`` between CUDA events, after one warm-up call (compilation)."""
    fn()
    cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)  # milliseconds
    return max(float(np.median(times)), 1e-9)  # the simulator reports 0


@cuda.jit
def _fill_received(encoded, fraction, counts, sums):
    """Deterministic pseudo-random 70%-style received set on the device (splitmix64 hash)."""
    for j in range(cuda.grid(1), counts.shape[0], cuda.gridsize(1)):
        z = uint64(j) * uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
        z = z ^ (z >> uint64(31))
        if (z >> uint64(11)) * (1.0 / 9007199254740992.0) < fraction:
            counts[j] = 1
            sums[j] = encoded[j]
        else:
            counts[j] = 0
            sums[j] = 0.0


@guarded("environment")
def environment() -> None:
    print(f"  numba {__import__('numba').__version__}, numpy {np.__version__}, lwpd {lwpd.__version__}")
    if SIMULATED:
        print("  CUDA simulator (no GPU): correctness rehearsal only, timings meaningless")
        return
    dev = cuda.get_current_device()
    free, total = cuda.current_context().get_memory_info()
    print(f"  device {dev.name.decode() if isinstance(dev.name, bytes) else dev.name}, "
          f"compute capability {dev.compute_capability}, memory {total / 2**30:.1f} GiB ({free / 2**30:.1f} free)")


@guarded("part 1: each CUDA kernel against the CPU kernels")
def verify(n: int) -> None:
    rng = np.random.default_rng(0)
    for block in (8, 16):
        cb = codebook(n + 3, block)  # a short last block exercises the CSR path too
        g = rng.standard_normal(cb.dim)
        for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-4)):
            check(f"encode b={block} {np.dtype(dtype).name}", cb.encode(g.astype(dtype), backend="cuda"),
                  cb.encode(g.astype(dtype)), rtol)
        r = cb.encode(g)
        received = np.flatnonzero(rng.random(len(cb)) < 0.7)
        check(f"batched projection decode b={block}", lwpd.decode(cb, received, r[received], backend="cuda"),
              lwpd.decode(cb, received, r[received]), 1e-9)
        dec = lwpd.ProjectionDecoder(cb, backend="cuda")
        for part in np.array_split(rng.permutation(received), 4):  # device-resident batches
            dec.update(cuda.to_device(part), cuda.to_device(r[part]))
        check(f"fold-in of 4 device batches b={block}", dec.estimate().copy_to_host(),
              lwpd.decode(cb, received, r[received]), 1e-9)
        check(f"peeling b={block}", lwpd.decode(cb, received, r[received], method="peeling", backend="cuda"),
              lwpd.decode(cb, received, r[received], method="peeling"), 1e-9)
    cb = codebook(n, 8)
    g = rng.standard_normal(cb.dim)
    for name in ("cupy", "torch"):
        try:
            mod = __import__(name)
        except ImportError:
            print(f"  {name} not installed: __cuda_array_interface__ check skipped")
            continue
        if name == "torch" and not mod.cuda.is_available():  # a CPU-only build, or the simulator
            print("  torch has no CUDA device here: __cuda_array_interface__ check skipped")
            continue
        dev_g = mod.asarray(g) if name == "cupy" else mod.as_tensor(g, device="cuda")
        out = cb.encode(dev_g, backend="cuda")
        check(f"encode of a {name} array (zero-copy input)", out.copy_to_host(), cb.encode(g), 1e-12)


@guarded("part 2: throughput against the device-to-device copy bandwidth")
def timing(sizes: list[int], cpu_n: int, repeat: int) -> None:
    rows = []
    big = max(sizes)
    src = cuda.device_array(min(2 * big, 1 << 28), dtype=np.float64)  # up to 2 GiB each way
    dst = cuda.device_array_like(src)
    t_copy = event_time(lambda: dst.copy_to_device(src), repeat)
    copy_bw = 2 * src.nbytes / t_copy
    print(f"  device-to-device copy: {copy_bw / 1e9:.0f} GB/s ({src.nbytes / 1e9:.1f} GB each way)")
    from lwpd._backend import launch
    from lwpd.decoders._device import DeviceProjectionState

    for block in (8, 16):
        for n in sizes:
            cb = codebook(n, block)
            N = len(cb)
            g = cuda.to_device(np.random.default_rng(1).standard_normal(n))
            out = cuda.device_array(N)
            t_enc = event_time(lambda: cb.encode(g, out=out, backend="cuda"), repeat)
            enc_bw = 8 * (n + N) / t_enc
            state = DeviceProjectionState(cb)
            blocks, threads = launch(N)
            with np.errstate(over="ignore"):  # the hash wraps around on purpose (simulator: numpy scalars)
                _fill_received[blocks, threads](out, 0.7, state.counts, state.sums)

            def solve_all():
                state.dirty.copy_to_device(np.ones(cb.blocks.n_blocks, dtype=np.int8))
                state.solve_dirty()

            t_dec = event_time(solve_all, repeat)
            dec_bw = (16 * N + 8 * n) / t_dec  # read counts and sums, write the estimate
            rows.append((block, n, t_enc, enc_bw / copy_bw, t_dec, dec_bw / copy_bw))
            del state, g, out
    print(f"  {'block':>5} {'n':>12} {'encode':>10} {'of copy':>8} {'decode':>10} {'of copy':>8}")
    for block, n, te, fe, td, fd in rows:
        print(f"  {block:>5} {n:>12,} {te * 1e3:>8.2f}ms {fe:>7.0%} {td * 1e3:>8.2f}ms {fd:>7.0%}")
        RESULTS.append((f"encode b={block} n={n:,} >= 60% of copy", goal(fe >= 0.6, f"{fe:.0%}")))
        RESULTS.append((f"decode b={block} n={n:,} >= 30% of copy", goal(fd >= 0.3, f"{fd:.0%}")))

    cb = codebook(cpu_n, 8)
    rng = np.random.default_rng(2)
    r = cb.encode(rng.standard_normal(cpu_n))
    received = np.flatnonzero(rng.random(len(cb)) < 0.7)
    vals = r[received]
    lwpd.decode(cb, received, vals)
    t0 = time.perf_counter()
    lwpd.decode(cb, received, vals)
    t_cpu = time.perf_counter() - t0
    d_idx, d_vals = cuda.to_device(received), cuda.to_device(vals)
    t_gpu = event_time(lambda: lwpd.decode(cb, d_idx, d_vals, backend="cuda"), repeat)
    print(f"  decode n={cpu_n:,}, 70% received, from device arrays: GPU {t_gpu * 1e3:.1f} ms, "
          f"CPU kernel {t_cpu * 1e3:.1f} ms ({__import__('numba').get_num_threads()} threads): {t_cpu / t_gpu:.1f}x")
    RESULTS.append((f"decode >= 20x the CPU kernel (n={cpu_n:,})", goal(t_cpu / t_gpu >= 20, f"{t_cpu / t_gpu:.1f}x")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the CUDA simulator)")
    args = parser.parse_args()
    if args.quick:
        _config.CUDA_THREADS_PER_BLOCK, _config.CUDA_MAX_BLOCKS = 32, 2
    started = time.perf_counter()
    environment()
    verify(64 if args.quick else 1 << 16)
    if args.quick:
        timing([64], cpu_n=64, repeat=1)
    else:
        timing([10_000_000, 100_000_000], cpu_n=10_000_000, repeat=5)
    print("\n== summary")
    for name, status in RESULTS:
        print(f"  {name:<56} {status}")
    print(f"  total {time.perf_counter() - started:.0f} s")
    return 0 if all(not s.startswith(("FAILED", "MISMATCH")) for _, s in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
