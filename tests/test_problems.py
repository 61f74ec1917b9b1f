"""Tests for lwpd.problems: gradients, directional derivatives, Lipschitz bounds, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lwpd import _config
from lwpd import Partition, block_codebook, identity_codebook, projective_codebook, random_codebook
from lwpd.problems import LeastSquares, Logistic, Softmax

M, D, K = 40, 6, 3


def _data(kind: str, sparse: bool, seed: int = 0, m: int = M, d: int = D):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    if sparse:
        X[rng.random((m, d)) < 0.6] = 0.0
        X = sp.csr_matrix(X)
    if kind == "ls":
        y = rng.standard_normal(m)
    elif kind == "logistic":
        y = np.where(rng.random(m) < 0.5, "neg", "pos")
    else:
        y = rng.integers(0, K, size=m) * 10 + 5  # labels 5, 15, 25
    return X, y


def _make(kind: str, sparse: bool = False, alpha: float = 0.0, seed: int = 0):
    X, y = _data(kind, sparse, seed)
    cls = {"ls": LeastSquares, "logistic": Logistic, "softmax": Softmax}[kind]
    return cls(X, y, alpha=alpha)


CASES = [
    (kind, sparse, alpha)
    for kind in ("ls", "logistic", "softmax")
    for sparse in (False, True)
    for alpha in (0.0, 0.3)
]


def _fd_gradient(prob, theta, rows, h=1e-6):
    g = np.empty_like(theta)
    for p in range(theta.size):
        e = np.zeros_like(theta)
        e[p] = h
        g[p] = (prob.loss(theta + e, rows) - prob.loss(theta - e, rows)) / (2 * h)
    return g


@pytest.mark.parametrize("kind,sparse,alpha", CASES)
@pytest.mark.parametrize("use_rows", [False, True])
def test_gradient_matches_finite_differences(kind, sparse, alpha, use_rows):
    prob = _make(kind, sparse, alpha)
    rng = np.random.default_rng(1)
    theta = 0.5 * rng.standard_normal(prob.n_params)
    rows = rng.choice(M, size=15, replace=False) if use_rows else None
    g = prob.gradient(theta, rows)
    assert g.shape == (prob.n_params,)
    np.testing.assert_allclose(g, _fd_gradient(prob, theta, rows), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["ls", "logistic", "softmax"])
def test_sparse_and_dense_agree(kind):
    X, y = _data(kind, True)
    cls = {"ls": LeastSquares, "logistic": Logistic, "softmax": Softmax}[kind]
    a, b = cls(X, y, alpha=0.1), cls(X.toarray(), y, alpha=0.1)
    theta = np.random.default_rng(2).standard_normal(a.n_params)
    rows = np.array([3, 3, 7, 11])
    assert a.loss(theta, rows) == pytest.approx(b.loss(theta, rows), rel=1e-12)
    np.testing.assert_allclose(a.gradient(theta), b.gradient(theta), rtol=1e-12, atol=1e-14)
    assert a.lipschitz() == pytest.approx(b.lipschitz(), rel=1e-9)


def test_rows_average_with_repeats():
    prob = _make("logistic", alpha=0.2)
    theta = np.random.default_rng(3).standard_normal(prob.n_params)
    rows = np.array([1, 1, 4])
    expected = (2 * prob.gradient(theta, [1]) + prob.gradient(theta, [4])) / 3
    np.testing.assert_allclose(prob.gradient(theta, rows), expected, rtol=1e-12)
    np.testing.assert_allclose(prob.gradient(theta, np.arange(M)), prob.gradient(theta), rtol=1e-12)


def _codebooks(n: int, seed: int):
    yield random_codebook(2 * n, n, kind="gaussian", seed=seed)
    yield random_codebook(3 * n, n, kind="sparse", weight=2, seed=seed)
    part = Partition.uniform(n, 4)
    yield block_codebook(lambda b: projective_codebook(b, q=3, max_weight=2), part)


@pytest.mark.parametrize("kind,sparse,alpha", CASES)
def test_directional_derivatives_match_gradient(kind, sparse, alpha):
    prob = _make(kind, sparse, alpha)
    rng = np.random.default_rng(4)
    theta = rng.standard_normal(prob.n_params)
    for cb in _codebooks(prob.n_params, seed=5):
        V = cb.to_dense()
        for rows in (None, rng.choice(M, size=12, replace=True)):
            g = prob.gradient(theta, rows)
            full = prob.directional_derivatives(theta, cb, np.arange(len(cb)), rows)
            np.testing.assert_allclose(full, V @ g, rtol=1e-10, atol=1e-12)
            sub = rng.choice(len(cb), size=min(7, len(cb)), replace=True)
            part = prob.directional_derivatives(theta, cb, sub, rows)
            np.testing.assert_allclose(part, V[sub] @ g, rtol=1e-10, atol=1e-12)


def test_directional_derivatives_identity_and_empty():
    prob = _make("softmax", True, 0.5)
    theta = np.random.default_rng(6).standard_normal(prob.n_params)
    cb = identity_codebook(prob.n_params)
    np.testing.assert_allclose(
        prob.directional_derivatives(theta, cb, np.arange(prob.n_params)), prob.gradient(theta), rtol=1e-12
    )
    # A single intercept coordinate, a single weight coordinate, scalar index.
    b_coord = prob.n_features  # class 0's intercept
    assert prob.directional_derivatives(theta, cb, b_coord)[0] == pytest.approx(prob.gradient(theta)[b_coord])
    assert prob.directional_derivatives(theta, cb, np.array([], dtype=int)).shape == (0,)


@pytest.mark.parametrize("sparse", [False, True])
def test_directional_derivatives_read_only_touched_columns(sparse):
    """A few touched columns are gathered: the slice handed to the contraction holds only
    the codewords' features; with most touched, one product over all columns is used
    instead (faster); the values agree either way."""
    X, y = _data("ls", sparse, d=40)
    prob, reference = LeastSquares(X, y), LeastSquares(X, y)
    seen = []
    X = prob.X

    class Spy(type(X)):
        def __getitem__(self, key):
            out = super().__getitem__(key)
            if isinstance(key, tuple):
                seen.append(out.shape[1])
            return out

    prob._X = Spy(X) if sparse else X.view(Spy)
    cb = identity_codebook(prob.n_params)
    theta = np.random.default_rng(15).standard_normal(prob.n_params)
    few, most = [2], list(range(prob.n_features))
    for chosen in (few, most):
        seen.clear()
        np.testing.assert_allclose(prob.directional_derivatives(theta, cb, chosen), reference.gradient(theta)[chosen],
                                   rtol=1e-12, atol=1e-14)
        gathers = len(chosen) <= _config.ALL_COLUMNS_FRACTION * prob.n_features  # 1 of 40 does, 40 do not
        assert seen == ([len(chosen)] if gathers else [])


def test_layout_pack_unpack():
    prob = _make("softmax")
    d = prob.n_features
    theta = np.arange(prob.n_params, dtype=float)
    W, b = prob.unpack(theta)
    assert W.shape == (K, d) and b.shape == (K,)
    np.testing.assert_array_equal(b, theta[d :: d + 1])
    np.testing.assert_array_equal(prob.pack(W, b), theta)
    ls = _make("ls")
    w, b0 = ls.unpack(np.arange(D + 1.0))
    assert b0 == D and w.tolist() == list(range(D))
    np.testing.assert_array_equal(ls.pack(w, b0), np.arange(D + 1.0))
    # Intercepts are not penalised.
    prob_a = _make("softmax", alpha=10.0)
    t = np.zeros(prob.n_params)
    t[d] = 3.0
    assert prob_a.loss(t) == pytest.approx(prob.loss(t))


def _class_probabilities(X, W, b):
    """Softmax of the scores ``X W^T + b``, computed directly (the oracle)."""
    Z = X @ W.T + b
    P = np.exp(Z - Z.max(1, keepdims=True))
    return P / P.sum(1, keepdims=True)


def test_softmax_scores_layout():
    X, y = _data("softmax", False)
    prob = Softmax(X, y)
    theta = np.random.default_rng(7).standard_normal(prob.n_params)
    P = _class_probabilities(X, *prob.unpack(theta))
    codes = np.searchsorted(prob.classes_, y)
    assert prob.loss(theta) == pytest.approx(-np.mean(np.log(P[np.arange(M), codes])), rel=1e-12)


def test_logistic_loss_is_sklearn_log_loss():
    from sklearn.metrics import log_loss

    X, y = _data("logistic", False)
    prob = Logistic(X, y)
    assert prob.classes_.tolist() == ["neg", "pos"]
    theta = np.random.default_rng(8).standard_normal(prob.n_params)
    w, b = prob.unpack(theta)
    p = 1.0 / (1.0 + np.exp(-(X @ w + b)))
    assert prob.loss(theta) == pytest.approx(log_loss(y, p), rel=1e-10)


def test_softmax_loss_is_sklearn_log_loss():
    from sklearn.metrics import log_loss

    X, y = _data("softmax", True)
    prob = Softmax(X, y)
    theta = np.random.default_rng(9).standard_normal(prob.n_params)
    P = _class_probabilities(X, *prob.unpack(theta))
    assert prob.loss(theta) == pytest.approx(log_loss(y, P, labels=prob.classes_), rel=1e-10)


def test_optimum_matches_sklearn_estimators():
    from sklearn.linear_model import LogisticRegression, Ridge

    X, y = _data("ls", False)
    alpha = 0.05
    ridge = Ridge(alpha=M * alpha).fit(X, y)
    ls = LeastSquares(X, y, alpha=alpha)
    g = ls.gradient(ls.pack(ridge.coef_, ridge.intercept_))
    assert np.linalg.norm(g) < 1e-8

    X, y = _data("logistic", False)
    clf = LogisticRegression(C=1.0 / (M * alpha), tol=1e-12, max_iter=10_000).fit(X, y)
    lg = Logistic(X, y, alpha=alpha)
    g = lg.gradient(lg.pack(clf.coef_, clf.intercept_))
    assert np.linalg.norm(g) < 1e-6


@pytest.mark.parametrize("kind,sparse,alpha", CASES)
def test_lipschitz_is_an_upper_bound(kind, sparse, alpha):
    prob = _make(kind, sparse, alpha)
    L = prob.lipschitz()
    rng = np.random.default_rng(10)
    est = 0.0
    for _ in range(60):
        a = rng.standard_normal(prob.n_params) * 0.3
        b = a + rng.standard_normal(prob.n_params) * rng.choice([1e-3, 0.1, 1.0])
        est = max(est, np.linalg.norm(prob.gradient(a) - prob.gradient(b)) / np.linalg.norm(a - b))
    assert est <= L * (1 + 1e-9)
    if kind == "ls":  # for least squares the bound is the exact top Hessian eigenvalue (alpha aside)
        X = prob.X.toarray() if sp.issparse(prob.X) else prob.X
        Xt = np.hstack([X, np.ones((M, 1))])
        assert L == pytest.approx(np.linalg.norm(Xt, 2) ** 2 / M + alpha, rel=1e-10)
    assert prob.lipschitz() == L  # cached


def test_lipschitz_iterative_path(monkeypatch):
    import lwpd.problems as problems

    # Wide data (m < d + 1) uses the m x m Gram matrix.
    Xw, yw = _data("ls", False, m=5, d=20)
    Xt = np.hstack([Xw, np.ones((5, 1))])
    assert LeastSquares(Xw, yw).lipschitz() == pytest.approx(np.linalg.norm(Xt, 2) ** 2 / 5, rel=1e-10)
    # Beyond the Gram-size limit: Lanczos, inflated by a small margin (never below exact).
    X, y = _data("ls", True, m=60, d=30)
    exact = LeastSquares(X, y).lipschitz()
    monkeypatch.setattr(_config, "EXACT_GRAM_LIMIT", 4)
    approx = LeastSquares(X, y).lipschitz()
    assert approx >= exact
    assert approx == pytest.approx(exact, rel=1e-5)


def test_gradient_descent_with_lipschitz_step_decreases_loss():
    prob = _make("softmax", True, 0.01)
    theta = np.zeros(prob.n_params)
    step = 1.0 / prob.lipschitz()
    losses = [prob.loss(theta)]
    for _ in range(30):
        theta = theta - step * prob.gradient(theta)
        losses.append(prob.loss(theta))
    assert np.all(np.diff(losses) <= 1e-12)


def test_stable_at_large_scores():
    X = np.array([[1.0], [-1.0]])
    lg = Logistic(X, [0, 1])
    theta = np.array([1e4, 0.0])
    assert np.isfinite(lg.loss(theta)) and lg.loss(theta) == pytest.approx(1e4)
    assert np.all(np.isfinite(lg.gradient(theta)))
    sm = Softmax(X, [0, 1])
    t = np.array([1e4, 0.0, -1e4, 0.0])
    assert np.isfinite(sm.loss(t)) and np.all(np.isfinite(sm.gradient(t)))


def test_repr_and_properties():
    prob = _make("softmax", True)
    assert prob.n_samples == M and prob.n_features == D and prob.n_classes == K
    assert prob.n_params == K * (D + 1)
    assert "Softmax" in repr(prob) and "sparse" in repr(prob)
    assert sp.issparse(prob.X)


# ---------------------------------------------------------------------- errors
def test_errors_in_constructor():
    X, y = _data("ls", False)
    with pytest.raises(ValueError, match="X must be 2-D"):
        LeastSquares(X[0], y)
    with pytest.raises(ValueError, match="y must have one entry per row of X"):
        LeastSquares(X, y[:-1])
    with pytest.raises(ValueError, match="y must be 1-D"):
        LeastSquares(X, y[:, None])
    bad = X.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="X must be finite"):
        LeastSquares(bad, y)
    with pytest.raises(ValueError, match="X must be finite"):
        LeastSquares(sp.csr_matrix(bad), y)
    ybad = y.copy()
    ybad[0] = np.inf
    with pytest.raises(ValueError, match="y must be finite"):
        LeastSquares(X, ybad)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        LeastSquares(X, y, alpha=-1.0)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        LeastSquares(X, y, alpha="big")
    with pytest.raises(TypeError, match="X must be a real numeric array"):
        LeastSquares(np.array([["a"]]), ["b"])
    with pytest.raises(ValueError, match="at least one row and one column"):
        LeastSquares(np.zeros((3, 0)), np.zeros(3))
    with pytest.raises(ValueError, match="exactly 2 distinct labels"):
        Logistic(X, np.arange(M) % 3)
    with pytest.raises(ValueError, match="exactly 2 distinct labels"):
        Logistic(X, np.ones(M))
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        Softmax(X, np.zeros(M))
    ynan = (np.arange(M) % 2).astype(float)
    ynan[1] = np.nan
    with pytest.raises(ValueError, match="y must be finite"):
        Logistic(X, ynan)


def test_errors_in_methods():
    prob = _make("softmax")
    theta = np.zeros(prob.n_params)
    with pytest.raises(ValueError, match=f"theta must have length n_params = {prob.n_params}"):
        prob.loss(theta[:-1])
    with pytest.raises(ValueError, match="theta must be finite"):
        prob.gradient(np.full(prob.n_params, np.nan))
    with pytest.raises(IndexError, match="rows must lie in"):
        prob.loss(theta, rows=[M])
    with pytest.raises(ValueError, match="rows must select at least one sample"):
        prob.gradient(theta, rows=np.array([], dtype=int))
    with pytest.raises(TypeError, match="rows must hold integer indices"):
        prob.gradient(theta, rows=np.ones(M, dtype=bool))
    cb = identity_codebook(prob.n_params)
    with pytest.raises(ValueError, match="codebook dim must equal n_params"):
        prob.directional_derivatives(theta, identity_codebook(prob.n_params + 1), [0])
    with pytest.raises(TypeError, match="codebook must be a lwpd.Codebook"):
        prob.directional_derivatives(theta, np.eye(prob.n_params), [0])
    with pytest.raises(IndexError, match="indices must lie in"):
        prob.directional_derivatives(theta, cb, [prob.n_params])
    with pytest.raises(TypeError, match="indices must hold integer indices"):
        prob.directional_derivatives(theta, cb, [0.5])
    with pytest.raises(ValueError, match="weights must have shape"):
        prob.pack(np.zeros((K, D + 1)))
    with pytest.raises(ValueError, match="intercept must be a scalar or have length"):
        prob.pack(np.zeros((K, D)), np.zeros(K + 1))


# ---------------------------------------------------------------------- sample weights, no intercept
def _make_weighted(kind: str, sparse: bool, alpha: float, weights, fit_intercept: bool = True):
    X, y = _data(kind, sparse)
    cls = {"ls": LeastSquares, "logistic": Logistic, "softmax": Softmax}[kind]
    return cls(X, y, alpha=alpha, sample_weight=weights, fit_intercept=fit_intercept)


@pytest.mark.parametrize("kind,sparse,alpha", CASES)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_weighted_gradient_and_derivatives_match_finite_differences(kind, sparse, alpha, fit_intercept):
    rng = np.random.default_rng(2)
    weights = rng.uniform(0.0, 3.0, size=M)
    prob = _make_weighted(kind, sparse, alpha, weights, fit_intercept)
    assert prob.n_params == prob.n_outputs * (D + int(fit_intercept))
    theta = 0.5 * rng.standard_normal(prob.n_params)
    for rows in (None, rng.choice(M, size=15, replace=False)):
        g = prob.gradient(theta, rows)
        np.testing.assert_allclose(g, _fd_gradient(prob, theta, rows), rtol=1e-6, atol=1e-7)
    cb = random_codebook(9, prob.n_params, kind="sparse", weight=3, seed=3)
    idx = np.arange(len(cb))
    np.testing.assert_allclose(prob.directional_derivatives(theta, cb, idx), cb.to_dense() @ prob.gradient(theta), atol=1e-12)


@pytest.mark.parametrize("kind", ["ls", "logistic", "softmax"])
@pytest.mark.parametrize("sparse", [False, True])
def test_integer_weights_equal_repeated_rows(kind, sparse):
    rng = np.random.default_rng(4)
    weights = rng.integers(0, 4, size=M)
    weights[0] = 2  # at least one positive
    X, y = _data(kind, sparse)
    cls = {"ls": LeastSquares, "logistic": Logistic, "softmax": Softmax}[kind]
    weighted = cls(X, y, alpha=0.2, sample_weight=weights)
    rep = np.repeat(np.arange(M), weights)
    repeated = cls(X[rep], np.asarray(y)[rep], alpha=0.2)
    theta = 0.3 * rng.standard_normal(weighted.n_params)
    assert weighted.loss(theta) == pytest.approx(repeated.loss(theta), rel=1e-12)
    np.testing.assert_allclose(weighted.gradient(theta), repeated.gradient(theta), rtol=1e-10, atol=1e-13)
    assert weighted.lipschitz() == pytest.approx(repeated.lipschitz(), rel=1e-9)


def test_weighted_shard_means_combine_into_the_full_mean():
    prob = _make_weighted("softmax", False, 0.1, np.random.default_rng(5).uniform(0.5, 2.0, M))
    theta = np.random.default_rng(6).standard_normal(prob.n_params)
    shards = np.array_split(np.random.default_rng(7).permutation(M), 4)
    combined = sum(s.size / M * prob.gradient(theta, s) for s in shards)
    np.testing.assert_allclose(combined, prob.gradient(theta), atol=1e-12)


@pytest.mark.parametrize("kind", ["ls", "logistic", "softmax"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_weighted_lipschitz_is_an_upper_bound(kind, sparse, fit_intercept):
    prob = _make_weighted(kind, sparse, 0.1, np.random.default_rng(8).uniform(0.0, 4.0, M), fit_intercept)
    rng = np.random.default_rng(9)
    L = prob.lipschitz()
    for _ in range(20):
        a, b = rng.standard_normal((2, prob.n_params))
        assert np.linalg.norm(prob.gradient(a) - prob.gradient(b)) <= L * np.linalg.norm(a - b) * (1 + 1e-9)
    if kind == "ls" and not fit_intercept:  # then the bound is the Hessian's top eigenvalue exactly
        H = np.column_stack([prob.gradient(e) - prob.gradient(np.zeros(prob.n_params)) for e in np.eye(prob.n_params)])
        assert L == pytest.approx(np.linalg.eigvalsh((H + H.T) / 2)[-1], rel=1e-9)


def test_weighted_lipschitz_iterative_path(monkeypatch):
    import lwpd.problems as problems

    weights = np.random.default_rng(10).uniform(0.0, 2.0, M)
    for fit_intercept in (True, False):
        exact = _make_weighted("ls", True, 0.0, weights, fit_intercept).lipschitz()
        monkeypatch.setattr(_config, "EXACT_GRAM_LIMIT", 1)
        lanczos = _make_weighted("ls", True, 0.0, weights, fit_intercept).lipschitz()
        assert exact <= lanczos <= exact * (1 + 3e-6)  # the Lanczos margin is 1e-6
        monkeypatch.undo()


def test_no_intercept_layout_and_sklearn_optimum():
    from scipy.optimize import minimize
    from sklearn.linear_model import LogisticRegression, Ridge

    X, y = _data("ls", False)
    w = np.random.default_rng(11).uniform(0.5, 2.0, M)
    prob = LeastSquares(X, y, alpha=0.05, sample_weight=w, fit_intercept=False)
    assert prob.n_params == D and not prob.fit_intercept
    W, b = prob.unpack(np.arange(D, dtype=float))
    assert b == 0.0 and W.tolist() == list(range(D))
    np.testing.assert_array_equal(prob.pack(W), np.arange(D))
    with pytest.raises(ValueError, match="intercept must be 0"):
        prob.pack(W, 1.0)
    # weighted ridge without intercept: alpha_sklearn = sum(w) * alpha
    H = np.column_stack([prob.gradient(e) - prob.gradient(np.zeros(D)) for e in np.eye(D)])
    theta = np.linalg.solve(H, -prob.gradient(np.zeros(D)))  # a quadratic: one Newton step
    ref = Ridge(alpha=0.05 * w.sum(), fit_intercept=False).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(theta, ref.coef_, atol=1e-10)
    # weighted softmax: C = 1 / (alpha * sum(w))
    Xs, ys = _data("softmax", False)
    sm = Softmax(Xs, ys, alpha=0.1, sample_weight=w)
    theta = minimize(sm.loss, np.zeros(sm.n_params), jac=sm.gradient, method="L-BFGS-B", options={"gtol": 1e-12}).x
    ref = LogisticRegression(C=1 / (0.1 * w.sum()), tol=1e-12, max_iter=10_000).fit(Xs, ys, sample_weight=w)
    Wt, bt = sm.unpack(theta)
    np.testing.assert_allclose(Wt, ref.coef_, atol=1e-5)
    np.testing.assert_allclose(bt, ref.intercept_, atol=1e-5)


def test_sample_weight_errors():
    X, y = _data("ls", False)
    with pytest.raises(ValueError, match="sample_weight must have one entry per row of X"):
        LeastSquares(X, y, sample_weight=np.ones(M - 1))
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        LeastSquares(X, y, sample_weight=-np.ones(M))
    with pytest.raises(ValueError, match="sample_weight must have a positive sum"):
        LeastSquares(X, y, sample_weight=np.zeros(M))
    bad = np.ones(M)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="sample_weight must be finite"):
        LeastSquares(X, y, sample_weight=bad)
    with pytest.raises(TypeError, match="fit_intercept must be True or False"):
        LeastSquares(X, y, fit_intercept="no")


def test_score_cache_is_invisible():
    """Scores and residuals over all rows are cached per theta: results match a fresh
    problem, cached arrays are read-only, and the cache is not pickled."""
    import pickle

    X, y = _data("softmax", False)
    prob, fresh = Softmax(X, y, alpha=0.1), Softmax(X, y, alpha=0.1)
    rng = np.random.default_rng(12)
    cb = identity_codebook(prob.n_params)
    for _ in range(3):
        theta = rng.standard_normal(prob.n_params)
        d = prob.directional_derivatives(theta, cb, np.arange(prob.n_params))
        np.testing.assert_array_equal(d, prob.directional_derivatives(theta, cb, np.arange(prob.n_params)))
        np.testing.assert_allclose(prob.gradient(theta), fresh.gradient(theta), rtol=1e-14)
        assert prob.loss(theta) == pytest.approx(fresh.loss(theta), rel=1e-14)
        np.testing.assert_allclose(d, fresh.gradient(theta), rtol=1e-12, atol=1e-14)
        theta[0] += 1.0  # the cache is keyed by value, not identity
        np.testing.assert_allclose(prob.gradient(theta), fresh.gradient(theta), rtol=1e-14)
    rows, _, _, Z, R, _ = prob._score_cache[None]  # all rows
    assert rows is None and not Z.flags.writeable and not R.flags.writeable
    assert pickle.loads(pickle.dumps(prob))._score_cache == {}


@pytest.mark.parametrize("kind", ["ls", "logistic", "softmax"])
@pytest.mark.parametrize("sparse", [False, True])
def test_scores_of_an_extrapolated_point_come_from_the_last_two_iterates(kind, sparse):
    """``extrapolated(point, theta, previous, w)`` with the losses at ``theta`` and ``previous``
    taken: the shard tasks at ``point`` read no data for their scores (formed from the two
    iterates', affine in the parameters) and give a fresh problem's gradient; with either loss
    untaken it is a no-op; and a shard at the last loss's parameters reuses its scores too."""
    X, y = _data(kind, sparse)
    make = {"ls": LeastSquares, "logistic": Logistic, "softmax": Softmax}[kind]
    prob, fresh = make(X, y, alpha=0.1), make(X, y, alpha=0.1)
    shard = np.arange(1, X.shape[0], 2)
    shard.flags.writeable = False
    cb = identity_codebook(prob.n_params)
    rng = np.random.default_rng(21)
    previous, theta = rng.standard_normal(prob.n_params), rng.standard_normal(prob.n_params)
    point = theta + 0.6 * (theta - previous)
    prob.extrapolated(point, theta, previous, 0.6)  # no loss taken yet: nothing known
    assert prob._recent_scores(prob._theta_matrix(point)) is None
    prob.loss(previous), prob.loss(theta)
    prob.extrapolated(point, theta, previous, 0.6)
    known = prob._recent_scores(prob._theta_matrix(point))
    assert known is not None and not known.flags.writeable
    Xd = X.toarray() if sparse else X
    T = prob._theta_matrix(point)
    np.testing.assert_allclose(known, Xd @ T[:, :-1].T + T[:, -1], rtol=1e-12, atol=1e-12)
    d = prob.directional_derivatives(point, cb, np.arange(prob.n_params), rows=shard)
    np.testing.assert_allclose(d, fresh.gradient(point, rows=shard), rtol=1e-10, atol=1e-12)
    d = prob.directional_derivatives(theta, cb, np.arange(prob.n_params), rows=shard)  # the loss's parameters
    np.testing.assert_allclose(d, fresh.gradient(theta, rows=shard), rtol=1e-12, atol=1e-14)
    assert len(prob._recent) <= _config.RECENT_SCORES


def test_training_with_reused_scores_takes_the_same_steps():
    """An accelerated fit whose tasks read their scores from the last two iterates' (the
    default) and one that computes every task's scores from the data agree to rounding."""
    from lwpd import train
    from lwpd.cluster import SimulatedCluster
    from lwpd.schemes import Uncoded

    X, y = _data("logistic", False)
    runs, probs = {}, {}
    for reuse in (True, False):
        prob = probs[reuse] = Logistic(X, y, alpha=0.1)
        if not reuse:
            prob.extrapolated = lambda *args: None
            prob._remember_scores = lambda T, Z: None
        runs[reuse] = train(prob, Uncoded(), SimulatedCluster(4, seed=0), acceleration="nesterov", policy="first_k",
                            max_steps=40, progress=False, seed=0)
    assert len(probs[True]._recent) >= 2 and not probs[False]._recent
    np.testing.assert_allclose(runs[True].loss, runs[False].loss, rtol=1e-12)
    np.testing.assert_allclose(runs[True].theta, runs[False].theta, rtol=1e-9, atol=1e-12)


def test_scores_too_large_to_keep_are_not_kept(monkeypatch):
    X, y = _data("logistic", False)
    monkeypatch.setattr(_config, "RECENT_SCORES_MAX_BYTES", 8 * X.shape[0] - 1)  # one float short
    prob, theta = Logistic(X, y, alpha=0.1), np.ones(X.shape[1] + 1)
    assert prob.loss(theta) == pytest.approx(Logistic(X, y, alpha=0.1).loss(theta), rel=1e-15)
    assert not prob._recent


def test_read_only_shards_are_cached_and_writable_row_arrays_are_not():
    """A read-only index array (a scheme's shard) keeps its rows and scores per theta; a
    writable one could change in place, so it is never cached."""
    X, y = _data("softmax", False)
    prob, fresh = Softmax(X, y, alpha=0.1), Softmax(X, y, alpha=0.1)
    shard = np.arange(0, X.shape[0], 3)
    shard.flags.writeable = False
    mutable = np.arange(1, X.shape[0], 3)
    cb = identity_codebook(prob.n_params)
    theta = np.random.default_rng(14).standard_normal(prob.n_params)
    for rows in (shard, mutable):
        np.testing.assert_allclose(prob.gradient(theta, rows=rows), fresh.gradient(theta, rows=rows), rtol=1e-14)
        d = prob.directional_derivatives(theta, cb, np.arange(prob.n_params), rows=rows)
        np.testing.assert_allclose(d, fresh.gradient(theta, rows=rows), rtol=1e-12, atol=1e-14)
    entry = prob._score_cache[id(shard)]
    assert entry[0] is shard and np.array_equal(entry[2].reshape(-1), theta)
    assert not any(e[0] is mutable for e in prob._score_cache.values())
    mutable[:] = np.arange(2, X.shape[0], 3)[: mutable.size]  # changed in place: never stale
    np.testing.assert_allclose(prob.gradient(theta, rows=mutable), fresh.gradient(theta, rows=mutable), rtol=1e-14)
    theta2 = theta + 1.0
    np.testing.assert_allclose(prob.gradient(theta2, rows=shard), fresh.gradient(theta2, rows=shard), rtol=1e-14)


def test_fortran_order_is_kept_and_agrees():
    X, y = _data("logistic", False)
    c_prob, f_prob = Logistic(X, y, alpha=0.1), Logistic(np.asfortranarray(X), y, alpha=0.1)
    assert c_prob.X.flags.c_contiguous and f_prob.X.flags.f_contiguous
    theta = np.random.default_rng(13).standard_normal(c_prob.n_params)
    cb = random_codebook(12, c_prob.n_params, kind="sparse", weight=2, seed=0)
    np.testing.assert_allclose(f_prob.gradient(theta), c_prob.gradient(theta), rtol=1e-13)
    np.testing.assert_allclose(f_prob.directional_derivatives(theta, cb, np.arange(12)),
                               c_prob.directional_derivatives(theta, cb, np.arange(12)), rtol=1e-13)


def test_lcc_refuses_weighted_or_interceptless_problems():
    from lwpd.schemes import LCC

    X, y = _data("ls", False)
    for prob in (LeastSquares(X, y, sample_weight=np.ones(M)), LeastSquares(X, y, fit_intercept=False)):
        with pytest.raises(ValueError, match="LCC needs an unweighted LeastSquares problem with an intercept"):
            LCC(2).bind(prob, 4, np.random.default_rng(0))
