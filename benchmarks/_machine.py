"""Facts about the machine a benchmark ran on (private helper of the benchmark scripts).

Shared by ``bench_kernels.py`` (its header) and the one-report runner
(``python -m benchmarks``), so that every report names the CPU, the BLAS and its threads,
Numba's threads and threading layer, the versions and the load in the same words.
"""

from __future__ import annotations

import os
import platform

import numba
import numpy as np
import scipy

import lwpd

#: Environment variables that change how many threads the numeric libraries use.
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> str:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def blas_info() -> list[str]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
        if libs:
            return [f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture', '?')}, "
                    f"{lib.get('num_threads')} threads, {lib.get('threading_layer', '?')}) {lib.get('filepath')}"
                    for lib in libs]
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [f"{blas.get('name')} {blas.get('version')} (from np.show_config; threadpoolctl unavailable)"]
    except Exception:  # older NumPy: no dict mode
        return ["unknown (threadpoolctl unavailable)"]


def load_average() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "unknown"


def busy_warning(load: str) -> str:
    """A warning when other work was running before the benchmark (1-minute load >= 1)."""
    try:
        one_minute = float(load.split()[0])
    except (ValueError, IndexError):
        return ""
    if one_minute < 1.0:
        return ""
    return (f"WARNING: the machine was busy before the run (1-minute load average {one_minute:.2f} on "
            f"{os.cpu_count()} CPUs): absolute times and ratios are noisy")


def _optional_version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or broken: the report says so instead of failing
        return "not installed"


def machine_facts(load_before: str, optional: bool = False) -> list[tuple[str, str]]:
    """``(name, value)`` pairs; ``optional`` adds memory and the torch and Dask versions."""
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    env = [f"{k}={os.environ[k]}" for k in ENV_VARS if k in os.environ]
    facts = [
        ("CPU", f"{cpu_model()}, {os.cpu_count()} logical CPUs"),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()}, {platform.system()})"),
        ("NumPy", np.__version__),
        ("BLAS", "; ".join(blas_info())),
        ("SciPy", scipy.__version__),
        ("Numba", f"{numba.__version__}, get_num_threads() = {numba.get_num_threads()}, threading layer {layer}"),
        ("lwpd", lwpd.__version__),
    ]
    if optional:
        facts[1:1] = [("memory", memory_gib())]
        facts += [("torch", _optional_version("torch")), ("Dask distributed", _optional_version("distributed"))]
    facts += [
        ("environment", ", ".join(env) if env else f"none of {', '.join(ENV_VARS)} set"),
        ("load average (1/5/15 min)", f"{load_before} before, {load_average()} after"),
    ]
    return facts
