"""Tests for lwpd.sklearn: scikit-learn compatibility, agreement with scikit-learn's own
solvers (closed forms, lbfgs), accuracy under stragglers, model selection, and errors."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import (
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from lwpd.cluster import SimulatedCluster
from lwpd.schemes import LWPD, registry
from lwpd.sklearn import CodedGDClassifier, CodedGDRegressor
from lwpd.stragglers import ShiftedExponential

#: Coefficient agreement with scikit-learn's solvers after enough noiseless steps: gradient
#: descent converges linearly, so on these well-conditioned problems the iterates reach the
#: optimum to ~1e-10; the bound leaves room for the reference solver's own tolerance.
COEF_ATOL = 1e-6


# ---------------------------------------------------------------------- scikit-learn's checks
@parametrize_with_checks([CodedGDClassifier(max_iter=200, n_workers=4), CodedGDRegressor(max_iter=200, n_workers=4)])
@pytest.mark.slow
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        # max_iter=200 (the default is 1000) on the checks' unscaled toy data, and 4 workers (the
        # default is 16): the API is what they test, not convergence or the cluster's size
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ---------------------------------------------------------------------- data
def _regression(m=300, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = X @ rng.standard_normal(d) + 2.0 + 0.3 * rng.standard_normal(m)
    return X, y


def _classification(n_classes=2, m=200, d=5, seed=0):
    X, y = make_classification(m, d, n_informative=min(4, d), n_redundant=0, n_classes=n_classes, n_clusters_per_class=1, flip_y=0.1,
                               class_sep=0.8, random_state=seed)
    return X, y


def _ridge_closed_form(X, y, alpha, sample_weight=None, fit_intercept=True):
    """argmin sum_i s_i (x_i w + b - y_i)^2 + alpha ||w||^2 from the normal equations."""
    s = np.ones(len(y)) if sample_weight is None else sample_weight
    A = np.column_stack([X, np.ones(len(y))]) if fit_intercept else X
    P = alpha * np.eye(A.shape[1])
    if fit_intercept:
        P[-1, -1] = 0.0  # the intercept is not penalised
    theta = np.linalg.solve(A.T @ (s[:, None] * A) + P, A.T @ (s * y))
    return (theta[:-1], theta[-1]) if fit_intercept else (theta, 0.0)


def _noiseless(**kw):
    """No stragglers and exact decoding: the fit is (accelerated) gradient descent, stopped by
    the wrappers' own gradient test at a tolerance far below ``COEF_ATOL`` (``max_iter`` only
    caps it), on 8 workers, not the default 16: the result is the same, in half the tasks."""
    return dict(max_iter=kw.pop("max_iter", 400), tol=kw.pop("tol", 1e-10), random_state=0, n_workers=kw.pop("n_workers", 8), **kw)


# ---------------------------------------------------------------------- agreement with solvers
@pytest.mark.parametrize(
    "estimator,alpha",
    [(LinearRegression(), 0.0), (Ridge(alpha=5.0), 5.0), (SGDRegressor(alpha=0.01), 0.01 * 300),
     (Ridge(alpha=5.0, fit_intercept=False), 5.0)],
    ids=["linear", "ridge", "sgd", "ridge-no-intercept"],
)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.slow
def test_regressor_matches_closed_form(estimator, alpha, weighted):
    X, y = _regression()
    sw = np.random.default_rng(1).uniform(0.2, 3.0, len(y)) if weighted else None
    if weighted and isinstance(estimator, SGDRegressor):
        alpha = 0.01 * len(y)  # SGD's objective: (1/m) sum s_i l_i + alpha/2 ||w||^2
    reg = CodedGDRegressor(estimator, **_noiseless()).fit(X, y, sample_weight=sw)
    w, b = _ridge_closed_form(X, y, alpha, sw, estimator.fit_intercept)
    np.testing.assert_allclose(reg.coef_, w, atol=COEF_ATOL)
    assert reg.intercept_ == pytest.approx(b, abs=COEF_ATOL)
    if not estimator.fit_intercept:
        assert reg.intercept_ == 0.0
    np.testing.assert_allclose(reg.estimator_.predict(X), reg.predict(X), rtol=1e-12)
    if isinstance(estimator, Ridge):  # scikit-learn's own solver, too
        ref = clone_fit(estimator, X, y, sw)
        np.testing.assert_allclose(reg.coef_, ref.coef_, atol=COEF_ATOL)


def clone_fit(estimator, X, y, sample_weight=None, **params):
    from sklearn.base import clone

    return clone(estimator).set_params(**params).fit(X, y, sample_weight=sample_weight)


# Without a penalty the multiclass softmax parametrisation has no unique minimiser (a common
# shift of the classes' weights leaves the loss unchanged), so that case is binary only.
@pytest.mark.parametrize(
    "n_classes,case",
    [(k, case) for k in (2, 3) for case in ("l2", "l2-weighted", "no-intercept", "sgd")] + [(2, "no-penalty")],
)
@pytest.mark.slow
def test_classifier_matches_lbfgs(n_classes, case):
    X, y = _classification(n_classes)
    m = len(y)
    sw = np.random.default_rng(2).uniform(0.2, 3.0, m) if case == "l2-weighted" else None
    ref_est = LogisticRegression(C=0.1, tol=1e-12, max_iter=10_000)
    if case == "no-intercept":
        est = LogisticRegression(C=0.1, fit_intercept=False)
        ref_est.set_params(fit_intercept=False)
    elif case == "sgd":
        est = SGDClassifier(loss="log_loss", alpha=0.03)
        ref_est.set_params(C=1.0 / (0.03 * m))  # same objective up to a factor
    elif case == "no-penalty":
        est = LogisticRegression(C=np.inf)
        ref_est.set_params(C=np.inf)
    else:
        est = LogisticRegression(C=0.1)
    # a cap only (the gradient test stops the fit in about 50 steps); without a penalty only the
    # data's curvature conditions the problem
    steps = 3000 if case == "no-penalty" else 800
    clf = CodedGDClassifier(est, **_noiseless(max_iter=steps)).fit(X, y, sample_weight=sw)
    ref = ref_est.fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(clf.coef_, ref.coef_, atol=COEF_ATOL)
    if n_classes > 2:  # softmax is blind to a common shift of the intercepts: compare centred
        np.testing.assert_allclose(clf.intercept_ - clf.intercept_.mean(), ref.intercept_ - ref.intercept_.mean(), atol=COEF_ATOL)
    else:
        np.testing.assert_allclose(clf.intercept_, ref.intercept_, atol=COEF_ATOL)
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X), atol=COEF_ATOL)
    assert clf.classes_.tolist() == ref.classes_.tolist()
    if case == "no-intercept":
        assert np.all(clf.intercept_ == 0.0)


def test_estimator_is_a_native_fitted_clone():
    X, y = _classification(3)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    base = LogisticRegression(C=0.5)
    clf = CodedGDClassifier(base, max_iter=100, tol=None, random_state=0).fit(df, np.array(["a", "b", "c"])[y])
    assert clf.estimator_ is not base and not hasattr(base, "coef_")
    assert type(clf.estimator_) is LogisticRegression
    assert clf.feature_names_in_.tolist() == df.columns.tolist() and clf.n_features_in_ == X.shape[1]
    np.testing.assert_array_equal(clf.estimator_.predict(df), clf.predict(df))
    np.testing.assert_allclose(clf.estimator_.predict_proba(df), clf.predict_proba(df), rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(df), np.log(clf.predict_proba(df)), rtol=1e-10)
    assert clf.decision_function(df).shape == (len(y), 3)
    assert clf.n_iter_ == len(clf.history_) <= 100
    # binary: one score column, as in scikit-learn
    Xb, yb = _classification(2)
    sgd = CodedGDClassifier(SGDClassifier(loss="log_loss"), max_iter=50, tol=None, random_state=0).fit(Xb, yb)
    assert sgd.coef_.shape == (1, Xb.shape[1]) and sgd.decision_function(Xb).shape == (len(yb),)
    np.testing.assert_array_equal(sgd.estimator_.predict(Xb), sgd.predict(Xb))
    np.testing.assert_allclose(sgd.estimator_.predict_proba(Xb), sgd.predict_proba(Xb), rtol=1e-12)


# ---------------------------------------------------------------------- digits, stragglers
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te


@pytest.fixture(scope="module")
def digits_no_stragglers(digits):
    X_tr, X_te, y_tr, y_te = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return CodedGDClassifier(max_iter=300, random_state=0).fit(X_tr, y_tr)


def test_digits_accuracy_within_one_point_of_logistic_regression(digits, digits_no_stragglers):
    X_tr, X_te, y_tr, y_te = digits
    reference = LogisticRegression(max_iter=1000).fit(X_tr, y_tr).score(X_te, y_te)
    assert abs(digits_no_stragglers.score(X_te, y_te) - reference) <= 0.01


@pytest.mark.slow
def test_digits_with_stragglers_keeps_accuracy_and_saves_time(digits, digits_no_stragglers):
    X_tr, X_te, y_tr, y_te = digits
    common = dict(n_workers=16, stragglers=ShiftedExponential(shift=1.0, rate=0.5), max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        coded = CodedGDClassifier(**common).fit(X_tr, y_tr)
        # the uncoded runs reach the target loss in ~80 steps
        uncoded = CodedGDClassifier(scheme="uncoded", **{**common, "max_iter": 120}).fit(X_tr, y_tr)
        waiting = CodedGDClassifier(scheme="uncoded", policy="first_k", **{**common, "max_iter": 120}).fit(X_tr, y_tr)
    assert coded.n_workers_ == 16
    assert abs(coded.score(X_te, y_te) - digits_no_stragglers.score(X_te, y_te)) <= 0.02
    # simulated time to reach a loss the uncoded runs reach too: coded is faster than
    # uncoded under the same (deadline) policy and than uncoded waiting for every worker
    target = 0.2
    t_coded = coded.history_.time_to(target)
    assert np.isfinite(t_coded)
    assert t_coded < 0.8 * uncoded.history_.time_to(target)
    assert t_coded < 0.8 * waiting.history_.time_to(target)
    # stragglers cost the coded run partial decodes, never a stalled step
    assert min(coded.history_.received) > 0 and len(coded.history_) == len(coded.history_.loss)
    assert np.isnan(coded.history_.grad_error).all()  # a fit does not pay for the diagnostic


# ---------------------------------------------------------------------- model selection
@pytest.mark.slow
def test_pipeline_grid_search_and_cross_val_score():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", CodedGDClassifier(max_iter=60, tol=1e-3, random_state=0))])
    grid = GridSearchCV(pipe, {"clf__max_weight": [1, 2], "clf__block_size": [4, 8]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
        scores = cross_val_score(make_pipeline(StandardScaler(), CodedGDClassifier(max_iter=60, random_state=0)), X, y, cv=3)
    assert set(grid.best_params_) == {"clf__max_weight", "clf__block_size"}
    assert grid.best_score_ > 0.95 and grid.score(X, y) > 0.95
    assert scores.shape == (3,) and scores.min() > 0.93
    reg_scores = cross_val_score(CodedGDRegressor(Ridge(alpha=1.0), random_state=0), *_regression(), cv=3)
    assert reg_scores.min() > 0.9


# ---------------------------------------------------------------------- options
def test_policies_and_scheme_objects():
    X, y = _classification(3)
    scheme = LWPD(block_size=4, redundancy=2.0)
    fits = {
        "first_k": CodedGDClassifier(policy="first_k", stragglers=ShiftedExponential(1.0, 0.5), random_state=0,
                                     max_iter=200),
        "async": CodedGDClassifier(policy="async", stragglers=ShiftedExponential(1.0, 0.5), random_state=0, max_iter=200),
        "object": CodedGDClassifier(scheme=scheme, random_state=0),
        "gc": CodedGDClassifier(scheme="gc-cyclic", random_state=0),
    }
    reference = LogisticRegression().fit(X, y).score(X, y)
    for name, clf in fits.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        assert clf.score(X, y) >= reference - 0.03, name
    assert not hasattr(scheme, "problem")  # the user's scheme object is copied, never bound
    assert fits["object"].history_.scheme == "lwpd"


@pytest.mark.parametrize("scheme", registry.NAMES)
@pytest.mark.parametrize("policy", ["deadline", "first_k"])
def test_every_named_scheme_trains_under_stragglers(scheme, policy):
    """The wrappers take every name of lwpd.schemes.registry, the list the command line takes."""
    X, y = _regression()
    reg = CodedGDRegressor(Ridge(alpha=1.0), scheme=scheme, policy=policy, stragglers=ShiftedExponential(1.0, 0.5),
                           max_iter=100, tol=None, random_state=0).fit(X, y)
    assert reg.history_.scheme == scheme and reg.n_iter_ == 100
    assert reg.score(X, y) > 0.95


def test_the_classifier_takes_every_registry_name_but_lcc():
    X, y = make_classification(120, 5, random_state=0)
    assert set(registry.names(least_squares=False)) == set(registry.NAMES) - {"lcc"}
    for name in registry.names(least_squares=False):
        clf = CodedGDClassifier(scheme=name, max_iter=20, tol=None, random_state=0).fit(X, y)
        assert clf.history_.scheme == name and clf.score(X, y) > 0.8
    with pytest.raises(InvalidParameterError, match="scheme"):
        CodedGDClassifier(scheme="lcc").fit(X, y)


def test_lcc_for_regression_and_custom_cluster():
    X, y = _regression()
    reg = CodedGDRegressor(Ridge(alpha=1.0), scheme="lcc", **_noiseless(n_workers=8)).fit(X, y)
    w, b = _ridge_closed_form(X, y, 1.0)
    np.testing.assert_allclose(reg.coef_, w, atol=1e-5)
    with pytest.raises(ValueError, match="scheme='lcc' needs unweighted data"):
        CodedGDRegressor(scheme="lcc").fit(X, y, sample_weight=np.ones(len(y)))
    cluster = SimulatedCluster(4, seed=0)
    reg = CodedGDRegressor(cluster=cluster, n_workers=99, random_state=0).fit(X, y)
    assert reg.n_workers_ == 4 and reg.score(X, y) > 0.9


def test_tol_stops_early_and_max_iter_warns():
    X, y = _regression()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        early = CodedGDRegressor(tol=1e-3, random_state=0).fit(X, y)
        full = CodedGDRegressor(tol=None, max_iter=30, random_state=0).fit(X, y)
    assert early.n_iter_ < 200 and full.n_iter_ == 30
    with pytest.warns(ConvergenceWarning, match="reached max_iter=3"):
        CodedGDRegressor(max_iter=3, random_state=0).fit(X, y)


def test_learning_rate_and_divergence():
    X, y = _regression()
    slow = CodedGDRegressor(learning_rate=1e-3, max_iter=20, tol=None, random_state=0).fit(X, y)
    auto = CodedGDRegressor(max_iter=20, tol=None, random_state=0).fit(X, y)
    assert slow.history_.loss[-1] > auto.history_.loss[-1]
    with pytest.raises(FloatingPointError, match="learning_rate"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        CodedGDRegressor(learning_rate=1e6, max_iter=200, tol=None, random_state=0).fit(X, y)
    # a rising loss is not a settled one: with the default tol a diverging fit still raises
    for est in (CodedGDRegressor(learning_rate=10.0, random_state=0),
                CodedGDClassifier(learning_rate=1e6, random_state=0)):
        with pytest.raises(FloatingPointError, match="diverged"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            est.fit(X, y if isinstance(est, CodedGDRegressor) else (y > np.median(y)).astype(int))


def test_warm_start_continues_from_the_previous_solution():
    X, y = _classification(2)
    clf = CodedGDClassifier(LogisticRegression(warm_start=True), max_iter=5, tol=None, random_state=0)
    clf.fit(X, y)
    first = list(clf.history_.loss)
    clf.fit(X, y)
    assert clf.history_.loss[0] < first[-1]  # picked up where the first fit stopped
    cold = CodedGDClassifier(LogisticRegression(), max_iter=5, tol=None, random_state=0).fit(X, y)
    cold.fit(X, y)
    assert cold.history_.loss == first  # without warm start a refit repeats the first
    # other classes: the old coefficients do not apply, the fit starts cold
    relabelled = clf.fit(X, np.array(["no", "yes"])[y])
    assert relabelled.history_.loss == first


def test_reproducible_and_small_problems_cap_workers():
    X, y = _classification(2, m=40, d=1)
    a = CodedGDClassifier(n_workers=8, random_state=3, stragglers=ShiftedExponential(1.0, 0.5)).fit(X, y)
    b = CodedGDClassifier(n_workers=8, random_state=3, stragglers=ShiftedExponential(1.0, 0.5)).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.n_workers_ == 8  # the default LWPD gives each worker a shard: 40 samples are enough
    full = CodedGDClassifier(scheme=LWPD(layout="full", block_size=2, redundancy=None), n_workers=8).fit(X, y)
    assert full.n_workers_ < 8  # two parameters cannot occupy 8 workers with codewords
    assert CodedGDClassifier(scheme="uncoded", n_workers=64).fit(X, y).n_workers_ == 40


def test_verbose_shows_progress(capsys):
    X, y = _regression()
    CodedGDRegressor(verbose=1, max_iter=5, tol=None, random_state=0).fit(X, y)
    assert "lwpd" in capsys.readouterr().err
    CodedGDRegressor(verbose=0, max_iter=5, tol=None, random_state=0).fit(X, y)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------- errors
def test_bad_input_gives_clear_errors():
    X, y = _classification(2)
    clf = CodedGDClassifier(max_iter=5)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        clf.fit(bad, y)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        clf.fit(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="Expected 2D array"):
        clf.fit(X[:, 0], y)
    fitted = CodedGDClassifier(max_iter=5, tol=None).fit(X, y)
    with pytest.raises(ValueError, match=f"X has 2 features, but CodedGDClassifier is expecting {X.shape[1]}"):
        fitted.predict(X[:, :2])
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, np.linspace(0, 1, len(y)))
    with pytest.raises(ValueError, match="only one class"):
        clf.fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="sample_weight.shape"):
        clf.fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="Sample weights must contain at least one non-zero number"):
        clf.fit(X, y, sample_weight=np.zeros(len(y)))
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        clf.fit(X, y, sample_weight=-np.ones(len(y)))


@pytest.mark.parametrize(
    "cls,estimator,message",
    [
        (CodedGDClassifier, SVC(), "estimator must be one of LogisticRegression .* and SGDClassifier.*got SVC"),
        (CodedGDClassifier, Ridge(), "estimator must be one of .*got Ridge"),
        (CodedGDClassifier, LogisticRegression(l1_ratio=1.0, solver="saga"), "only the L2 penalty"),
        (CodedGDClassifier, SGDClassifier(loss="hinge"), "only loss='log_loss'"),
        (CodedGDClassifier, SGDClassifier(loss="log_loss", penalty="l1"), "only penalty='l2' or None"),
        (CodedGDClassifier, SGDClassifier(loss="log_loss", class_weight="balanced"), "class_weight is supported with LogisticRegression only"),
        (CodedGDClassifier, LogisticRegression(C=-1.0), "The 'C' parameter of LogisticRegression"),
        (CodedGDRegressor, Lasso(), "estimator must be one of LinearRegression, Ridge and SGDRegressor.*got Lasso"),
        (CodedGDRegressor, LogisticRegression(), "estimator must be one of .*got LogisticRegression"),
        (CodedGDRegressor, LinearRegression(positive=True), "positive=True"),
        (CodedGDRegressor, SGDRegressor(loss="huber"), "only loss='squared_error'"),
        (CodedGDRegressor, Ridge(alpha=np.ones(2)), "alpha must be a scalar"),
    ],
)
def test_unsupported_estimators(cls, estimator, message):
    X, y = _classification(2)
    with pytest.raises(ValueError, match=message):
        cls(estimator).fit(X, y)


@pytest.mark.parametrize(
    "params,message",
    [
        (dict(n_workers=0), "The 'n_workers' parameter of CodedGDClassifier must be an int in the range \\[1, inf\\)"),
        (dict(scheme="lcc"), "The 'scheme' parameter of CodedGDClassifier must be a str among"),
        (dict(policy="fastest"), "The 'policy' parameter"),
        (dict(learning_rate=0.0), "The 'learning_rate' parameter"),
        (dict(tol=-1.0), "The 'tol' parameter"),
        (dict(block_size=0), "The 'block_size' parameter"),
        (dict(stragglers="slow"), "The 'stragglers' parameter"),
        (dict(placement=3), "The 'placement' parameter of CodedGDClassifier must be an instance of 'str' or an array-like"),
        (dict(placement="shuffled"), "The 'placement' parameter .* placement must be one of 'iid', 'sorted', 'dirichlet:alpha=A'"),
        (dict(placement="dirichlet:alpha=0"), "The 'placement' parameter .* alpha must be finite and > 0"),
        (dict(placement="dirichlet"), "placement 'dirichlet' needs its concentration"),
        (dict(placement=np.arange(200)), "The 'placement' parameter .* got an array of shape \\(200,\\)"),
    ],
)
def test_bad_parameters(params, message):
    X, y = _classification(2)
    with pytest.raises(InvalidParameterError, match=message):
        CodedGDClassifier(**params).fit(X, y)


def test_unfitted_and_pickle():
    import pickle

    from sklearn.exceptions import NotFittedError

    X, y = _classification(2)
    with pytest.raises(NotFittedError):
        CodedGDClassifier().predict(X)
    clf = CodedGDClassifier(max_iter=10, tol=None, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert copy.deepcopy(clf).history_.loss == clf.history_.loss


def test_the_automatic_deadline_covers_a_given_clusters_communication():
    from lwpd.cost import CostModel

    X, y = _classification(2)
    cluster = SimulatedCluster(4, seed=0, cost=CostModel(latency=5.0))  # each result: 5 time units in flight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = CodedGDClassifier(scheme="uncoded", cluster=cluster, max_iter=3, tol=None).fit(X, y)
    assert clf.history_.received == [4, 4, 4]  # every result arrives before the deadline


# ---------------------------------------------------------------------- placement
def test_placement_is_a_parameter_like_any_other():
    from sklearn.base import clone

    shards = [np.arange(0, 150), np.arange(150, 300)]
    for cls in (CodedGDClassifier, CodedGDRegressor):
        assert cls().get_params()["placement"] == "iid"
        est = cls(placement="dirichlet:alpha=0.5")
        assert est.get_params()["placement"] == "dirichlet:alpha=0.5"
        assert clone(est).placement == "dirichlet:alpha=0.5"
        assert est.set_params(placement="sorted").placement == "sorted"
        given = cls(placement=shards)
        assert given.placement is shards  # stored as given
        copied = clone(given).placement
        assert copied is not shards and all(np.array_equal(a, b) for a, b in zip(copied, shards))


@pytest.mark.parametrize("placement", ["sorted", "dirichlet:alpha=0.1"])
@pytest.mark.slow
def test_a_skewed_placement_keeps_an_exact_scheme_exact(placement):
    X, y = _regression()
    reg = CodedGDRegressor(Ridge(alpha=5.0), scheme="uncoded", placement=placement, **_noiseless()).fit(X, y)
    w, b = _ridge_closed_form(X, y, 5.0)
    np.testing.assert_allclose(reg.coef_, w, atol=COEF_ATOL)
    assert reg.intercept_ == pytest.approx(b, abs=COEF_ATOL)
    Xc, yc = _classification(3)
    clf = CodedGDClassifier(LogisticRegression(C=0.1), scheme="uncoded", placement=placement,
                            **_noiseless(max_iter=800)).fit(Xc, yc)
    ref = LogisticRegression(C=0.1, tol=1e-12, max_iter=10_000).fit(Xc, yc)
    np.testing.assert_allclose(clf.coef_, ref.coef_, atol=COEF_ATOL)


def test_explicit_shards_one_per_worker_used():
    X, y = _regression(m=40)
    halves = [np.arange(0, 40, 2), np.arange(1, 40, 2)]
    reg = CodedGDRegressor(scheme="uncoded", placement=halves, **_noiseless(max_iter=300, n_workers=2)).fit(X, y)
    w, b = _ridge_closed_form(X, y, 0.0)
    np.testing.assert_allclose(reg.coef_, w, atol=COEF_ATOL)
    assert reg.n_workers_ == 2 and reg.placement is halves
    with pytest.raises(ValueError, match="placement must hold one index array per worker used: n_workers=8; got 2"):
        CodedGDRegressor(scheme="uncoded", n_workers=8, placement=halves).fit(X, y)
    with pytest.raises(ValueError, match="placement must hold one index array per worker used: the cluster's 4 workers"):
        CodedGDRegressor(cluster=SimulatedCluster(4, seed=0), placement=halves).fit(X, y)
    # 40 samples occupy at most 40 uncoded workers: n_workers=64 is capped, and the shards must follow
    singles = [np.array([i]) for i in range(40)]
    capped = CodedGDRegressor(scheme="uncoded", n_workers=64, placement=singles, max_iter=3, tol=None).fit(X, y)
    assert capped.n_workers_ == 40
    with pytest.raises(ValueError, match=r"one index array per worker used: 40 \(n_workers=64 capped.*got 64 arrays"):
        CodedGDRegressor(scheme="uncoded", n_workers=64, placement=singles + [np.array([0])] * 24).fit(X, y)
    with pytest.raises(ValueError, match="placement must hold every row exactly once"):
        CodedGDRegressor(scheme="uncoded", n_workers=2, placement=[np.arange(20), np.arange(19, 40)]).fit(X, y)
    with pytest.raises(ValueError, match=r"placement\[1\] must lie in \[0, 39\]"):
        CodedGDRegressor(scheme="uncoded", n_workers=2, placement=[np.arange(20), np.arange(20, 41)]).fit(X, y)
    with pytest.raises(ValueError, match=r"placement\[0\] must hold integer indices"):
        CodedGDRegressor(scheme="uncoded", n_workers=2, placement=[halves[0] + 0.5, halves[1]]).fit(X, y)


def test_the_deadline_probe_binds_the_shards_training_uses(monkeypatch):
    """The automatic deadline is priced on the scheme bound as training binds it: the same
    shards (drawn from the training seed) and the same generator state after them."""
    from lwpd.schemes import IgnoreStragglers

    binds = []
    real_bind = IgnoreStragglers.bind

    def recording_bind(self, problem, n_workers, rng, shards=None):
        binds.append((rng.bit_generator.state["state"], [np.asarray(s).tolist() for s in shards]))
        return real_bind(self, problem, n_workers, rng, shards=shards)

    monkeypatch.setattr(IgnoreStragglers, "bind", recording_bind)
    X, y = _classification(3, m=240)
    clf = CodedGDClassifier(scheme="ignore", n_workers=6, placement="dirichlet:alpha=0.1",
                            stragglers=ShiftedExponential(1.0, 0.5), max_iter=3, tol=None, random_state=0).fit(X, y)
    assert len(binds) == 2  # the probe, then training
    (probe_state, probe_shards), (train_state, train_shards) = binds
    assert probe_state == train_state and probe_shards == train_shards
    # the label skew is there: workers lack whole classes (an i.i.d. shard of 40 rows never does)
    counts = np.stack([np.bincount(y[s], minlength=3) for s in train_shards])
    assert (counts == 0).sum() >= 3
    assert clf.n_workers_ == 6


@pytest.mark.slow
def test_acceleration_takes_fewer_steps_to_the_same_coefficients():
    """Quasi-Newton steps, Nesterov with restart and plain gradient steps all land on
    scikit-learn's own solution; Nesterov gets within 1e-8 of the optimal loss's gap in well
    under half the plain steps, and L-BFGS in under half of Nesterov's; asking for
    acceleration where it cannot apply is refused at fit, naming it."""
    X, y = make_classification(600, 12, n_informative=6, random_state=0)
    X = StandardScaler().fit_transform(X)
    reference = LogisticRegression(C=0.1, tol=1e-12, max_iter=10_000).fit(X, y)
    fits = {}
    for acceleration in ("lbfgs", "nesterov", None):
        fits[acceleration] = CodedGDClassifier(LogisticRegression(C=0.1), scheme="uncoded", acceleration=acceleration,
                                               tol=1e-10, max_iter=1500, random_state=0).fit(X, y)
        np.testing.assert_allclose(fits[acceleration].coef_, reference.coef_, atol=COEF_ATOL)
    best = min(min(f.history_.loss) for f in fits.values())
    start = fits[None].history_.loss[0]

    def steps_to_gap(fit):
        return int(np.flatnonzero(np.asarray(fit.history_.loss) - best <= 1e-8 * (start - best))[0]) + 1

    steps = {a: steps_to_gap(fit) for a, fit in fits.items()}
    assert steps["nesterov"] < 0.5 * steps[None] and steps["lbfgs"] < 0.5 * steps["nesterov"], steps
    for acceleration in ("nesterov", "lbfgs"):
        with pytest.raises(ValueError, match="acceleration"):
            CodedGDClassifier(acceleration=acceleration, policy="async", max_iter=3, random_state=0).fit(X, y)


def test_auto_acceleration_is_lbfgs_without_stragglers_and_nesterov_with_them():
    """``acceleration="auto"``: the very fit of ``"lbfgs"`` when every gradient is exact (no
    stragglers, no cluster, the deadline policy, a scheme that decodes the gradient itself
    once every task arrived, ``learning_rate="auto"``), of ``"nesterov"`` otherwise --
    including the schemes and policies under which no step is exact (random-k; first-k,
    which stops at LWPD's ``wait_for``)."""
    X, y = _classification(2)

    def losses(**kw):
        return CodedGDClassifier(max_iter=15, tol=None, random_state=0, **kw).fit(X, y).history_.loss

    assert losses(acceleration="auto") == losses(acceleration="lbfgs")
    assert losses(acceleration="auto") != losses(acceleration="nesterov")
    stragglers = ShiftedExponential(1.0, 0.5)
    assert (losses(acceleration="auto", stragglers=stragglers)
            == losses(acceleration="nesterov", stragglers=stragglers))
    assert losses(acceleration="auto", learning_rate=0.1) == losses(acceleration="nesterov", learning_rate=0.1)
    for kw in (dict(policy="first_k"), dict(scheme="randk"), dict(scheme="iag")):
        assert losses(acceleration="auto", **kw) == losses(acceleration=None if kw.get("scheme") == "iag" else "nesterov",
                                                           **kw), kw
    assert losses(acceleration="auto", scheme="gc-cyclic") == losses(acceleration="lbfgs", scheme="gc-cyclic")


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("class_weight", ["balanced", "dict"])
@pytest.mark.slow
def test_class_weight_is_folded_into_the_sample_weights_as_scikit_learn_does(n_classes, class_weight):
    """LogisticRegression(class_weight=...) reaches scikit-learn's own coefficients, with and
    without sample weights, for "balanced" and for a dict."""
    X, y = _classification(n_classes)
    X = StandardScaler().fit_transform(X)
    weights = {c: 1.0 + 0.5 * i for i, c in enumerate(np.unique(y))} if class_weight == "dict" else class_weight
    sw = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    for sample_weight in (None, sw):
        ref = LogisticRegression(C=0.1, class_weight=weights, tol=1e-12, max_iter=10_000).fit(X, y, sample_weight=sample_weight)
        clf = CodedGDClassifier(LogisticRegression(C=0.1, class_weight=weights), **_noiseless(max_iter=1500))
        clf.fit(X, y, sample_weight=sample_weight)
        coef, ref_coef = clf.coef_, ref.coef_
        if n_classes > 2:  # softmax is blind to a common shift: compare centred
            coef, ref_coef = coef - coef.mean(axis=0), ref_coef - ref_coef.mean(axis=0)
        np.testing.assert_allclose(coef, ref_coef, atol=COEF_ATOL)
