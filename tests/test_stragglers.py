"""Tests for lwpd.stragglers: distributions, persistence, replay, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lwpd.stragglers import (
    Bernoulli,
    DelayModel,
    Exponential,
    MarkovBursty,
    NoDelay,
    Pareto,
    ShiftedExponential,
    SlowWorkers,
    Trace,
)


def _all_models():
    return [
        NoDelay(),
        ShiftedExponential(1.0, 0.5),
        Exponential(2.0),
        Pareto(1.5, 1.0),
        Bernoulli(0.3, base=2.0),
        SlowWorkers(0.25, 10.0),
        MarkovBursty(0.8, 0.9, 5.0),
        Trace(np.arange(1.0, 11.0)),
    ]


# ---------------------------------------------------------------- output contract


@pytest.mark.parametrize("model", _all_models(), ids=repr)
def test_output_shape_dtype_and_int_seed(model):
    out = model.sample(8, np.random.default_rng(0))
    assert isinstance(model, DelayModel)
    assert out.shape == (8,) and out.dtype == np.float64
    assert (out >= 0).all() and not np.isnan(out).any()
    model.reset()
    assert np.array_equal(model.sample(8, 0), out)  # an int seed is accepted


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)])
def test_n_workers_validated(bad, exc):
    with pytest.raises(exc, match="n_workers"):
        ShiftedExponential(1.0, 1.0).sample(bad, np.random.default_rng(0))


def test_reprs():
    assert repr(NoDelay()) == "NoDelay()"
    assert repr(ShiftedExponential(1, 2)) == "ShiftedExponential(shift=1.0, rate=2.0)"
    assert repr(Exponential(3)) == "Exponential(mean=3.0)"
    assert repr(Pareto(1.5, 2)) == "Pareto(alpha=1.5, scale=2.0)"
    assert repr(Bernoulli(0.1)) == "Bernoulli(p_fail=0.1, base=1.0)"
    assert repr(SlowWorkers(0.1, 10)) == "SlowWorkers(fraction=0.1, slowdown=10.0, base=1.0)"
    assert repr(MarkovBursty(0.8, 0.9, 5)) == "MarkovBursty(p_stay_slow=0.8, p_stay_fast=0.9, slowdown=5.0, base=1.0)"
    assert repr(Trace([[1.0, 2.0]])) == "Trace(<array of shape (1, 2)>)"


# ---------------------------------------------------------------- continuous distributions

N = 20_000


def _pooled(model, seed, rounds=100, workers=N // 100):
    """Draw many rounds with one generator and pool them (checks independence across calls too)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([model.sample(workers, rng) for _ in range(rounds)])


@pytest.mark.parametrize(
    "model, right, wrong",
    [
        (ShiftedExponential(1.0, 0.5), stats.expon(loc=1.0, scale=2.0), stats.expon(loc=1.0, scale=2.3)),
        (ShiftedExponential(0.0, 3.0), stats.expon(scale=1 / 3), stats.expon(loc=0.02, scale=1 / 3)),
        (Exponential(2.0), stats.expon(scale=2.0), stats.expon(scale=2.2)),
        (Pareto(1.5, 2.0), stats.pareto(1.5, scale=2.0), stats.pareto(1.7, scale=2.0)),
        (Pareto(0.8, 1.0), stats.pareto(0.8, scale=1.0), stats.pareto(0.8, scale=1.05)),
    ],
    ids=["shexp", "shexp0", "exp", "pareto", "pareto-heavy"],
)
def test_kolmogorov_smirnov(model, right, wrong):
    x = _pooled(model, seed=12345)
    assert stats.kstest(x, right.cdf).pvalue > 1e-3
    # The test has power: a modestly different distribution is firmly rejected.
    assert stats.kstest(x, wrong.cdf).pvalue < 1e-6


@pytest.mark.parametrize(
    "model",
    [ShiftedExponential(1.0, 0.5), Exponential(2.0), Pareto(3.0, 2.0)],
    ids=repr,
)
def test_empirical_mean_and_quantiles(model):
    x = _pooled(model, seed=7)
    se = x.std() / np.sqrt(x.size)
    assert abs(x.mean() - model.mean()) < 5 * se
    if isinstance(model, Pareto):
        ref = stats.pareto(model.alpha, scale=model.scale)
    elif isinstance(model, ShiftedExponential):
        ref = stats.expon(loc=model.shift, scale=1 / model.rate)
    else:
        ref = stats.expon(scale=model.mean())
    q = np.array([0.1, 0.5, 0.9, 0.99])
    np.testing.assert_allclose(np.quantile(x, q), ref.ppf(q), rtol=0.06)
    assert x.min() >= ref.ppf(0.0)


def test_analytic_means():
    assert ShiftedExponential(1.0, 0.25).mean() == 5.0
    assert Exponential(0.5).mean() == 0.5
    assert Pareto(2.0, 3.0).mean() == 6.0
    assert Pareto(1.0, 3.0).mean() == np.inf
    assert Pareto(0.5, 3.0).mean() == np.inf
    assert NoDelay().mean() == 1.0
    np.testing.assert_array_equal(NoDelay().sample(4, np.random.default_rng(0)), np.ones(4))


# ---------------------------------------------------------------- failures


def test_bernoulli_failure_fraction():
    model = Bernoulli(0.2, base=3.0)
    x = _pooled(model, seed=3)
    failed = np.isinf(x)
    assert abs(failed.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / x.size)
    assert (x[~failed] == 3.0).all() and (x[failed] == np.inf).all()
    assert model.mean() == np.inf


def test_bernoulli_edges():
    rng = np.random.default_rng(0)
    assert (Bernoulli(0.0, base=2.5).sample(100, rng) == 2.5).all()
    assert Bernoulli(0.0, base=2.5).mean() == 2.5
    assert np.isposinf(Bernoulli(1.0).sample(100, rng)).all()


# ---------------------------------------------------------------- persistent slow workers


def test_slow_workers_persist_across_calls_without_randomness():
    model = SlowWorkers(0.1, 10.0, base=2.0)
    rng = np.random.default_rng(5)
    first = model.sample(20, rng)
    assert sorted(np.unique(first)) == [2.0, 20.0]
    assert (first == 20.0).sum() == 2
    np.testing.assert_array_equal(np.flatnonzero(first == 20.0), model.slow)
    state = rng.bit_generator.state
    for _ in range(5):
        np.testing.assert_array_equal(model.sample(20, rng), first)
    assert rng.bit_generator.state == state  # later calls draw nothing


def test_slow_workers_reset_and_resize():
    model = SlowWorkers(0.25, 4.0)
    rng = np.random.default_rng(11)
    sets = set()
    for _ in range(30):
        model.reset()
        assert model.slow is None
        out = model.sample(12, rng)
        assert (out == 4.0).sum() == 3
        sets.add(tuple(np.flatnonzero(out == 4.0)))
    assert len(sets) > 10  # each reset draws a fresh slow set
    out = model.sample(40, rng)  # a new worker count redraws too
    assert (out == 4.0).sum() == 10 and model.slow.shape == (10,)
    assert (SlowWorkers(0.25, 4.0).sample(10, rng) == 4.0).sum() == round(2.5)  # half to even: 2


def test_slow_workers_uniform_selection_and_mean():
    model = SlowWorkers(0.2, 10.0)
    rng = np.random.default_rng(2)
    counts = np.zeros(10)
    for _ in range(2000):
        model.reset()
        counts += model.sample(10, rng) == 10.0
    np.testing.assert_allclose(counts / 2000, 0.2, atol=0.04)
    assert model.mean() == pytest.approx(1.0 + 0.2 * 9.0)
    assert SlowWorkers(0.25, 5.0).mean(n_workers=10) == pytest.approx(1.0 + 0.2 * 4.0)
    assert SlowWorkers(0.0, 5.0).sample(7, rng).tolist() == [1.0] * 7
    assert SlowWorkers(1.0, 5.0).sample(7, rng).tolist() == [5.0] * 7


# ---------------------------------------------------------------- bursty Markov stragglers


def _markov_states(model, n_workers, rounds, seed):
    rng = np.random.default_rng(seed)
    return np.stack([model.sample(n_workers, rng) == model.base * model.slowdown for _ in range(rounds)])


def test_markov_stationary_fraction_and_transitions():
    p_ss, p_ff = 0.7, 0.9
    model = MarkovBursty(p_ss, p_ff, slowdown=6.0, base=0.5)
    pi = 0.1 / 0.4
    assert model.stationary_slow() == pytest.approx(pi)
    assert model.mean() == pytest.approx(0.5 * (1 + pi * 5.0))
    s = _markov_states(model, n_workers=2000, rounds=60, seed=9)
    # Stationary start, and stationarity is preserved round after round.
    assert abs(s[0].mean() - pi) < 4 * np.sqrt(pi * (1 - pi) / 2000)
    np.testing.assert_allclose(s.mean(axis=1), pi, atol=0.05)
    assert abs(s.mean() - pi) < 0.01
    # Empirical transition probabilities.
    prev, nxt = s[:-1], s[1:]
    assert (nxt[prev]).mean() == pytest.approx(p_ss, abs=0.01)
    assert (~nxt[~prev]).mean() == pytest.approx(p_ff, abs=0.01)
    # Per-worker persistence: lag-k autocorrelation of the slow indicator is (p_ss + p_ff - 1)**k.
    z = (s - s.mean()) / s.std()
    lam = p_ss + p_ff - 1
    for lag in (1, 2, 3):
        assert (z[:-lag] * z[lag:]).mean() == pytest.approx(lam**lag, abs=0.03)


def test_markov_independent_of_bursts_when_memoryless():
    # p_stay_slow = 1 - p_stay_fast makes the chain memoryless: zero autocorrelation.
    model = MarkovBursty(0.3, 0.7, slowdown=2.0)
    s = _markov_states(model, n_workers=2000, rounds=40, seed=1)
    z = (s - s.mean()) / s.std()
    assert abs((z[:-1] * z[1:]).mean()) < 0.03
    assert abs(s.mean() - 0.3) < 0.01


def test_markov_state_reset_and_resize():
    model = MarkovBursty(0.99, 0.99, slowdown=3.0)
    rng = np.random.default_rng(4)
    a = model.sample(500, rng)
    b = model.sample(500, rng)
    assert (a == b).mean() > 0.95  # very persistent chains keep their state
    assert model.state.shape == (500,)
    model.reset()
    assert model.state is None
    assert model.sample(7, rng).shape == (7,) and model.state.shape == (7,)
    assert model.sample(9, rng).shape == (9,)  # new worker count: redrawn from stationarity
    always_slow = MarkovBursty(1.0, 0.0, slowdown=3.0)
    assert always_slow.stationary_slow() == 1.0
    assert (always_slow.sample(5, rng) == 3.0).all()


# ---------------------------------------------------------------- trace replay


def test_trace_1d_cycles_values():
    trace = Trace([1.0, 2.0, 3.0, 4.0, 5.0])
    rng = np.random.default_rng(0)
    assert trace.sample(2, rng).tolist() == [1.0, 2.0]
    assert trace.sample(2, rng).tolist() == [3.0, 4.0]
    assert trace.sample(2, rng).tolist() == [5.0, 1.0]
    assert trace.sample(3, rng).tolist() == [2.0, 3.0, 4.0]
    assert trace.sample(7, rng).tolist() == [5.0, 1.0, 2.0, 3.0, 4.0, 5.0, 1.0]  # longer than the trace
    trace.reset()
    assert trace.sample(1, rng).tolist() == [1.0]
    assert trace.mean() == 3.0


def test_trace_2d_cycles_rows():
    rows = np.array([[1.0, 2.0, 3.0], [4.0, np.inf, 6.0]])
    trace = Trace(rows)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    got = [trace.sample(3, rng) for _ in range(5)]
    for t, out in enumerate(got):
        np.testing.assert_array_equal(out, rows[t % 2])
    assert rng.bit_generator.state == state  # the replay draws no randomness
    got[0][0] = 99.0  # returned arrays are copies
    trace.reset()
    np.testing.assert_array_equal(trace.sample(3, rng), rows[0])
    assert trace.mean() == np.inf
    with pytest.raises(ValueError, match="n_workers must equal.*3"):
        trace.sample(4, rng)


def test_trace_copies_input_and_accepts_ints():
    data = np.array([3, 1, 2])
    trace = Trace(data)
    data[0] = 100
    assert trace.sample(3, np.random.default_rng(0)).tolist() == [3.0, 1.0, 2.0]
    assert trace.array.dtype == np.float64 and not trace.array.flags.writeable


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("index", range(len(_all_models())))
def test_deterministic_for_a_seed(index):
    def run(seed):
        model = _all_models()[index]
        rng = np.random.default_rng(seed)
        seq = [model.sample(16, rng) for _ in range(4)]
        model.reset()
        seq.append(model.sample(16, rng))
        return np.stack(seq)

    a, b = run(2024), run(2024)
    np.testing.assert_array_equal(a, b)
    model = _all_models()[index]
    if isinstance(model, (ShiftedExponential, Exponential, Pareto, Bernoulli, SlowWorkers, MarkovBursty)):
        assert not np.array_equal(a, run(2025))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: ShiftedExponential(-1.0, 1.0), ValueError, "shift"),
        (lambda: ShiftedExponential(1.0, 0.0), ValueError, "rate"),
        (lambda: ShiftedExponential(1.0, np.inf), ValueError, "rate"),
        (lambda: ShiftedExponential("1", 1.0), TypeError, "shift"),
        (lambda: Exponential(0.0), ValueError, "mean"),
        (lambda: Exponential(-2.0), ValueError, "mean"),
        (lambda: Pareto(0.0, 1.0), ValueError, "alpha"),
        (lambda: Pareto(1.5, -1.0), ValueError, "scale"),
        (lambda: Pareto(np.nan, 1.0), ValueError, "alpha"),
        (lambda: Bernoulli(1.5), ValueError, "p_fail"),
        (lambda: Bernoulli(-0.1), ValueError, "p_fail"),
        (lambda: Bernoulli(0.1, base=0.0), ValueError, "base"),
        (lambda: Bernoulli(None), TypeError, "p_fail"),
        (lambda: SlowWorkers(1.2, 10.0), ValueError, "fraction"),
        (lambda: SlowWorkers(0.1, 0.5), ValueError, "slowdown"),
        (lambda: SlowWorkers(0.1, 10.0, base=-1.0), ValueError, "base"),
        (lambda: MarkovBursty(1.1, 0.9, 2.0), ValueError, "p_stay_slow"),
        (lambda: MarkovBursty(0.9, -0.1, 2.0), ValueError, "p_stay_fast"),
        (lambda: MarkovBursty(1.0, 1.0, 2.0), ValueError, "both be 1"),
        (lambda: MarkovBursty(0.9, 0.9, 0.9), ValueError, "slowdown"),
        (lambda: MarkovBursty(0.9, 0.9, 2.0, base=0), ValueError, "base"),
        (lambda: Trace([]), ValueError, "empty"),
        (lambda: Trace(np.ones((2, 0))), ValueError, "empty"),
        (lambda: Trace(np.ones((2, 2, 2))), ValueError, "1-D.*2-D"),
        (lambda: Trace(3.0), ValueError, "1-D.*2-D"),
        (lambda: Trace([1.0, -0.5]), ValueError, ">= 0"),
        (lambda: Trace([1.0, -np.inf]), ValueError, ">= 0"),
        (lambda: Trace([1.0, np.nan]), ValueError, "NaN"),
        (lambda: Trace(["a", "b"]), TypeError, "numeric"),
        (lambda: Trace([1 + 2j]), TypeError, "numeric"),
    ],
)
def test_invalid_parameters(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_rng():
    with pytest.raises(TypeError, match="rng"):
        Exponential(1.0).sample(3, "seed")
    with pytest.raises(ValueError, match="rng"):
        Exponential(1.0).sample(3, -1)
