"""scikit-learn estimators that train a wrapped linear model by coded gradient descent.

:class:`CodedGDClassifier` and :class:`CodedGDRegressor` take the linear model a user already
has (``LogisticRegression``, ``SGDClassifier(loss="log_loss")``, ``LinearRegression``,
``Ridge``, ``SGDRegressor(loss="squared_error")``), read its loss, penalty and intercept
setting, and minimise exactly that objective with :func:`lwpd.train` on a (simulated or
real) cluster of workers that straggle. The result is an ordinary scikit-learn estimator:
``estimator_`` is a fitted clone of the wrapped model carrying the coded-GD coefficients,
and the meta-estimator itself works in ``Pipeline``, ``GridSearchCV`` and
``cross_val_score``.

Objective mapping (``s_i`` the sample weights, ``S = sum_i s_i``, ``m`` the number of samples;
the :mod:`lwpd.problems` objective is the weighted mean loss plus ``alpha / 2 ||W||^2``):

==========================================  ============================  ==================
wrapped estimator                           lwpd problem                  ``alpha``
==========================================  ============================  ==================
``LogisticRegression(C)`` (L2)              Logistic / Softmax            ``1 / (C S)``
``LogisticRegression`` without penalty      Logistic / Softmax            ``0``
``SGDClassifier(loss="log_loss", alpha)``   Logistic / Softmax            ``alpha m / S``
``LinearRegression()``                      LeastSquares                  ``0``
``Ridge(alpha)``                            LeastSquares                  ``alpha / S``
``SGDRegressor(alpha)``                     LeastSquares                  ``alpha m / S``
==========================================  ============================  ==================

Each row is the wrapped estimator's own objective divided by a positive constant, so the
minimisers coincide. Two classes give binary logistic regression, more give softmax
(multinomial) regression -- also for ``SGDClassifier``, whose own solver is one-vs-rest.
"""

from __future__ import annotations

import copy
import math
from abc import ABCMeta, abstractmethod
import numbers
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier, SGDRegressor
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, InvalidParameterError, StrOptions
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from lwpd import _defaults
from lwpd.placement import check_placement, shard_rows
from lwpd.schemes import LWPD, registry
from lwpd.train import train

__all__ = ["CodedGDClassifier", "CodedGDRegressor"]

_CLASSIFIER_SCHEMES = registry.names(least_squares=False)
_REGRESSOR_SCHEMES = registry.names(least_squares=True)

_COMMON_DOC = """
    scheme : str or Scheme, default "lwpd"
        How each step's gradient is split among the workers and decoded: a name
        ({names}) or a scheme object from :mod:`lwpd.schemes` (copied, never modified).
    n_workers : int, default 16
        Workers of the simulated cluster (>= 1). Capped at what the problem can occupy: the
        codebook's size for ``"lwpd"``, the number of samples for the data-parallel schemes
        (``n_workers_`` records the number used). Ignored when ``cluster`` is given.
    stragglers : delay model or None, default None
        Per-worker delays of the simulated cluster, e.g.
        ``lwpd.stragglers.ShiftedExponential(shift=1.0, rate=0.5)``; ``None``: no
        stragglers (every worker takes one time unit per unit of work).
    policy : {{"deadline", "first_k", "async"}}, default "deadline"
        When a step stops listening (see :func:`lwpd.train`). The deadline is chosen
        automatically from {rounds} seeded rounds of the delay model: for schemes that
        decode partial results (``"lwpd"``, ``"ignore"``) the time by which, in
        expectation, their ``wait_for`` fraction (0.75) of the step's work is done; for the
        exact schemes the most work of a worker times the largest finite sampled delay.
        Without stragglers it is twice the most work of a worker, so every result arrives in
        time (a step ends as soon as all have). ``"first_k"`` waits until the scheme is ready; ``"async"`` never waits.
    max_iter : int, default 1000
        Largest number of gradient steps (>= 1).
    tol : float or None, default 1e-4
        Stop once the largest entry of the gradient of the objective (the mean loss plus the
        penalty) is at most ``tol`` -- the test lbfgs makes with the same ``tol`` -- times the
        largest entry of the gradient at zero when that exceeds 1 (so that the units of ``y`` do
        not matter, for a warm start too). The exact gradient is evaluated on the master
        only once the loss has settled (fallen by less than ``tol * max(1, |loss|)`` over
        {window} steps), and every {window} steps while it stays settled. With stragglers (or
        a ``cluster``) the decoded gradients are noisy and may never get there: such a fit
        also stops once no step in {floor} reached a new lowest loss. ``None`` runs
        ``max_iter`` steps.
    learning_rate : "auto" or float, default "auto"
        Step size. ``"auto"``: ``1 / L`` with ``L`` the problem's Lipschitz bound
        (:meth:`lwpd.problems.LeastSquares.lipschitz`), times {async_fraction} with
        ``policy="async"`` (stale gradients want a shorter step).
    acceleration : {{"auto", "lbfgs", "nesterov"}} or None, default "auto"
        How a step uses the decoded gradient (:func:`lwpd.train`'s ``acceleration``), under
        the synchronous policies with a scheme without memory (plain gradient steps
        otherwise). ``"lbfgs"``: limited-memory quasi-Newton steps with a backtracking line
        search whenever the gradient is exact (every task arrived), plain gradient steps
        when it is not. ``"nesterov"``: Nesterov's accelerated gradient with adaptive
        restart, roughly ``sqrt(kappa)`` steps where plain steps take ``kappa`` (the
        condition number). ``"auto"``: ``"lbfgs"`` when every gradient is exact -- no
        ``stragglers`` or ``cluster``, ``policy="deadline"`` (every task arrives) and a scheme
        that then decodes the gradient itself (``Scheme.exact_when_complete``: not
        ``"randk"``, nor a scheme with memory) -- and ``learning_rate="auto"`` (the line
        search chooses the steps; a given ``learning_rate`` sets only its first step and the
        gradient steps); ``"nesterov"`` otherwise. ``None``: plain gradient steps always. All converge to the
        same coefficients.
    block_size : int, default 8
        Coordinates per block of the LWPD codebook (``scheme="lwpd"`` only).
    max_weight : int, default 2
        Largest Hamming weight of an LWPD codeword (``scheme="lwpd"`` only).
    placement : str or sequence of array_like, default "iid"
        Which rows of ``X`` each worker holds, for every scheme alike
        (:mod:`lwpd.placement`): ``"iid"`` (a shuffle seeded by ``random_state``),
        ``"sorted"`` (contiguous rows in order of {sorted_by}), ``"dirichlet:alpha=A"``
        (label skew: each worker's {skew_over} proportions drawn from Dirichlet(A), A > 0;
        small A gives each worker few {skew_what}) or one array of row indices per worker
        used (``n_workers_``), together holding every row exactly once. Anything else is a
        ``ValueError`` naming ``placement``.
    cluster : cluster or None, default None
        ``None``: a :class:`lwpd.cluster.SimulatedCluster` seeded by ``random_state``.
        Otherwise a cluster object (e.g. :class:`lwpd.cluster.ExecutorCluster`), used as is;
        the automatic deadline then still reads ``stragglers`` (pass the cluster's delay
        model there too), so ``policy="first_k"`` or ``"async"`` suit real executors best.
    random_state : int, RandomState instance or None, default None
        Seeds the simulated cluster's delays and the scheme's assignment of work to workers.
    verbose : int, default 0
        ``> 0`` shows a tqdm progress bar.
"""

_FITTED_DOC = """
    estimator_ : estimator
        A clone of ``estimator`` whose ``coef_`` and ``intercept_`` are the coded-GD solution
        (so its own ``predict`` works). A multiclass ``SGDClassifier`` normalises its own
        ``predict_proba`` one-vs-rest; this estimator's ``predict_proba`` is the softmax of
        the fitted multinomial model.
    coef_ : ndarray
    intercept_ : {intercept}
    n_iter_ : int
        Gradient steps taken.
    n_workers_ : int
        Workers used.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string feature names (a DataFrame).
    history_ : lwpd.History
        The training record: simulated (or wall) time, loss and decoding statistics per step.
        ``grad_error`` is ``nan``: measuring it costs an exact gradient per step, so a fit
        skips it (:func:`lwpd.train` with ``track_error=True`` records it). ``lr`` is each
        step's size; for a quasi-Newton step, the line search's length along its direction.
"""


def _fill(doc: str, **values: Any) -> str:
    return doc.format(
        rounds=_defaults.SKLEARN_DEADLINE_ROUNDS,
        window=_defaults.SKLEARN_N_ITER_NO_CHANGE,
        floor=4 * _defaults.SKLEARN_N_ITER_NO_CHANGE,
        async_fraction=_defaults.ASYNC_STEP_FRACTION,
        **values,
    )


def _parameter_constraints(names: tuple[str, ...]) -> dict[str, list]:
    return {
        "estimator": [HasMethods(["fit", "get_params"]), None],
        "scheme": [StrOptions(set(names)), HasMethods(["bind", "tasks", "begin", "fold", "estimate"])],
        "n_workers": [Interval(numbers.Integral, 1, None, closed="left")],
        "stragglers": [HasMethods(["sample", "reset"]), None],
        "policy": [StrOptions({"deadline", "first_k", "async"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left"), None],
        "learning_rate": [StrOptions({"auto"}), Interval(numbers.Real, 0, None, closed="neither")],
        "acceleration": [StrOptions({"auto", "nesterov", "lbfgs"}), None],
        "block_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_weight": [Interval(numbers.Integral, 1, None, closed="left")],
        # the form of a named placement ("dirichlet:alpha=A") is checked in fit, by lwpd.placement
        "placement": [str, "array-like"],
        "cluster": [HasMethods(["submit", "as_completed", "cancel"]), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }


def _l2_strength(estimator: Any, sw_sum: float, m: int) -> float:
    """The problems' ``alpha`` for the wrapped estimator's penalty (see the module table)."""
    if isinstance(estimator, LogisticRegression):
        if estimator.penalty is None or estimator.C == np.inf:
            return 0.0
        return 1.0 / (estimator.C * sw_sum)
    if isinstance(estimator, (SGDClassifier, SGDRegressor)):
        return 0.0 if estimator.penalty is None else estimator.alpha * m / sw_sum
    if isinstance(estimator, Ridge):
        return float(estimator.alpha) / sw_sum
    return 0.0  # LinearRegression


class _CodedGD(BaseEstimator, metaclass=ABCMeta):
    """Shared machinery; subclasses set the supported estimators and the problem."""

    _SUPPORTED: tuple[type, ...] = ()
    _SUPPORTED_TEXT = ""
    _DEFAULT: type = LinearRegression

    def __init__(
        self,
        estimator: Any = None,
        *,
        scheme: Any = "lwpd",
        n_workers: int = _defaults.WORKERS,
        stragglers: Any = None,
        policy: str = "deadline",
        max_iter: int = 1000,
        tol: float | None = 1e-4,
        learning_rate: str | float = "auto",
        acceleration: str | None = "auto",
        block_size: int = 8,
        max_weight: int = 2,
        placement: Any = "iid",
        cluster: Any = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.estimator = estimator
        self.scheme = scheme
        self.n_workers = n_workers
        self.stragglers = stragglers
        self.policy = policy
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.acceleration = acceleration
        self.block_size = block_size
        self.max_weight = max_weight
        self.placement = placement
        self.cluster = cluster
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ the wrapped model
    def _checked_estimator(self) -> Any:
        """A validated clone of the wrapped estimator (its loss and penalty are supported)."""
        est = self._DEFAULT() if self.estimator is None else self.estimator
        if type(est) not in self._SUPPORTED:
            raise ValueError(
                f"estimator must be one of {self._SUPPORTED_TEXT} (or None for {self._DEFAULT.__name__}()), "
                f"got {type(est).__name__}"
            )
        est = clone(est)
        est._validate_params()  # the wrapped estimator's own parameter checks and messages
        name = type(est).__name__
        if isinstance(est, LogisticRegression):
            penalty = est.penalty  # deprecated in scikit-learn 1.8 in favour of l1_ratio and C=np.inf
            if penalty == "deprecated":
                l2 = est.l1_ratio in (0, None) or est.C == np.inf
            else:  # elasticnet with l1_ratio=0 is the L2 penalty too
                l2 = penalty in ("l2", None) or (penalty == "elasticnet" and est.l1_ratio == 0)
            if not l2:
                raise ValueError(f"{name}: only the L2 penalty (l1_ratio=0) or none (C=np.inf) is supported, got penalty={penalty!r}, l1_ratio={est.l1_ratio!r}")
        if isinstance(est, (SGDClassifier, SGDRegressor)):
            loss = "log_loss" if isinstance(est, SGDClassifier) else "squared_error"
            if est.loss != loss:
                raise ValueError(f"{name}: only loss={loss!r} is supported, got loss={est.loss!r}")
            if est.penalty not in ("l2", None):
                raise ValueError(f"{name}: only penalty='l2' or None is supported, got penalty={est.penalty!r}")
        if isinstance(est, SGDClassifier) and est.class_weight is not None:
            raise ValueError(f"{name}: class_weight is supported with LogisticRegression only; pass sample_weight "
                             "to fit instead")
        if getattr(est, "positive", False):
            raise ValueError(f"{name}: positive=True (a constrained fit) is not supported")
        if isinstance(est, Ridge) and np.ndim(est.alpha) != 0:
            raise ValueError(f"{name}: alpha must be a scalar (one target), got shape {np.shape(est.alpha)}")
        return est

    # ------------------------------------------------------------------ fitting
    def _class_weighted(self, est: Any, y: np.ndarray, sw: np.ndarray | None) -> np.ndarray | None:
        """The sample weights with the wrapped estimator's class weights folded in (none here;
        see :class:`CodedGDClassifier`)."""
        return sw

    def _fit(self, X: Any, y: Any, sample_weight: Any, problem_cls: Any) -> "_CodedGD":
        from lwpd.cluster import SimulatedCluster

        est = self._checked_estimator()
        placement = self._checked_placement()
        m = X.shape[0]
        # scikit-learn's checks: one finite weight >= 0 per sample, not all zero
        sw = None if sample_weight is None else _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        sw = self._class_weighted(est, y, sw)
        sw_sum = float(m if sw is None else sw.sum())
        alpha = _l2_strength(est, sw_sum, m)
        if not sp.issparse(X):
            # a worker reading the touched columns of all of X ("full" layout) wants them
            # contiguous (Fortran order); every other scheme gathers its shards' rows, 5x
            # faster from C order (0.03 against 0.15 s on 80,000 x 200)
            full = isinstance(self.scheme, LWPD) and self.scheme.layout == "full"
            X = np.asfortranarray(X) if full else np.ascontiguousarray(X)
        problem = problem_cls(X, y, alpha=alpha, sample_weight=sw, fit_intercept=bool(est.fit_intercept))
        if isinstance(self.scheme, str) and self.scheme == "lcc" and (sw is not None or not est.fit_intercept):
            raise ValueError("scheme='lcc' needs unweighted data and fit_intercept=True; choose another scheme")

        rng = check_random_state(self.random_state)
        cluster_seed, train_seed, deadline_seed = (int(s) for s in rng.randint(np.iinfo(np.int32).max, size=3))
        n_workers = self.cluster.n_workers if self.cluster is not None else self.n_workers
        scheme, n_workers = self._scheme(problem, n_workers, fixed=self.cluster is not None)
        if not isinstance(placement, str):
            self._check_shards(problem, placement, n_workers)
        cluster = self.cluster
        if cluster is None:
            cluster = SimulatedCluster(n_workers, copy.deepcopy(self.stragglers), seed=cluster_seed)
        deadline = (self._deadline(scheme, problem, n_workers, placement, train_seed, deadline_seed)
                    if self.policy == "deadline" else None)
        lr = None if self.learning_rate == "auto" else float(self.learning_rate)
        if lr is None and self.policy == "async":
            lr = _defaults.ASYNC_STEP_FRACTION / problem.lipschitz()

        theta0 = self._warm_start(est, problem)
        window = _defaults.SKLEARN_N_ITER_NO_CHANGE
        tol = self.tol
        converged = [False]
        settled = [0]  # consecutive steps at which the loss had settled
        noisy = self.stragglers is not None or self.cluster is not None  # decoded gradients may be partial
        if tol is not None:
            # the gradient test's scale: the gradient's at zero (not at a warm start, so that a
            # refit asks for what a cold fit asks), when above 1
            gradient_scale = max(1.0, float(np.abs(problem.gradient(np.zeros(problem.n_params))).max()))

        def blown_up(history: Any) -> float:
            """The loss past which the fit has diverged (train records the starting loss)."""
            return _defaults.SKLEARN_DIVERGENCE_FACTOR * max(1.0, abs(history.initial_loss))

        def stop(step: int, theta: np.ndarray, history: Any) -> bool:
            losses = history.loss
            if not math.isfinite(losses[-1]) or losses[-1] > blown_up(history):  # diverged: stop, reported below
                return True
            if tol is None or len(losses) <= window:
                return False
            # The cheap test first: the loss fell by less than tol over the window (a rising
            # loss has not settled). Then, on settling and every window steps after, the test
            # lbfgs makes: the largest entry of the exact gradient at most tol (times the
            # largest entry of the gradient at zero when that exceeds 1, so that the units of y
            # do not matter). The loss test alone stopped ill-conditioned fits early.
            decrease = losses[-window - 1] - losses[-1]
            if not 0.0 <= decrease < tol * max(1.0, abs(losses[-1])):
                settled[0] = 0
                return False
            settled[0] += 1
            if (settled[0] - 1) % window:
                return False
            converged[0] = float(np.abs(problem.gradient(theta)).max()) <= tol * gradient_scale
            if noisy and not converged[0]:
                # Under stragglers the decoded gradients carry noise, and the gradient may never
                # fall to tol: once no step in the last 4 windows reached a new lowest loss, the
                # fit is at that noise floor and stops (a slow but steady descent keeps setting
                # new lows, so it goes on). Without stragglers only the gradient test stops a fit.
                span = 4 * window  # (the docstring's {floor})
                converged[0] = len(losses) > span and min(losses[-span:]) >= min(losses[:-span])
            return converged[0]

        acceleration = self.acceleration
        if (acceleration == "auto" and not noisy and self.learning_rate == "auto" and self.policy == "deadline"
                and getattr(scheme, "exact_when_complete", False)):
            # every task arrives before the deadline and the scheme then decodes the gradient
            # itself, and no step size was asked for: quasi-Newton steps
            acceleration = "lbfgs"
        diverged = f"the loss diverged (learning_rate={self.learning_rate!r} is too large)"
        # Each simulated worker is one core running many small products, where BLAS threads
        # cost more than they gain; the previous limits come back when the block exits.
        try:
            with threadpool_limits(limits=1, user_api="blas"):
                history = train(problem, scheme, cluster, lr=lr, max_steps=self.max_iter, policy=self.policy,
                                deadline=deadline, callback=stop, progress=self.verbose > 0, seed=train_seed, theta0=theta0,
                                track_error=False,  # a diagnostic pass per step: too slow for fit
                                placement=placement, acceleration=acceleration)
        except ValueError as exc:
            if str(exc).startswith("theta must be finite"):  # a step overflowed
                raise FloatingPointError(diverged) from exc
            raise
        if not np.isfinite(history.loss[-1]) or history.loss[-1] > blown_up(history):
            raise FloatingPointError(diverged)
        if tol is not None and not converged[0]:
            warnings.warn(
                f"{type(self).__name__} reached max_iter={self.max_iter} before the gradient fell to tol={tol}; "
                "increase max_iter or tol", ConvergenceWarning, stacklevel=4)

        W, b = problem.unpack(history.theta)
        self._set_solution(est, W, b, problem)
        self.history_ = history
        self.n_iter_ = len(history)
        self.n_workers_ = n_workers
        return self

    def _scheme(self, problem: Any, n_workers: int, fixed: bool) -> tuple[Any, int]:
        """The scheme (a fresh copy) and the number of workers it can occupy."""
        def build(n: int) -> Any:
            if isinstance(self.scheme, str):
                return registry.make_scheme(self.scheme, n, block_size=self.block_size, max_weight=self.max_weight)
            return copy.deepcopy(self.scheme)

        scheme = build(n_workers)
        if fixed:
            return scheme, n_workers
        capacity = problem.n_samples  # each worker needs a shard
        if isinstance(scheme, LWPD) and scheme.layout != "sharded":
            probe = copy.deepcopy(scheme)
            probe.chunks = 1
            probe.bind(problem, 1, np.random.default_rng(0))
            capacity = min(capacity, len(probe.codebook_))  # each worker needs a codeword too
        if capacity < n_workers:
            n_workers = capacity
            scheme = build(n_workers)
            if isinstance(scheme, LWPD) and scheme.chunks is not None:  # fewer codewords per worker: fewer chunks
                scheme.chunks = max(1, min(scheme.chunks, capacity // n_workers))
        return scheme, n_workers

    def _checked_placement(self) -> str | list[np.ndarray]:
        """The validated ``placement`` (:func:`lwpd.placement.check_placement`); a bad one is
        an ``InvalidParameterError`` (a ``ValueError``) naming ``placement``."""
        try:
            return check_placement(self.placement)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"The 'placement' parameter of {type(self).__name__} is invalid: {exc}") from None

    def _check_shards(self, problem: Any, shards: list[np.ndarray], n_workers: int) -> None:
        """Given shards: one index array per worker used (``n_workers``, after any cap), a
        partition of the rows of ``X``; checked before any work, as ``ValueError``."""
        if len(shards) != n_workers:
            if self.cluster is not None:
                used = f"the cluster's {n_workers} workers"
            elif n_workers < self.n_workers:
                used = f"{n_workers} (n_workers={self.n_workers} capped at what the scheme can occupy on this data)"
            else:
                used = f"n_workers={n_workers}"
            raise ValueError(f"placement must hold one index array per worker used: {used}; got {len(shards)} arrays")
        try:
            shard_rows(problem, n_workers, shards)
        except (IndexError, TypeError) as exc:  # a row X lacks, or not row indices: a bad value, as scikit-learn says
            raise ValueError(str(exc)) from None

    def _deadline(self, scheme: Any, problem: Any, n_workers: int, placement: Any, train_seed: int, seed: int) -> float:
        """The automatic per-step deadline (rule in the class docstring, ``policy``), plus
        the most communication of a worker's results on a given cluster."""
        # the probe sees what training will: lwpd.train draws the shards from its seed's
        # generator, then binds the scheme with the same generator
        rng = np.random.default_rng(train_seed)
        shards = shard_rows(problem, n_workers, placement, rng)
        probe = copy.deepcopy(scheme)
        probe.bind(problem, n_workers, rng, shards=shards)
        work = np.zeros(n_workers)
        comm = np.zeros(n_workers)  # a given cluster's price of the results (lwpd.cost), not scaled by delays
        cost = getattr(self.cluster, "cost", None)
        for task in probe.tasks(np.zeros(problem.n_params)):
            work[task.worker] += task.work
            if cost is not None:
                comm[task.worker] += cost.communication(task.floats)
        return self._compute_deadline(scheme, work, n_workers, seed) + float(comm.max())

    def _compute_deadline(self, scheme: Any, work: np.ndarray, n_workers: int, seed: int) -> float:
        """The compute part of the automatic deadline, from each worker's compute units."""
        if self.stragglers is None:
            # Every result must arrive. A step ends as soon as all have, so slack costs
            # nothing; it covers LWPD's per-step work, which varies with the fresh dealing
            # (chunks that share coordinates share their gradient entries).
            return 2.0 * float(work.max())
        model = copy.deepcopy(self.stragglers)
        model.reset()
        gen = np.random.default_rng(seed)
        draws = np.concatenate([model.sample(n_workers, gen) for _ in range(_defaults.SKLEARN_DEADLINE_ROUNDS)])
        finite = draws[np.isfinite(draws)]
        if finite.size == 0:
            raise ValueError("stragglers: every sampled worker failed, so no deadline can be chosen; use policy='first_k'")
        fraction = getattr(scheme, "wait_for", None)
        if fraction is None:  # exact schemes need (nearly) every result
            return float(work.max()) * float(finite.max())
        # A worker with per-unit delay `delay` has finished min(1, x / delay) of its work by
        # x = deadline / work; the expected finished fraction is a mean of such terms.
        # Choose the x at which it reaches `fraction` (it rises with x; bisect on the draws).
        def done(x: float) -> float:
            return float(np.minimum(1.0, x / draws).mean())

        if done(float(finite.max())) < fraction:  # failures cost more than 1 - fraction
            return float(work.max()) * float(finite.max())
        lo, hi = 0.0, float(finite.max())
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if done(mid) < fraction else (lo, mid)
        return float(work.max()) * hi

    def _warm_start(self, est: Any, problem: Any) -> np.ndarray | None:
        """With the wrapped estimator's ``warm_start=True``, start from the previous fit."""
        if not getattr(est, "warm_start", False) or not hasattr(self, "coef_"):
            return None
        W, b = problem.unpack(np.zeros(problem.n_params))
        if np.shape(self.coef_) != np.shape(W) and np.size(self.coef_) != np.size(W):
            return None
        return problem.pack(np.reshape(self.coef_, np.shape(W)), np.reshape(self.intercept_, np.shape(b)) if est.fit_intercept else 0.0)

    @abstractmethod
    def _set_solution(self, est: Any, W: np.ndarray, b: Any, problem: Any) -> None:
        """Store the fitted weights ``W`` and intercept(s) ``b`` on ``self`` and on ``est``."""

    def _copy_input_attributes(self, est: Any) -> None:
        est.n_features_in_ = self.n_features_in_
        if hasattr(self, "feature_names_in_"):
            est.feature_names_in_ = self.feature_names_in_

    def _linear(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        return safe_sparse_dot(X, np.atleast_2d(self.coef_).T, dense_output=True) + self.intercept_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class CodedGDClassifier(ClassifierMixin, _CodedGD):
    __doc__ = _fill(
        """Train a logistic-regression classifier by coded gradient descent under stragglers.

    The wrapped estimator defines the model (loss, L2 strength, intercept); :func:`lwpd.train`
    minimises exactly its objective with gradients computed by the workers of a cluster and
    decoded by ``scheme``. Two classes give binary logistic regression, more give softmax
    regression.

    Parameters
    ----------
    estimator : LogisticRegression, SGDClassifier or None, default None
        ``None`` means ``LogisticRegression()``. ``LogisticRegression`` with the L2 penalty
        (``l1_ratio=0``) or none (``C=np.inf``), its ``C``, ``fit_intercept`` and
        ``class_weight`` (folded into the sample weights, as scikit-learn does);
        ``SGDClassifier(loss="log_loss")`` with ``penalty="l2"`` or ``None``, its ``alpha``
        and ``fit_intercept``. Its ``warm_start=True`` starts a refit from the previous
        solution. Anything else is a ``ValueError``.
    """ + _COMMON_DOC + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    """ + _FITTED_DOC.replace("{intercept}", "ndarray of shape (1,) or (n_classes,)") + """
    See Also
    --------
    CodedGDRegressor : the same for linear regression.
    lwpd.train : the training loop.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from lwpd.sklearn import CodedGDClassifier
    >>> from lwpd.stragglers import ShiftedExponential
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = CodedGDClassifier(LogisticRegression(C=1.0), n_workers=4, max_iter=400,
    ...                         stragglers=ShiftedExponential(shift=1.0, rate=0.5), random_state=0)
    >>> model = make_pipeline(StandardScaler(), clf).fit(X, y)
    >>> clf.coef_.shape, bool(model.score(X, y) > 0.9), clf.n_iter_ < 400
    ((3, 4), True, True)
    >>> bool((clf.predict(X[:5]) == clf.estimator_.predict(X[:5])).all())
    True
    """,
        names=", ".join(f'"{n}"' for n in _CLASSIFIER_SCHEMES),
        sorted_by="class label", skew_over="class", skew_what="classes",
    )

    _SUPPORTED = (LogisticRegression, SGDClassifier)
    _SUPPORTED_TEXT = 'LogisticRegression (L2 penalty or none) and SGDClassifier(loss="log_loss")'
    _DEFAULT = LogisticRegression
    _parameter_constraints: dict = _parameter_constraints(_CLASSIFIER_SCHEMES)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "CodedGDClassifier":
        """Fit the wrapped model by coded gradient descent.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels (at least two distinct ones).
        sample_weight : array-like of shape (n_samples,), optional
            Nonnegative weights; the loss becomes the weighted mean.

        Returns
        -------
        self : CodedGDClassifier
        """
        from lwpd.problems import Logistic, Softmax

        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        check_classification_targets(y)
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(f"y has only one class ({classes[0]!r}); a classifier needs samples of at least 2 classes")
        if hasattr(self, "coef_") and not np.array_equal(getattr(self, "classes_", classes), classes):
            del self.coef_  # coefficients of other classes cannot warm-start this fit
        self.classes_ = classes
        return self._fit(X, y, sample_weight, Logistic if classes.size == 2 else Softmax)

    def _class_weighted(self, est: Any, y: np.ndarray, sw: np.ndarray | None) -> np.ndarray | None:
        """``LogisticRegression(class_weight=...)`` as scikit-learn applies it: each sample's
        weight times its class's weight (``compute_class_weight``, which weighs "balanced"
        by the sample weights), the penalty then scaled by the sum of the products."""
        class_weight = getattr(est, "class_weight", None)
        if class_weight is None:
            return sw
        from sklearn.utils.class_weight import compute_class_weight

        per_class = compute_class_weight(class_weight, classes=self.classes_, y=y, sample_weight=sw)
        per_sample = per_class[np.searchsorted(self.classes_, y)]
        return per_sample if sw is None else sw * per_sample

    def _set_solution(self, est: Any, W: np.ndarray, b: Any, problem: Any) -> None:
        self.coef_ = np.atleast_2d(W)
        self.intercept_ = np.atleast_1d(np.asarray(b, dtype=float))
        est.coef_, est.intercept_, est.classes_ = self.coef_.copy(), self.intercept_.copy(), self.classes_
        self._copy_input_attributes(est)
        if isinstance(est, SGDClassifier):
            est.t_ = 1.0
            est._expanded_class_weight = np.ones(self.classes_.size)
        self.estimator_ = est

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) for two classes (the positive class's score), else
        (n_samples, n_classes)
        """
        scores = self._linear(X)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each sample.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: the logistic function (two classes) or softmax of the scores.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        return softmax(scores, axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return log_softmax(np.column_stack([np.zeros_like(scores), scores]), axis=1)
        return log_softmax(scores, axis=1)


class CodedGDRegressor(RegressorMixin, _CodedGD):
    __doc__ = _fill(
        """Train a least-squares linear regression by coded gradient descent under stragglers.

    The wrapped estimator defines the model (L2 strength, intercept); :func:`lwpd.train`
    minimises exactly its objective with gradients computed by the workers of a cluster and
    decoded by ``scheme``.

    Parameters
    ----------
    estimator : LinearRegression, Ridge, SGDRegressor or None, default None
        ``None`` means ``LinearRegression()``. ``Ridge`` with a scalar ``alpha``;
        ``SGDRegressor(loss="squared_error")`` with ``penalty="l2"`` or ``None`` and its
        ``alpha``; all with their ``fit_intercept``. Its ``warm_start=True`` (SGDRegressor)
        starts a refit from the previous solution. Anything else is a ``ValueError``.
    """ + _COMMON_DOC + """
    Attributes
    ----------
    """ + _FITTED_DOC.replace("{intercept}", "float") + """
    See Also
    --------
    CodedGDClassifier : the same for logistic regression.
    lwpd.train : the training loop.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from lwpd.sklearn import CodedGDRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 3)); y = X @ [1.0, -2.0, 0.5] + 3.0
    >>> reg = CodedGDRegressor(Ridge(alpha=1e-3), tol=None, random_state=0).fit(X, y)
    >>> reg.coef_.round(2).tolist(), round(reg.intercept_, 2)
    ([1.0, -2.0, 0.5], 3.0)
    """,
        names=", ".join(f'"{n}"' for n in _REGRESSOR_SCHEMES),
        sorted_by="target", skew_over="target-decile", skew_what="deciles",
    )

    _SUPPORTED = (LinearRegression, Ridge, SGDRegressor)
    _SUPPORTED_TEXT = 'LinearRegression, Ridge and SGDRegressor(loss="squared_error")'
    _DEFAULT = LinearRegression
    _parameter_constraints: dict = _parameter_constraints(_REGRESSOR_SCHEMES)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "CodedGDRegressor":
        """Fit the wrapped model by coded gradient descent.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Real targets.
        sample_weight : array-like of shape (n_samples,), optional
            Nonnegative weights; the loss becomes the weighted mean.

        Returns
        -------
        self : CodedGDRegressor
        """
        from lwpd.problems import LeastSquares

        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32], y_numeric=True)
        return self._fit(X, y, sample_weight, LeastSquares)

    def _set_solution(self, est: Any, W: np.ndarray, b: Any, problem: Any) -> None:
        self.coef_ = np.asarray(W, dtype=float)
        self.intercept_ = float(b)
        est.coef_ = self.coef_.copy()
        # SGDRegressor keeps its intercept as a length-1 array, the others as a float
        est.intercept_ = np.array([self.intercept_]) if isinstance(est, SGDRegressor) else self.intercept_
        self._copy_input_attributes(est)
        if isinstance(est, SGDRegressor):
            est.t_ = 1.0
        self.estimator_ = est

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``X @ coef_ + intercept_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._linear(X).ravel()
