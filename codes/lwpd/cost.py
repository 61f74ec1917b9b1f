"""One cost model for every scheme: what a worker computes and what it sends.

Every task a scheme hands to a cluster carries two numbers, its **compute** (``Task.work``,
in units defined below) and the **floats** its result sends back (``Task.floats``). A
cluster turns them into time with one rule for every scheme::

    task time = delay[worker] * compute  +  latency + floats / bandwidth

``delay`` is the straggler model's cluster time per unit of compute for that worker and round
(:mod:`lwpd.stragglers`); ``latency`` and ``bandwidth`` (floats per unit of cluster time)
are the :class:`CostModel` of the cluster. ``CostModel()`` (``latency=0``,
``bandwidth=inf``) charges compute only. A worker runs its tasks one after another and does
not compute while it sends (conservative for schemes that stream several results a step).

Units of compute
----------------
Compute is counted in multiply-adds and reported in **units**: one unit is what an uncoded
worker does per step, the gradient of a linear model over its shard of ``m / N`` rows
(``m`` samples, ``N`` workers, ``n`` parameters, ``K`` outputs of ``n / K`` coordinates
each -- features plus intercept)::

    forward   scores z_i = W x_i + b for every row read:     rows * n
    backward  X^T R over the same rows:                      rows * n
    one unit  = gradient_ops(m / N, n) = 2 * (m / N) * n

The charges of each scheme, in multiply-adds (:func:`units` divides by one unit):

* **Data-parallel** (uncoded, ignore-stragglers, replication): a worker's shard gradient,
  :func:`gradient_ops` ``(rows, n) = 2 rows n``; it sends ``n`` floats.
* **Gradient coding** (fractional repetition, cyclic MDS, partial stragglers): for each
  partition it holds, that partition's gradient ``2 m_k n`` plus ``n`` to add it into the
  coded combination (:func:`coded_combination_ops`); it sends ``n`` floats per result.
* **LCC** for least squares: ``X~^T (X~ theta - y~)`` on its ``m / K`` coded rows,
  :func:`gradient_ops` ``(m / K, n)``; it sends ``n`` floats.
* **LWPD**, directional derivatives ``<grad f, v_j>`` for codewords touching ``t`` distinct
  coordinates with total weight ``w`` over the rows it reads (:func:`derivative_ops`):
  the forward pass ``rows * n`` (once per step, carried by the worker's first chunk),
  ``rows * t`` for the gradient entries at the touched coordinates (each is one column of
  ``X`` against the residuals), and ``w`` to combine them; it sends one float per codeword.
  With ``layout="full"`` a worker reads all ``m`` rows, so its forward pass alone is
  ``N / 2`` units; with ``layout="sharded"`` it reads its shard.
* **Moment-encoded least squares** (``layout="moments"``): once, before the first step, a
  worker forms the moments of its shard, the upper triangle of ``X~_w^T X~_w`` and
  ``X~_w^T y_w`` (:func:`moment_setup_ops` ``= rows (n (n + 1) / 2 + n)``); they travel
  there and back (the master sums them and returns the sums), ``2 (n (n + 1) / 2 + n)``
  floats. Per step a codeword costs one row of
  the moment matrix against ``theta`` per touched coordinate, :func:`moment_derivative_ops`
  ``= t n + w``, independent of ``m``.

Not charged, and the same for every scheme: the master's broadcast of ``theta``
(``n`` floats to every worker each step). The master's own work (folding, decoding) is
measured in wall-clock seconds and recorded per step in :attr:`lwpd.History.decode_time`.

Examples
--------
A worker that reads 100 rows of 20 features (least squares with an intercept: ``n = 21``)
and evaluates 3 codewords of weight 2 with disjoint supports (6 touched coordinates)
performs ``100 * 21 + 100 * 6 + 6 = 2706`` multiply-adds; on a problem with 1,000 samples
and 10 workers one unit is ``2 * 100 * 21 = 4200``, so the task is charged 0.644 units and
sends 3 floats:

>>> from lwpd.cost import CostModel, derivative_ops, units
>>> ops = derivative_ops(rows=100, n_params=21, touched=6, total_weight=6)
>>> ops, round(units(ops, n_samples=1000, n_workers=10, n_params=21), 3)
(2706.0, 0.644)
>>> CostModel(latency=0.5, bandwidth=21.0).communication(21)   # latency + floats / bandwidth
1.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lwpd import _config
from lwpd._validation import check_real

__all__ = [
    "CostModel",
    "coded_combination_ops",
    "chunk_supports",
    "codeword_support",
    "derivative_ops",
    "gradient_ops",
    "moment_derivative_ops",
    "moment_setup_ops",
    "unit_ops",
    "units",
]


@dataclass(frozen=True)
class CostModel:
    """Communication cost of a result: ``latency + floats / bandwidth`` (cluster time).

    Parameters
    ----------
    latency : float, default 0.0
        Time per result message, whatever its size (>= 0).
    bandwidth : float, default inf
        Floats per unit of cluster time (> 0). ``bandwidth = n_params`` makes sending a full
        gradient cost as much as one unit of compute at delay 1.

    Examples
    --------
    >>> CostModel().communication(10_000)     # compute only
    0.0
    >>> CostModel(latency=0.01, bandwidth=1e4).communication(5_000)
    0.51
    """

    latency: float = 0.0
    bandwidth: float = math.inf

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency", check_real("latency", self.latency, nonnegative=True))
        bandwidth = self.bandwidth
        if isinstance(bandwidth, (bool, np.bool_)) or not isinstance(bandwidth, (int, float, np.integer, np.floating)):
            raise TypeError(f"bandwidth must be a positive real number or inf, got {type(bandwidth).__name__} {bandwidth!r}")
        if not float(bandwidth) > 0:  # also refuses NaN
            raise ValueError(f"bandwidth must be > 0 (floats per unit of cluster time; inf for free), got {bandwidth}")
        object.__setattr__(self, "bandwidth", float(bandwidth))

    @property
    def compute_only(self) -> bool:
        """Whether communication is free (``latency == 0`` and ``bandwidth == inf``)."""
        return self.latency == 0.0 and math.isinf(self.bandwidth)

    def communication(self, floats: float) -> float:
        """Time to send one result of ``floats`` floats."""
        floats = check_real("floats", floats, nonnegative=True)
        if self.compute_only:
            return 0.0
        return self.latency + floats / self.bandwidth

    def task_time(self, delay: float, work: float, floats: float) -> float:
        """``delay * work + communication(floats)``; ``inf`` for a worker that never returns."""
        if math.isinf(delay):
            return math.inf
        return delay * work + self.communication(floats)


def unit_ops(n_samples: int, n_workers: int, n_params: int) -> float:
    """Multiply-adds in one unit of compute: an uncoded shard gradient, ``2 (m / N) n``."""
    return gradient_ops(n_samples / n_workers, n_params)


def units(ops: Any, n_samples: int, n_workers: int, n_params: int) -> Any:
    """``ops`` multiply-adds in units of compute (:func:`unit_ops`); a float, or an array
    for an array of ``ops``."""
    return _float_or_array(np.asarray(ops, dtype=float) / unit_ops(n_samples, n_workers, n_params))


def _float_or_array(value: np.ndarray) -> Any:
    """A 0-d result as a float, any other as the array (the charging rules take one chunk or many)."""
    return float(value) if value.ndim == 0 else value


def gradient_ops(rows: float, n_params: int) -> float:
    """A linear model's gradient over ``rows`` rows: forward and backward, ``2 rows n``."""
    return 2.0 * float(rows) * int(n_params)


def coded_combination_ops(partition_rows: Any, n_params: int) -> float:
    """A gradient-coding worker's result: each held partition's gradient, then the coded
    sum (``n`` multiply-adds per partition), ``sum_k (2 m_k n + n)``."""
    rows = np.asarray(partition_rows, dtype=float).reshape(-1)
    return float(sum(gradient_ops(r, n_params) + n_params for r in rows))


def derivative_ops(rows: Any, n_params: int, touched: Any, total_weight: Any, *, forward: Any = True) -> Any:
    """Directional derivatives over ``rows`` rows for codewords touching ``touched``
    distinct coordinates with total Hamming weight ``total_weight``: the forward pass
    ``rows n`` (when ``forward``), ``rows touched`` for the touched gradient entries and
    ``total_weight`` to combine them. Every argument but ``n_params`` may be an array (one
    entry per chunk; the result is then an array)."""
    rows = np.asarray(rows, dtype=float)
    ops = np.where(forward, rows * int(n_params), 0.0) + rows * np.asarray(touched, dtype=float)
    return _float_or_array(ops + np.asarray(total_weight, dtype=float))


def moment_setup_ops(rows: float, n_params: int) -> float:
    """Forming a shard's moments once: the upper triangle of ``X~^T X~`` and ``X~^T y``,
    ``rows (n (n + 1) / 2 + n)``."""
    n = int(n_params)
    return float(rows) * (n * (n + 1) / 2 + n)


def moment_derivative_ops(n_params: int, touched: Any, total_weight: Any) -> Any:
    """Directional derivatives from precomputed moments: one row of the moment matrix
    against ``theta`` per touched coordinate, ``touched n + total_weight`` (arrays: one
    entry per chunk)."""
    return _float_or_array(np.asarray(touched, dtype=float) * int(n_params) + np.asarray(total_weight, dtype=float))


def codeword_support(codebook: Any, indices: Any) -> tuple[int, float]:
    """``(distinct coordinates touched, total weight)`` of the codewords ``indices``."""
    touched, weight = chunk_supports(codebook, [indices])
    return int(touched[0]), float(weight[0])


def chunk_supports(codebook: Any, chunks: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`codeword_support` of every chunk (a sequence of index arrays) in one pass:
    ``(distinct coordinates touched, total weight)`` per chunk."""
    chunks = [np.asarray(chunk, dtype=np.int64).reshape(-1) for chunk in chunks]
    sizes = np.array([chunk.size for chunk in chunks], dtype=np.int64)
    slot, coords, _ = codebook.internals.csr().selected_entries(np.concatenate(chunks) if chunks else np.zeros(0, np.int64))
    chunk_of = np.repeat(np.arange(len(chunks)), sizes)[slot]
    weight = np.bincount(chunk_of, minlength=len(chunks)).astype(float)
    pairs = chunk_of * np.int64(codebook.dim) + coords  # (chunk, coordinate), repeats where codewords overlap
    if len(chunks) * codebook.dim <= _config.SUPPORT_BITMAP_MAX_ENTRIES:
        marked = np.zeros(len(chunks) * codebook.dim, dtype=bool)
        marked[pairs] = True
        touched = np.count_nonzero(marked.reshape(len(chunks), codebook.dim), axis=1)
    else:
        touched = np.bincount(np.unique(pairs) // codebook.dim, minlength=len(chunks))
    return touched, weight
