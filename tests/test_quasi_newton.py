"""Quasi-Newton steps on decoded gradients (``train(acceleration="lbfgs")``), and the
schemes' word on whether a decoded gradient is exact (``Scheme.exact``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import ill_conditioned_least_squares

from lwpd import _config, train
from lwpd._quasi_newton import LbfgsMemory, backtrack
from lwpd.cluster import SimulatedCluster
from lwpd.problems import LeastSquares, Logistic
from lwpd.schemes import LWPD, IgnoreStragglers, RandomK, ReplicatedLWPD, Uncoded
from lwpd.schemes.registry import NAMES, make_scheme
from lwpd.stragglers import ShiftedExponential


# ---------------------------------------------------------------------------- the two-loop product
def _dense_bfgs_inverse(pairs, n):
    """The oracle: the BFGS inverse-Hessian updates applied one by one as dense matrices,
    ``H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T`` from ``H_0 = (s^T y / y^T y) I``
    of the newest pair (Nocedal & Wright, eq. 7.19)."""
    s_new, y_new = pairs[-1]
    H = (s_new @ y_new) / (y_new @ y_new) * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        left = np.eye(n) - rho * np.outer(s, y)
        H = left @ H @ left.T + rho * np.outer(s, s)
    return H


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), n_points=st.integers(2, 16), size=st.integers(1, 6))
@settings(max_examples=60, deadline=None)
def test_direction_is_minus_the_dense_bfgs_inverse_times_the_gradient(seed, n, n_points, size):
    """On a convex quadratic (every pair has positive curvature), the two-loop direction
    equals the dense BFGS inverse built from the last ``size`` pairs, times ``-g``."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    A = M @ M.T + 0.1 * np.eye(n)
    memory = LbfgsMemory(size=size)
    points = rng.standard_normal((n_points, n))
    for x in points:
        memory.observe(x, A @ x)
    pairs = [(points[i + 1] - points[i], A @ (points[i + 1] - points[i])) for i in range(n_points - 1)][-size:]
    g = rng.standard_normal(n)
    expected = -_dense_bfgs_inverse(pairs, n) @ g
    np.testing.assert_allclose(memory.direction(g), expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


def test_full_memory_on_a_quadratic_is_newton_after_n_exact_line_searches():
    """With exact line searches on a quadratic, BFGS recovers the inverse Hessian after ``n``
    steps (Nocedal & Wright, Theorem 6.4 / quadratic termination): the direction from the
    last iterate lands on the minimiser."""
    rng = np.random.default_rng(3)
    n = 6
    M = rng.standard_normal((n, n))
    A, b = M @ M.T + np.eye(n), rng.standard_normal(n)
    x, memory = np.zeros(n), LbfgsMemory(size=n)
    for _ in range(n):
        g = A @ x - b
        memory.observe(x, g)
        d = memory.direction(g)
        x = x + (-(g @ d) / (d @ A @ d)) * d  # exact minimiser along d
    memory.observe(x, A @ x - b)
    np.testing.assert_allclose(x + memory.direction(A @ x - b), np.linalg.solve(A, b), rtol=1e-8)


def test_pairs_come_from_the_last_two_exact_gradients_and_need_positive_curvature():
    memory = LbfgsMemory()
    memory.observe(np.zeros(2), np.zeros(2))
    memory.observe(np.ones(2), -np.ones(2))  # s^T y < 0: concave along s
    assert not memory.pairs
    memory.observe(3 * np.ones(2), np.ones(2))  # against the last one (wherever it was): s^T y = 8 > 0
    assert len(memory.pairs) == 1
    s, y, rho = memory.pairs[0]
    np.testing.assert_array_equal(s, 2 * np.ones(2))
    np.testing.assert_array_equal(y, 2 * np.ones(2))
    assert rho == 1 / 8
    memory.clear()
    np.testing.assert_array_equal(memory.direction(np.array([1.0, -2.0])), [-1.0, 2.0])


# ---------------------------------------------------------------------------- the line search
@given(curvature=st.floats(1e-3, 1e3), start=st.floats(1e-3, 1e3))
@settings(max_examples=60, deadline=None)
def test_backtracking_returns_a_step_with_sufficient_decrease(curvature, start):
    """``f(t) = c (t - 1)^2 / 2`` from ``t = 0`` (slope ``-c``): the accepted length has
    ``f(t) <= f(0) + c1 t f'(0)``, and the trials shrink only (never past ``start``)."""
    seen = []

    def f(t):
        seen.append(t)
        return 0.5 * curvature * (t - 1.0) ** 2

    loss0 = f(0.0)
    found = backtrack(f, loss0, -curvature, start)
    trials = seen[1:]
    assert found is not None
    t, value = found
    assert trials[0] == start and trials[-1] == t and value == 0.5 * curvature * (t - 1.0) ** 2
    assert value <= loss0 + _config.ARMIJO_C1 * t * (-curvature)
    assert all(later < earlier for earlier, later in zip(trials, trials[1:]))


def test_backtracking_gives_up_and_accepts_within_rounding_only_where_the_model_says_so():
    calls = []

    def rising(t):
        calls.append(t)
        return 1.0 + t

    assert backtrack(rising, 1.0, -1.0, 1.0) is None
    assert len(calls) == _config.LINE_SEARCH_MAX_TRIALS
    # a predicted decrease far below the loss's rounding: a trial as good as the start is taken
    assert backtrack(lambda t: 1.0, 1.0, -1e-20, 1.0) == (1.0, 1.0)
    # ... but not one that is clearly worse
    assert backtrack(lambda t: 1.0 + 1e-9, 1.0, -1e-20, 1.0) is None
    # a non-finite trial is halved, not interpolated
    values = iter([np.inf, 0.0])
    assert backtrack(lambda t: next(values), 1.0, -1.0, 1.0) == (0.5, 0.0)


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("scheme", [Uncoded(), LWPD(block_size=6)], ids=["uncoded", "lwpd"])
def test_lbfgs_reaches_the_least_squares_solution_in_as_many_steps_as_scipys_lbfgs(scheme):
    """Exact gradients (every task arrives): quasi-Newton steps reach the oracle's optimum
    (np.linalg.lstsq) to 1e-10 of the initial gap in at most 10% more steps than scipy's own
    L-BFGS-B iterations to the same gap, under half Nesterov's steps, on the same coefficients."""
    from scipy.optimize import minimize

    problem, X, y = ill_conditioned_least_squares()
    solution = np.linalg.lstsq(X, y, rcond=None)[0]
    f_star, start = problem.loss(solution), problem.loss(np.zeros(30))
    target = f_star + 1e-10 * (start - f_star)
    losses = []
    minimize(problem.loss, np.zeros(30), jac=problem.gradient, method="L-BFGS-B",
             options={"gtol": 1e-14, "ftol": 1e-16, "maxcor": _config.LBFGS_MEMORY},
             callback=lambda x: losses.append(problem.loss(x)))
    scipy_steps = next(i + 1 for i, loss in enumerate(losses) if loss <= target)
    steps = {}
    for acceleration in ("nesterov", "lbfgs"):
        h = train(problem, scheme, SimulatedCluster(6, seed=0), deadline=1e9, max_steps=2000, target_loss=target,
                  progress=False, seed=0, acceleration=acceleration)
        assert h.loss[-1] <= target
        assert np.nanmax(h.grad_error) < 1e-9  # every step's gradient was exact
        steps[acceleration] = len(h)
        np.testing.assert_allclose(h.theta, solution, atol=1e-4 * np.abs(solution).max())
    assert steps["lbfgs"] <= 1.1 * scipy_steps and steps["lbfgs"] < steps["nesterov"] / 2, (steps, scipy_steps)


def test_lbfgs_logistic_matches_a_reference_minimiser_and_never_raises_the_loss():
    """A regularised logistic problem: the quasi-Newton run reaches the minimiser that
    scipy's own L-BFGS-B finds (gradient below 1e-9) and, with an Armijo search on every
    step, its loss never rises."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    X = rng.standard_normal((800, 15)) * np.linspace(0.3, 3.0, 15)
    y = (X @ rng.standard_normal(15) + rng.standard_normal(800) > 0).astype(float)
    problem = Logistic(X, y, alpha=1e-2)
    reference = minimize(problem.loss, np.zeros(problem.n_params), jac=problem.gradient, method="L-BFGS-B",
                         options={"gtol": 1e-12, "ftol": 0, "maxiter": 10_000}).x
    h = train(problem, LWPD(block_size=4), SimulatedCluster(5, seed=0), deadline=1e9, max_steps=200,
              progress=False, seed=0, acceleration="lbfgs", track_error=False,
              callback=lambda step, theta, history: bool(np.abs(problem.gradient(theta)).max() < 1e-9))
    assert len(h) < 60
    np.testing.assert_allclose(h.theta, reference, atol=1e-6)
    # never up by more than the search's rounding allowance (LINE_SEARCH_ROUNDING_ULPS)
    assert np.all(np.diff([h.initial_loss] + h.loss) <= 2 * _config.LINE_SEARCH_ROUNDING_ULPS * 2.2e-16 * h.initial_loss)


@pytest.mark.parametrize("seed", [0, 1])
def test_lbfgs_with_partial_gradients_takes_gradient_steps_and_stays_stable(seed):
    """Stragglers and first-k: most steps' LWPD gradients are partial, and are taken as plain
    gradient steps of size 1/L (History.lr); the run stays finite and ends below plain
    gradient descent's loss plus a few percent of the start's gap."""
    problem, _, _ = ill_conditioned_least_squares(seed)
    start = problem.loss(np.zeros(30))
    finals = {}
    for acceleration in (None, "lbfgs"):
        h = train(problem, LWPD(), SimulatedCluster(8, ShiftedExponential(1.0, 0.5), seed=seed), policy="first_k",
                  max_steps=150, progress=False, seed=seed, acceleration=acceleration)
        assert np.all(np.isfinite(h.loss))
        finals[acceleration] = h.loss[-1]
        if acceleration == "lbfgs":
            inexact = np.asarray(h.grad_error) > 1e-9
            assert inexact.any()
            np.testing.assert_allclose(np.asarray(h.lr)[inexact], 1.0 / problem.lipschitz())
    assert finals["lbfgs"] <= finals[None] + 0.02 * start


def test_a_failed_line_search_takes_a_gradient_step_and_clears_the_memory(monkeypatch):
    """When the search finds no decrease, the step is a plain gradient step of size 1/L from
    the same point, and the curvature memory starts afresh."""
    import importlib

    train_module = importlib.import_module("lwpd.train")  # the module (lwpd.train is also the function)
    problem, _, _ = ill_conditioned_least_squares()
    kept = []
    real = train_module.backtrack
    calls = iter(range(1000))

    def sometimes_failing(*args):
        return None if next(calls) == 5 else real(*args)

    monkeypatch.setattr(train_module, "backtrack", sometimes_failing)
    real_observe = LbfgsMemory.observe
    monkeypatch.setattr(LbfgsMemory, "observe", lambda self, x, g: kept.append(len(self.pairs)) or real_observe(self, x, g))
    h = train(problem, Uncoded(), SimulatedCluster(4, seed=0), deadline=1e9, max_steps=9, progress=False, seed=0,
              acceleration="lbfgs")
    lengths = np.asarray(h.lr)
    assert lengths[5] == pytest.approx(1.0 / problem.lipschitz())  # the gradient step
    assert kept[5] == 4 and kept[6] == 0  # four pairs before the failure, none after it
    assert np.all(np.diff([h.initial_loss] + h.loss) < 0)


# ---------------------------------------------------------------------------- Scheme.exact
def _small_problem():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((96, 10))
    return LeastSquares(X, X @ rng.standard_normal(10) + 0.1 * rng.standard_normal(96))


_BUILT = {
    "ignore-3-chunks": lambda: IgnoreStragglers(chunks=3),
    "lwpd-full-redundant": lambda: LWPD(layout="full", block_size=4, redundancy=2.0),
    "lwpd-half-share": lambda: LWPD(block_size=5, share=0.5),
    "lwpd-fr-partial": lambda: ReplicatedLWPD(block_size=4, partial=True),
}
_SCHEMES = list(NAMES) + list(_BUILT)


def _scheme(name):
    return _BUILT[name]() if name in _BUILT else make_scheme(name, 8, block_size=5)


def _fold_some(name, seed, keep):
    """One step of the named scheme (8 workers) with each result folded with probability
    ``keep``: ``(estimate, exact(), the gradient)``."""
    problem = _small_problem()
    scheme = _scheme(name)
    rng = np.random.default_rng(seed)
    scheme.bind(problem, 8, rng)
    theta = rng.standard_normal(problem.n_params)
    scheme.begin()
    for task in scheme.tasks(theta):
        if keep == 1.0 or rng.random() < keep:
            scheme.fold(task.worker, task.fn(*task.args))
    return scheme.estimate(), scheme.exact(), problem.gradient(theta)


@pytest.mark.parametrize("name", _SCHEMES)
@given(seed=st.integers(0, 2**32 - 1), keep=st.floats(0.0, 1.0))
@settings(max_examples=15, deadline=None)
def test_a_scheme_says_exact_only_when_its_estimate_is_the_gradient(name, seed, keep):
    """Whatever subset of a step's results arrived: when the scheme says its estimate is
    exact, the estimate is the gradient (to 1e-9 of its largest entry)."""
    estimate, exact, gradient = _fold_some(name, seed, keep)
    if exact:
        assert estimate is not None
        np.testing.assert_allclose(estimate, gradient, atol=1e-9 * np.abs(gradient).max())
    if not _scheme(name).exact_when_complete:
        assert not exact


@pytest.mark.parametrize("name", _SCHEMES)
def test_every_result_folded_is_exact_exactly_for_the_schemes_that_say_so(name):
    """``exact_when_complete``: with every result of a step folded the estimate is the
    gradient and ``exact()`` says so; the schemes without it (random-k, memory, a half
    share) never say so."""
    estimate, exact, gradient = _fold_some(name, 0, 1.0)
    assert exact == _scheme(name).exact_when_complete
    assert exact == (name not in ("randk", "iag", "lwpd-memory", "lwpd-half-share"))
    if exact:
        np.testing.assert_allclose(estimate, gradient, atol=1e-9 * np.abs(gradient).max())


@pytest.mark.filterwarnings("ignore:.*(cannot detect|Byzantine worker):UserWarning")  # about lies, not exactness
def test_randk_and_robust_decoding_never_claim_exactness():
    problem = _small_problem()
    for scheme in (RandomK(share=1.0), LWPD(layout="full", decoder="robust", redundancy=2.0)):
        scheme.bind(problem, 4, np.random.default_rng(0))
        scheme.begin()
        for task in scheme.tasks(np.ones(problem.n_params)):
            scheme.fold(task.worker, task.fn(*task.args))
        assert scheme.estimate() is not None and not scheme.exact()
