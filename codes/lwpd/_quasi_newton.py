"""Limited-memory BFGS steps on decoded gradients (``lwpd.train(acceleration="lbfgs")``).

A step takes the quasi-Newton direction only with an exact gradient (the scheme says every
piece of it was recovered, :meth:`lwpd.schemes.Scheme.exact`), and a curvature pair
``(s, y)`` is formed only from the last two exact gradients (at whatever iterates they were
taken: any two points give a valid secant pair, ``y = (mean Hessian along s) s``): a
partially decoded gradient never enters the memory. The step length comes from a backtracking
(Armijo) search on the loss the master evaluates after every step anyway, so a trial that
is accepted costs no extra pass over the data.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from lwpd import _config


class LbfgsMemory:
    """The last ``size`` curvature pairs and the two-loop product with the inverse Hessian
    estimate (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithm 7.4, with
    ``H_0 = (s^T y / y^T y) I`` from the newest pair)."""

    def __init__(self, size: int = _config.LBFGS_MEMORY) -> None:
        self.pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=size)  # (s, y, 1 / s^T y)
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (point, exact gradient there)

    def observe(self, point: np.ndarray, gradient: np.ndarray) -> None:
        """The exact gradient at ``point``. With the last one observed, the pair ``(point -
        last point, gradient - last gradient)`` is kept when it has positive curvature
        (``s^T y > eps y^T y``, the test of L-BFGS-B)."""
        if self._last is not None:
            s, y = point - self._last[0], gradient - self._last[1]
            sy = float(s @ y)
            if sy > np.finfo(float).eps * float(y @ y):
                self.pairs.append((s, y, 1.0 / sy))
        self._last = (point.copy(), gradient.copy())

    def clear(self) -> None:
        self.pairs.clear()
        self._last = None

    def direction(self, gradient: np.ndarray) -> np.ndarray:
        """``-H g``: the quasi-Newton direction (``-g`` with no pair yet)."""
        q = np.array(gradient, dtype=float)
        if not self.pairs:
            return -q
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * float(s @ q)
            q -= a * y
            alphas.append(a)
        s, y, rho = self.pairs[-1]
        q *= 1.0 / (rho * float(y @ y))  # H_0 = (s^T y / y^T y) I
        for (s, y, rho), a in zip(self.pairs, reversed(alphas)):
            q += (a - rho * float(y @ q)) * s
        return -q


def backtrack(loss_at: Callable[[float], float], loss0: float, slope: float, step: float) -> tuple[float, float] | None:
    """The first step length ``t = step, ...`` (shrunk by safeguarded quadratic
    interpolation) with sufficient decrease ``loss_at(t) <= loss0 + c1 t slope``, and the loss
    there; ``None`` after ``_config.LINE_SEARCH_MAX_TRIALS`` trials. ``slope < 0`` is the
    directional derivative at ``t = 0``.

    Near a minimum the predicted decrease ``-t slope`` falls below the rounding of the loss,
    which can then no longer rank the points: a trial whose loss is within that rounding of
    ``loss0`` is accepted on the strength of the model (otherwise the search would fail on
    rounding noise exactly where the quasi-Newton step is best)."""
    rounding = _config.LINE_SEARCH_ROUNDING_ULPS * np.finfo(float).eps * max(abs(loss0), np.finfo(float).tiny)
    for _ in range(_config.LINE_SEARCH_MAX_TRIALS):
        value = loss_at(step)
        decrease = -step * slope
        if value <= loss0 - _config.ARMIJO_C1 * decrease or (decrease <= rounding and value <= loss0 + rounding):
            return step, value
        # minimiser of the quadratic through loss0, slope and value, kept within [0.1, 0.5] of the step
        excess = value - loss0 - step * slope
        trial = -slope * step * step / (2.0 * excess) if excess > 0 and np.isfinite(value) else 0.5 * step
        step = min(max(trial, 0.1 * step), 0.5 * step)
    return None
