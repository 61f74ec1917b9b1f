"""Lagrange coded computing (Yu et al., AISTATS 2019) for least squares, as a scheme."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lwpd import _config
from lwpd import _lcc as lcc
from lwpd._validation import check_int
from lwpd.cost import gradient_ops
from lwpd.schemes._base import PerWorkerResults, Task


class LCC(PerWorkerResults):
    """Lagrange coded computing over the reals, for :class:`lwpd.problems.LeastSquares`.

    The samples are split into ``K`` blocks; worker ``i`` holds the Lagrange polynomial
    through the blocks evaluated at its Chebyshev point ``alpha_i`` and returns the degree-2
    computation ``X_i^T (X_i theta - y_i)`` on that coded data. Any ``2(K-1)+1`` results
    determine the polynomial ``f(u(z))``, whose values at the data points sum to the exact
    gradient; with fewer there is no estimate. Decoding over the reals loses accuracy as
    ``K`` grows and when the arrived workers' points cluster (the interpolation's condition
    number): a step whose estimated relative error (:func:`lwpd._lcc.decode_error_bound`)
    exceeds ``lwpd._config.LCC_MAX_ERROR`` has no estimate -- a step waiting "until ready"
    waits for more results, a deadline step is reported as not decodable (``lr`` nan) --
    rather than a wrong gradient. :attr:`error_bound` holds the last bound (for a step refused,
    it or a lower bound on it above the limit: :class:`lwpd._lcc.ErrorBoundScreen`).

    Parameters
    ----------
    K : int, default 2
        Number of data blocks (>= 1); needs ``n_workers >= 2(K-1)+1``. Each worker then
        processes ``m / K`` coded samples.

    Examples
    --------
    >>> from lwpd.schemes import LCC
    >>> LCC(3).threshold
    5
    """

    name = "lcc"
    exact_when_complete = True

    def __init__(self, K: int = 2) -> None:
        self.K = check_int("K", K, minimum=1)
        self.error_bound = math.inf  # of the last estimate (decode_error_bound)

    @property
    def threshold(self) -> int:
        """Results needed to decode: ``2(K-1)+1``."""
        return lcc.recovery_threshold(self.K)

    def _bind(self, rng: np.random.Generator) -> None:
        from lwpd.problems import LeastSquares

        if not isinstance(self.problem, LeastSquares):
            raise TypeError(f"LCC applies to LeastSquares problems only, got {type(self.problem).__name__}")
        # the coded blocks are [X 1 | y] with every sample weighing one (lcc.split_blocks)
        if self.problem.sample_weight is not None or not self.problem.fit_intercept:
            raise ValueError("LCC needs an unweighted LeastSquares problem with an intercept (no sample_weight, fit_intercept=True)")
        if self.threshold > self.n_workers:
            raise ValueError(
                f"LCC(K={self.K}) needs at least {self.threshold} workers (2(K-1)+1), got n_workers={self.n_workers}"
            )
        # the K blocks are cut from the rows in shard order (every row once, as the placement holds them)
        order = np.concatenate(self.shards_)
        X = self.problem.X[order]
        blocks = lcc.split_blocks(X, self.problem.y[order], self.K)
        self._betas, self._alphas = lcc.lcc_points(self.K, self.n_workers)
        self._coded = lcc.encode(blocks, self._betas, self._alphas)
        self._screen = lcc.ErrorBoundScreen(self._alphas, self.K)
        self._coded.flags.writeable = False  # shared data from now on (a Dask cluster scatters each block once)
        self._work = self._units(gradient_ops(blocks.shape[1], self.problem.n_params))
        self.begin()

    def tasks(self, theta: np.ndarray) -> list[Task]:
        self._theta = np.array(theta, dtype=float)
        n = self.problem.n_params
        return [Task(i, lcc.worker_result, (self._coded[i], self._theta), self._work, floats=n) for i in range(self.n_workers)]

    def estimate(self) -> np.ndarray | None:
        if self._estimate is not None and self._estimate[0] == len(self._results):
            self.error_bound = self._estimate[2]
            return self._estimate[1].copy()  # nothing arrived since (ready() decoded it; the step reads it)
        self.error_bound = math.inf
        if len(self._results) < self.threshold:
            return None
        arrived = np.fromiter(sorted(self._results), dtype=int)
        self.error_bound = self._screen.bound(arrived, _config.LCC_MAX_ERROR)
        if self.error_bound > _config.LCC_MAX_ERROR:
            return None  # clustered points: the interpolation would amplify rounding past the tolerance
        block_sum = self._screen.decode(np.stack([self._results[i] for i in arrived]), arrived, self._betas)
        estimate = lcc.full_gradient(block_sum, self._theta, self.problem.n_samples, self.problem.alpha)
        self._estimate = (len(self._results), estimate, self.error_bound)
        return estimate.copy()

    def begin(self) -> None:
        super().begin()
        self._estimate: tuple[int, np.ndarray, float] | None = None  # (results it used, the estimate, its bound)

    def fold(self, worker: int, result: Any) -> None:
        super().fold(worker, result)
        self._estimate = None

    def exact(self) -> bool:
        """Whenever it decodes (to the interpolation's ``_config.LCC_MAX_ERROR``)."""
        return self.estimate() is not None

    def __repr__(self) -> str:
        return f"LCC(K={self.K})"
