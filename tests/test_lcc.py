"""Lagrange coded computing for the least-squares gradient (``lwpd._lcc``)."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from lwpd import _lcc
from lwpd.problems import LeastSquares

#: Relative gradient error accepted. Measured worst case over every arrival subset of size
#: >= threshold (N = threshold + 3, m = 60, float64): K=1 3e-16, K=2 4e-15, K=3 6e-15,
#: K=4 3.5e-14 (K=5 1.6e-13, K=6 6.7e-13); the bounds leave a wide margin for other BLAS.
TOL = {1: 1e-6, 2: 1e-6, 3: 1e-6, 4: 1e-9}
EXTRA_WORKERS = 3


def _data(seed, m=23, d=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d))
    y = X @ rng.normal(size=d) + 0.3 * rng.normal(size=m) + 1.0
    theta = rng.normal(size=d + 1)
    return X, y, theta


def _exact_gradient(X, y, theta, alpha):
    """Direct numpy gradient of 1/(2m) ||X w + b - y||^2 + alpha/2 ||w||^2."""
    m = X.shape[0]
    A = np.hstack([X, np.ones((m, 1))])
    g = A.T @ (A @ theta - y) / m
    g[:-1] += alpha * theta[:-1]
    return g


def _lcc_gradient(X, y, theta, K, N, arrived, alpha):
    blocks = _lcc.split_blocks(X, y, K)
    betas, alphas = _lcc.lcc_points(K, N)
    coded = _lcc.encode(blocks, betas, alphas)
    results = np.array([_lcc.worker_result(coded[i], theta) for i in arrived])
    est = _lcc.decode(results, alphas[arrived], betas, K)
    return _lcc.full_gradient(est, theta, X.shape[0], alpha)


@pytest.mark.parametrize("K", [1, 2, 3, 4])
def test_decoded_gradient_matches_exact(K):
    X, y, theta = _data(K)
    alpha = 0.1
    N = _lcc.recovery_threshold(K) + EXTRA_WORKERS
    exact = _exact_gradient(X, y, theta, alpha)
    # The reference agrees with the project's LeastSquares problem.
    np.testing.assert_allclose(LeastSquares(X, y, alpha=alpha).gradient(theta), exact, rtol=1e-12, atol=1e-12)
    rng = np.random.default_rng(100 + K)
    worst = 0.0
    for size in range(_lcc.recovery_threshold(K), N + 1):
        for _ in range(4):
            arrived = rng.choice(N, size=size, replace=False)
            g = _lcc_gradient(X, y, theta, K, N, arrived, alpha)
            worst = max(worst, _lcc.reconstruction_error(g, exact))
    assert worst <= TOL[K], f"K={K}: worst relative error {worst:.3e}"


@pytest.mark.parametrize("K", [2, 3, 4])
def test_independent_of_which_threshold_subset_arrived(K):
    X, y, theta = _data(10 + K)
    N = _lcc.recovery_threshold(K) + EXTRA_WORKERS
    t = _lcc.recovery_threshold(K)
    blocks = _lcc.split_blocks(X, y, K)
    betas, alphas = _lcc.lcc_points(K, N)
    coded = _lcc.encode(blocks, betas, alphas)
    results = np.array([_lcc.worker_result(c, theta) for c in coded])
    estimates = [
        _lcc.decode(results[list(s)], alphas[list(s)], betas, K) for s in itertools.combinations(range(N), t)
    ]
    exact = _lcc.exact_block_sum(blocks, theta)
    for est in estimates:
        assert _lcc.reconstruction_error(est, estimates[0]) <= TOL[K]
        assert _lcc.reconstruction_error(est, exact) <= TOL[K]


@pytest.mark.parametrize("K", [1, 2, 3, 4])
def test_fewer_than_threshold_raises(K):
    X, y, theta = _data(K)
    N = _lcc.recovery_threshold(K) + EXTRA_WORKERS
    blocks = _lcc.split_blocks(X, y, K)
    betas, alphas = _lcc.lcc_points(K, N)
    coded = _lcc.encode(blocks, betas, alphas)
    n = _lcc.recovery_threshold(K) - 1
    results = np.array([_lcc.worker_result(c, theta) for c in coded[:n]]).reshape(n, theta.size)
    with pytest.raises(ValueError, match="results"):
        _lcc.decode(results, alphas[:n], betas, K)


def test_padding_rows_do_not_change_gradient():
    X, y, theta = _data(5, m=10)
    blocks = _lcc.split_blocks(X, y, 3)  # heights 4, 3, 3 -> padded to 4
    assert blocks.shape == (3, 4, X.shape[1] + 2)
    np.testing.assert_allclose(
        _lcc.full_gradient(_lcc.exact_block_sum(blocks, theta), theta, 10), _exact_gradient(X, y, theta, 0.0)
    )


@pytest.mark.parametrize("K,N", [(1, 1), (2, 3), (3, 5), (3, 9), (4, 7), (5, 15), (4, 12)])
def test_points_are_chebyshev_and_disjoint(K, N):
    betas, alphas = _lcc.lcc_points(K, N)
    np.testing.assert_allclose(betas, _lcc.chebyshev_points(K))
    assert np.all(np.abs(alphas) < 1) and len(np.unique(alphas)) == N
    assert np.min(np.abs(alphas[:, None] - betas[None, :])) > 1e-9


def test_recovery_threshold():
    assert [_lcc.recovery_threshold(k) for k in range(1, 6)] == [1, 3, 5, 7, 9]
    with pytest.raises(ValueError, match="K"):
        _lcc.recovery_threshold(0)


def test_validation_messages():
    betas, alphas = _lcc.lcc_points(2, 4)
    B = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="betas"):
        _lcc.encode(B, betas[:1], alphas)
    with pytest.raises(ValueError, match="disjoint"):
        _lcc.encode(B, betas, np.r_[alphas[:3], betas[0]])
    with pytest.raises(ValueError, match="alphas must be distinct"):
        _lcc.encode(B, betas, np.r_[alphas[:3], alphas[0]])
    with pytest.raises(ValueError, match="theta"):
        _lcc.worker_result(B[0], np.zeros(2))
    with pytest.raises(ValueError, match="arrived_alphas"):
        _lcc.decode(np.zeros((3, 3)), alphas[:2], betas, 2)
    with pytest.raises(ValueError, match="K"):
        _lcc.split_blocks(np.zeros((2, 1)), np.zeros(2), 3)
    with pytest.raises(ValueError, match="y"):
        _lcc.split_blocks(np.zeros((2, 1)), np.zeros(3), 1)


#: Every (K, N) with K <= 8 and N <= 60 the clustering test covers.
CLUSTERED = [(K, N) for K in range(2, 9) for N in sorted({_lcc.recovery_threshold(K) + 3, 16, 40, 60})
             if N >= _lcc.recovery_threshold(K)]


@pytest.mark.parametrize("K,N", CLUSTERED)
def test_clustered_workers_never_give_a_silently_wrong_gradient(K, N):
    """Every window of ``threshold`` consecutive workers (their Chebyshev points cluster: the
    worst subsets), and random subsets: the scheme's estimate is the exact gradient (NumPy
    oracle) to 1e-6, or there is none. The whole cluster always decodes."""
    from lwpd.schemes import LCC

    rng = np.random.default_rng(K * 100 + N)
    X = rng.normal(size=(12 * N, 5))
    problem = LeastSquares(X, X @ rng.normal(size=5) + 0.3 * rng.normal(size=12 * N) + 1.0)
    scheme = LCC(K)
    scheme.bind(problem, N, np.random.default_rng(0))
    theta = rng.normal(size=problem.n_params)
    tasks = scheme.tasks(theta)
    results = [task.fn(*task.args) for task in tasks]
    exact = problem.gradient(theta)
    threshold = scheme.threshold
    subsets = [np.arange(s, s + threshold) for s in range(N - threshold + 1)]
    subsets += [rng.choice(N, rng.integers(threshold, N + 1), replace=False) for _ in range(20)]
    subsets.append(np.arange(N))
    declined = 0
    for subset in subsets:
        scheme.begin()
        for worker in subset:
            scheme.fold(int(worker), results[worker])
        estimate = scheme.estimate()
        if estimate is None:
            declined += 1
            assert scheme.error_bound > 1e-8
            continue
        assert np.linalg.norm(estimate - exact) <= 1e-6 * np.linalg.norm(exact), (subset, scheme.error_bound)
    assert estimate is not None  # all N arrived: spread over [-1, 1]
    if (K, N) == (5, 60):
        assert declined > 0  # the case: workers 0..8 gave a relative error of 0.30


def test_a_clustered_step_waits_for_more_results():
    """K = 5 of N = 60 under first-k: the first nine results alone would be ill-conditioned,
    so the step waits on; every step that decodes is exact to 1e-6."""
    from lwpd import train
    from lwpd.cluster import SimulatedCluster
    from lwpd.schemes import LCC
    from lwpd.stragglers import Trace

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    problem = LeastSquares(X, X @ rng.normal(size=5) + 1.0)
    in_order = Trace(1.0 + 0.01 * np.arange(60)[None, :])  # worker i arrives i-th: 0..8 first, clustered near +1
    h = train(problem, LCC(5), SimulatedCluster(60, in_order, seed=0), policy="first_k", max_steps=5,
              progress=False, seed=0)
    assert len(h) == 5 and max(h.grad_error) <= 1e-6 and min(h.received) > 9


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(5, 60, 3.0), (12, 48, 3.0), (30, 100, 3.0), (40, 120, None)]))
def test_the_error_bound_screen_answers_as_the_full_bound_does(seed, sizes):
    """After every arrival: the screen says "above the limit" exactly when decode_error_bound
    does, returns a lower bound on it there and the bound itself below it, and decodes what
    decode does from the decodable points. Arrival orders: near worker order (the first
    workers' points cluster: many refusals in a row) or random (gaps: a few)."""
    K, N, jitter = sizes
    limit = 1e-8
    rng = np.random.default_rng(seed)
    betas, alphas = _lcc.lcc_points(K, N)
    screen = _lcc.ErrorBoundScreen(alphas, K)
    order = rng.permutation(N) if jitter is None else np.argsort(np.arange(N) + rng.normal(0.0, jitter, N))
    results = rng.standard_normal((N, 3))
    threshold = _lcc.recovery_threshold(K)
    decodable = refused = 0
    for n in range(threshold - 1, N + 1):
        arrived = np.sort(order[:n])
        screened, exact = screen.bound(arrived, limit), _lcc.decode_error_bound(alphas[arrived], K)
        assert (screened > limit) == (exact > limit), (n, screened, exact)
        if exact > limit:
            # a lower bound, up to the SVD's own rounding: relative error about eps * cond = the bound itself
            assert screened <= exact * (1 + 1e-6 + 10 * exact) or not np.isfinite(exact)
            refused += n >= threshold
            continue
        decodable += 1
        assert screened == pytest.approx(exact, rel=1e-6)
        # two solvers of one fit with condition number up to limit / eps: they agree to about the limit
        ours, theirs = screen.decode(results[arrived], arrived, betas), _lcc.decode(results[arrived], alphas[arrived], betas, K)
        assert np.linalg.norm(ours - theirs) <= 10 * limit * np.linalg.norm(theirs)
    assert decodable > 0 and (refused > 0 or jitter is None)


def test_the_error_bound_screen_keeps_no_state_across_a_new_step():
    """A new step's points need not contain the last step's: the answers stay exact."""
    betas, alphas = _lcc.lcc_points(12, 48)
    screen = _lcc.ErrorBoundScreen(alphas, 12)
    for arrived in (np.arange(30), np.arange(18, 48), np.arange(0, 48, 2), np.arange(23)):
        assert (screen.bound(arrived, 1e-8) > 1e-8) == (_lcc.decode_error_bound(alphas[arrived], 12) > 1e-8)
    assert screen.bound(np.arange(10), 1e-8) == np.inf  # fewer than the threshold
    with pytest.raises(IndexError, match="arrived"):
        screen.bound([48], 1e-8)
