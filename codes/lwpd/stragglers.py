"""Straggler (delay) models for simulated and real clusters.

A delay model says how slow each worker is in one round of tasks. Every model is a class
with the same small interface:

``sample(n_workers, rng) -> numpy.ndarray``
    A float64 array of shape ``(n_workers,)``: worker ``i``'s delay in seconds **per unit
    of work** for this round. ``numpy.inf`` means worker ``i`` never returns (a failure).
    The result depends only on the model's state and on ``rng`` -- the same model state and
    an identically seeded generator give identical delays.
``reset()``
    Forget any persistent state (the persistent slow set of :class:`SlowWorkers`, the
    Markov states of :class:`MarkovBursty`, the replay position of :class:`Trace`), so the
    next ``sample`` starts afresh.
``mean()``
    The expected per-unit delay of one worker in one round (in the long run for the
    stateful models), ``numpy.inf`` where it is infinite (failures, heavy tails).

Cost model
----------
The cluster turns a delay into a completion time by scaling it with the compute of the
task and adding the communication of its result (:mod:`lwpd.cost` states and derives every
scheme's charge):

.. code-block:: text

    completion_time = delay[worker] * work + latency + floats / bandwidth

where *work* is in units of one uncoded shard gradient (forward and backward pass over
``m / N`` rows), so a worker with delay ``2.0`` takes ``2.0 * 1.5 = 3`` seconds of compute
for a task of 1.5 units, and a worker with delay ``inf`` never finishes it. One delay is
drawn per worker per round (one ``sample`` call); all tasks a worker runs in that round
share its delay.

Models
------
:class:`NoDelay`, :class:`ShiftedExponential`, :class:`Exponential`, :class:`Pareto`,
:class:`Bernoulli` (failures), :class:`SlowWorkers` (a persistent slow set),
:class:`MarkovBursty` (per-worker two-state Markov chains) and :class:`Trace` (replay of
measured times).

Examples
--------
>>> import numpy as np
>>> from lwpd.stragglers import ShiftedExponential
>>> model = ShiftedExponential(shift=1.0, rate=2.0)
>>> delays = model.sample(4, np.random.default_rng(0))
>>> delays.shape, bool((delays >= 1.0).all())
((4,), True)
>>> model.mean()
1.5
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from lwpd._validation import as_rng, check_fraction, check_int, check_real

__all__ = [
    "DelayModel",
    "NoDelay",
    "ShiftedExponential",
    "Exponential",
    "Pareto",
    "Bernoulli",
    "SlowWorkers",
    "MarkovBursty",
    "Trace",
]


def _check_slowdown(value: Any) -> float:
    s = check_real("slowdown", value)
    if s < 1.0:
        raise ValueError(f"slowdown must be >= 1 (a multiplier of the base delay), got {s}")
    return s


def _fmt(value: float) -> str:
    return repr(float(value))


class DelayModel(ABC):
    """Base class of the delay models: per-worker, per-unit-of-work delays for one round.

    Subclasses implement :meth:`_draw` (and :meth:`reset` / :meth:`mean` where they differ
    from the defaults); :meth:`sample` validates its arguments and the output.
    """

    def sample(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        """Draw one round of per-worker delays.

        Parameters
        ----------
        n_workers : int
            Number of workers (``>= 1``).
        rng : numpy.random.Generator
            Source of randomness (an int seed is also accepted and turned into a fresh
            Generator). The same model state and an identically seeded generator give the
            same delays.

        Returns
        -------
        numpy.ndarray
            float64 array of shape ``(n_workers,)``: delay in seconds per unit of work,
            ``numpy.inf`` for a worker that never returns.
        """
        n = check_int("n_workers", n_workers, minimum=1)
        gen = as_rng("rng", rng)
        out = np.asarray(self._draw(n, gen), dtype=np.float64)
        if out.shape != (n,):  # pragma: no cover - guards subclass bugs
            raise RuntimeError(f"{type(self).__name__} produced shape {out.shape}, expected ({n},)")
        return out

    @abstractmethod
    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        """Delays for ``n_workers`` workers (arguments already validated)."""

    def reset(self) -> None:
        """Clear any persistent state; stateless models do nothing."""

    @abstractmethod
    def mean(self) -> float:
        """Expected per-unit delay of one worker in one round (``inf`` if infinite)."""


class NoDelay(DelayModel):
    """Every worker takes exactly one second per unit of work, every round.

    Handy as a default: completion time equals the task's work.

    Examples
    --------
    >>> import numpy as np
    >>> NoDelay().sample(3, np.random.default_rng(0))
    array([1., 1., 1.])
    >>> NoDelay().mean()
    1.0
    """

    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        return np.ones(n_workers, dtype=np.float64)

    def mean(self) -> float:
        """Always ``1.0``."""
        return 1.0

    def __repr__(self) -> str:
        return "NoDelay()"


class ShiftedExponential(DelayModel):
    """Delay ``shift + Exp(rate)``, independent across workers and rounds.

    The classical straggler model (Lee et al. 2018): a deterministic minimum time plus an
    exponential tail.

    Parameters
    ----------
    shift : float
        Minimum delay, ``>= 0``.
    rate : float
        Rate of the exponential tail, ``> 0`` (its mean is ``1 / rate``).

    Examples
    --------
    >>> import numpy as np
    >>> model = ShiftedExponential(shift=1.0, rate=0.5)
    >>> model
    ShiftedExponential(shift=1.0, rate=0.5)
    >>> model.mean()
    3.0
    >>> bool((model.sample(5, np.random.default_rng(1)) >= 1.0).all())
    True
    """

    def __init__(self, shift: float = 1.0, rate: float = 1.0) -> None:
        self.shift = check_real("shift", shift, nonnegative=True)
        self.rate = check_real("rate", rate, positive=True)

    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        return self.shift + rng.exponential(1.0 / self.rate, size=n_workers)

    def mean(self) -> float:
        """``shift + 1 / rate``."""
        return self.shift + 1.0 / self.rate

    def __repr__(self) -> str:
        return f"ShiftedExponential(shift={_fmt(self.shift)}, rate={_fmt(self.rate)})"


class Exponential(DelayModel):
    """Exponentially distributed delay with the given mean, independent across workers.

    Parameters
    ----------
    mean : float
        Mean delay, ``> 0``.

    Examples
    --------
    >>> import numpy as np
    >>> model = Exponential(mean=2.0)
    >>> model.mean()
    2.0
    >>> model.sample(3, np.random.default_rng(0)).shape
    (3,)
    """

    def __init__(self, mean: float = 1.0) -> None:
        self._mean = check_real("mean", mean, positive=True)

    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        return rng.exponential(self._mean, size=n_workers)

    def mean(self) -> float:
        """The ``mean`` parameter."""
        return self._mean

    def __repr__(self) -> str:
        return f"Exponential(mean={_fmt(self._mean)})"


class Pareto(DelayModel):
    """Heavy-tailed delay: classical Pareto with minimum ``scale`` and tail index ``alpha``.

    A draw is ``scale * (1 + L)`` with ``L`` Lomax(``alpha``) (``numpy`` 's
    ``Generator.pareto``), so ``P(delay > t) = (scale / t) ** alpha`` for ``t >= scale``.

    Parameters
    ----------
    alpha : float
        Tail index, ``> 0``; the mean is finite only for ``alpha > 1``, the variance only
        for ``alpha > 2``.
    scale : float
        Minimum delay, ``> 0``.

    Examples
    --------
    >>> import numpy as np
    >>> Pareto(alpha=1.5, scale=1.0).mean()
    3.0
    >>> Pareto(alpha=1.0, scale=1.0).mean()
    inf
    >>> bool((Pareto(2.0, 0.5).sample(4, np.random.default_rng(0)) >= 0.5).all())
    True
    """

    def __init__(self, alpha: float = 1.5, scale: float = 1.0) -> None:
        self.alpha = check_real("alpha", alpha, positive=True)
        self.scale = check_real("scale", scale, positive=True)

    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        return self.scale * (1.0 + rng.pareto(self.alpha, size=n_workers))

    def mean(self) -> float:
        """``alpha * scale / (alpha - 1)`` for ``alpha > 1``, else ``inf``."""
        if self.alpha <= 1.0:
            return float("inf")
        return self.alpha * self.scale / (self.alpha - 1.0)

    def __repr__(self) -> str:
        return f"Pareto(alpha={_fmt(self.alpha)}, scale={_fmt(self.scale)})"


class Bernoulli(DelayModel):
    """Independent failures: each worker, each round, never returns with probability ``p_fail``.

    A worker that does not fail takes ``base`` seconds per unit of work.

    Parameters
    ----------
    p_fail : float
        Failure probability in ``[0, 1]``.
    base : float, default 1.0
        Delay of a worker that does not fail, ``> 0``.

    Examples
    --------
    >>> import numpy as np
    >>> Bernoulli(0.0, base=2.0).sample(3, np.random.default_rng(0))
    array([2., 2., 2.])
    >>> Bernoulli(1.0).sample(2, np.random.default_rng(0))
    array([inf, inf])
    >>> Bernoulli(0.1).mean()
    inf
    """

    def __init__(self, p_fail: float, base: float = 1.0) -> None:
        self.p_fail = check_fraction("p_fail", p_fail, zero=True)
        self.base = check_real("base", base, positive=True)

    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        failed = rng.random(n_workers) < self.p_fail
        return np.where(failed, np.inf, self.base)

    def mean(self) -> float:
        """``base`` when ``p_fail == 0``, else ``inf`` (a failure has infinite delay)."""
        return self.base if self.p_fail == 0.0 else float("inf")

    def __repr__(self) -> str:
        return f"Bernoulli(p_fail={_fmt(self.p_fail)}, base={_fmt(self.base)})"


class SlowWorkers(DelayModel):
    """A persistent set of slow workers: ``round(fraction * n_workers)`` of them are slowed down.

    On the first call to :meth:`sample` (and after :meth:`reset`, or when ``n_workers``
    changes) the slow set is drawn uniformly at random with the given ``rng``; it is then
    kept across calls, which consume no randomness. Slow workers take ``base * slowdown``,
    the others ``base``. (``round`` is Python's, i.e. half to even.)

    Parameters
    ----------
    fraction : float
        Fraction of slow workers, in ``[0, 1]``.
    slowdown : float
        Multiplier of the base delay for slow workers, ``>= 1``.
    base : float, default 1.0
        Delay of a normal worker, ``> 0``.

    Attributes
    ----------
    slow : numpy.ndarray or None
        Sorted indices of the current slow workers (``None`` before the first call).

    Examples
    --------
    >>> import numpy as np
    >>> model = SlowWorkers(fraction=0.25, slowdown=10.0)
    >>> rng = np.random.default_rng(0)
    >>> first = model.sample(8, rng)
    >>> int((first == 10.0).sum())
    2
    >>> bool((model.sample(8, rng) == first).all())
    True
    >>> model.mean()
    3.25
    """

    def __init__(self, fraction: float, slowdown: float, base: float = 1.0) -> None:
        self.fraction = check_fraction("fraction", fraction, zero=True)
        self.slowdown = _check_slowdown(slowdown)
        self.base = check_real("base", base, positive=True)
        self.slow: np.ndarray | None = None
        self._n: int | None = None

    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        if self.slow is None or self._n != n_workers:
            n_slow = int(round(self.fraction * n_workers))
            self.slow = np.sort(rng.choice(n_workers, size=n_slow, replace=False)).astype(np.int64)
            self._n = n_workers
        out = np.full(n_workers, self.base, dtype=np.float64)
        out[self.slow] = self.base * self.slowdown
        return out

    def reset(self) -> None:
        """Forget the slow set; the next :meth:`sample` draws a new one."""
        self.slow = None
        self._n = None

    def mean(self, n_workers: int | None = None) -> float:
        """Average per-unit delay over the workers.

        Parameters
        ----------
        n_workers : int, optional
            With ``n_workers``, the exact average ``base * (1 + k / n * (slowdown - 1))`` for
            ``k = round(fraction * n)`` slow workers; without it, the limit
            ``base * (1 + fraction * (slowdown - 1))``.
        """
        if n_workers is None:
            share = self.fraction
        else:
            n = check_int("n_workers", n_workers, minimum=1)
            share = int(round(self.fraction * n)) / n
        return self.base * (1.0 + share * (self.slowdown - 1.0))

    def __repr__(self) -> str:
        return (
            f"SlowWorkers(fraction={_fmt(self.fraction)}, slowdown={_fmt(self.slowdown)}, "
            f"base={_fmt(self.base)})"
        )


class MarkovBursty(DelayModel):
    """Bursty stragglers: each worker follows its own two-state (fast / slow) Markov chain.

    The first call to :meth:`sample` (and the first after :meth:`reset`, or after
    ``n_workers`` changes) draws every worker's state independently from the chain's
    stationary distribution and returns it; every later call first advances each chain by
    one step -- a slow worker stays slow with probability ``p_stay_slow``, a fast one stays
    fast with probability ``p_stay_fast`` -- and then returns the delays. A slow worker
    takes ``base * slowdown``, a fast one ``base``.

    The stationary probability of being slow is
    ``pi_slow = (1 - p_stay_fast) / ((1 - p_stay_slow) + (1 - p_stay_fast))`` and the
    lag-1 autocorrelation of a worker's slow indicator is ``p_stay_slow + p_stay_fast - 1``;
    slow spells last ``1 / (1 - p_stay_slow)`` rounds on average.

    Parameters
    ----------
    p_stay_slow : float
        Probability in ``[0, 1]`` that a slow worker is still slow next round.
    p_stay_fast : float
        Probability in ``[0, 1]`` that a fast worker is still fast next round. Not both
        may be 1 (the chain would have no unique stationary distribution).
    slowdown : float
        Multiplier of the base delay in the slow state, ``>= 1``.
    base : float, default 1.0
        Delay in the fast state, ``> 0``.

    Attributes
    ----------
    state : numpy.ndarray or None
        Boolean array, ``True`` for workers currently slow (``None`` before the first call).

    Examples
    --------
    >>> import numpy as np
    >>> model = MarkovBursty(p_stay_slow=0.8, p_stay_fast=0.95, slowdown=5.0)
    >>> round(model.stationary_slow(), 12), round(model.mean(), 12)
    (0.2, 1.8)
    >>> rng = np.random.default_rng(0)
    >>> delays = model.sample(6, rng)  # initial states, from the stationary distribution
    >>> bool(np.isin(delays, [1.0, 5.0]).all())
    True
    >>> model.sample(6, rng).shape  # every later call advances each chain one step
    (6,)
    """

    def __init__(self, p_stay_slow: float, p_stay_fast: float, slowdown: float, base: float = 1.0) -> None:
        self.p_stay_slow = check_fraction("p_stay_slow", p_stay_slow, zero=True)
        self.p_stay_fast = check_fraction("p_stay_fast", p_stay_fast, zero=True)
        if self.p_stay_slow == 1.0 and self.p_stay_fast == 1.0:
            raise ValueError(
                "p_stay_slow and p_stay_fast cannot both be 1: the chain would never change state "
                "and has no unique stationary distribution (use SlowWorkers for a fixed slow set)"
            )
        self.slowdown = _check_slowdown(slowdown)
        self.base = check_real("base", base, positive=True)
        self.state: np.ndarray | None = None

    def stationary_slow(self) -> float:
        """Stationary probability that a worker is in the slow state."""
        leave_slow = 1.0 - self.p_stay_slow
        leave_fast = 1.0 - self.p_stay_fast
        return leave_fast / (leave_slow + leave_fast)

    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        if self.state is None or self.state.shape[0] != n_workers:
            self.state = rng.random(n_workers) < self.stationary_slow()
        else:
            u = rng.random(n_workers)
            self.state = np.where(self.state, u < self.p_stay_slow, u >= self.p_stay_fast)
        return np.where(self.state, self.base * self.slowdown, self.base)

    def reset(self) -> None:
        """Forget the workers' states; the next :meth:`sample` redraws them."""
        self.state = None

    def mean(self) -> float:
        """Stationary mean ``base * (1 + pi_slow * (slowdown - 1))``."""
        return self.base * (1.0 + self.stationary_slow() * (self.slowdown - 1.0))

    def __repr__(self) -> str:
        return (
            f"MarkovBursty(p_stay_slow={_fmt(self.p_stay_slow)}, p_stay_fast={_fmt(self.p_stay_fast)}, "
            f"slowdown={_fmt(self.slowdown)}, base={_fmt(self.base)})"
        )


class Trace(DelayModel):
    """Replay measured per-unit delays; ``rng`` is ignored.

    * 1-D ``array`` (a stream of measurements): each call returns the next ``n_workers``
      values, wrapping around to the start when the end is reached; the position carries
      over between calls, whatever ``n_workers`` is. With values ``[a, b, c]`` and 2
      workers, calls return ``[a, b]``, ``[c, a]``, ``[b, c]``, ...
    * 2-D ``array`` of shape ``(rounds, workers)``: call ``t`` returns row
      ``t % rounds``; ``n_workers`` must equal the number of columns.

    Values must be non-negative; ``inf`` marks a worker that never returned (failure);
    NaN and ``-inf`` are rejected. The array is copied.

    Parameters
    ----------
    array : array_like
        Non-empty 1-D or 2-D array of measured delays per unit of work.

    Examples
    --------
    >>> import numpy as np
    >>> trace = Trace([1.0, 2.0, 3.0])
    >>> rng = np.random.default_rng(0)
    >>> trace.sample(2, rng), trace.sample(2, rng)
    (array([1., 2.]), array([3., 1.]))
    >>> Trace([[1.0, np.inf], [2.0, 3.0]]).sample(2, rng)
    array([ 1., inf])
    >>> trace.mean()
    2.0
    """

    def __init__(self, array: Any) -> None:
        arr = np.asarray(array)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"array must be a real numeric array, got dtype {arr.dtype}")
        if arr.ndim not in (1, 2):
            raise ValueError(f"array must be 1-D (a stream) or 2-D (rounds x workers), got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"array must not be empty, got shape {arr.shape}")
        arr = np.array(arr, dtype=np.float64)  # always a private copy
        if np.isnan(arr).any():
            raise ValueError("array must not contain NaN")
        if (arr < 0).any():
            bad = arr[arr < 0][0]
            raise ValueError(f"array values must be >= 0 (inf marks a failure), got {bad}")
        arr.setflags(write=False)
        self.array = arr
        self._pos = 0

    def _draw(self, n_workers: int, rng: np.random.Generator) -> np.ndarray:
        arr = self.array
        if arr.ndim == 1:
            length = arr.shape[0]
            out = arr[(self._pos + np.arange(n_workers)) % length]
            self._pos = (self._pos + n_workers) % length
            return out.copy()
        rounds, workers = arr.shape
        if n_workers != workers:
            raise ValueError(
                f"n_workers must equal the trace's number of columns ({workers}) for a 2-D trace, got {n_workers}"
            )
        out = arr[self._pos].copy()
        self._pos = (self._pos + 1) % rounds
        return out

    def reset(self) -> None:
        """Restart the replay from the first value (1-D) or first row (2-D)."""
        self._pos = 0

    def mean(self) -> float:
        """Mean of all values (the long-run mean of the replay); ``inf`` if any value is ``inf``."""
        return float(self.array.mean())

    def __repr__(self) -> str:
        return f"Trace(<array of shape {self.array.shape}>)"
