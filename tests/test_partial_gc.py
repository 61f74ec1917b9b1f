"""Tests of gradient coding with partial stragglers (lwpd.schemes.PartialGradientCoding)."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from reference import FixedDelays, small_problems

from lwpd import train
from lwpd.cluster import SimulatedCluster
from lwpd.problems import LeastSquares, Logistic, Softmax
from lwpd.schemes import GradientCoding, PartialGradientCoding
from lwpd.schemes._partial_gc import partition_chunk
from lwpd.stragglers import ShiftedExponential

N = 6  # workers (= partitions) in every test below


def _problems(m=60):
    return small_problems(m)


PROBLEMS = ["least-squares", "logistic", "softmax"]
CONFIGS = [  # (kind, s, order)
    ("cyclic", 1, "staggered"),
    ("cyclic", 2, "staggered"),
    ("frc", 1, "staggered"),
    ("frc", 2, "staggered"),
    ("cyclic", 1, "sorted"),
    ("frc", 1, "sorted"),
]


def _expected_orders(kind, s, order):
    """The processing order each worker should have, written out from the definitions."""
    out = []
    for i in range(N):
        if kind == "cyclic":
            parts = [(i + j) % N for j in range(s + 1)]
        else:
            base, r = (i // (s + 1)) * (s + 1), i % (s + 1)
            parts = [base + (r + j) % (s + 1) for j in range(s + 1)]
        out.append(sorted(parts) if order == "sorted" else parts)
    return out


def _bound(problem_name, kind="cyclic", s=1, order="staggered", seed=1):
    problem = _problems()[problem_name]
    scheme = PartialGradientCoding(s, kind=kind, order=order)
    scheme.bind(problem, N, np.random.default_rng(seed))
    return problem, scheme


def _chunk_results(scheme, theta):
    """``results[worker][c]``: the result of worker ``worker``'s ``c``-th chunk."""
    results = [[] for _ in range(N)]
    for task in scheme.tasks(theta):
        assert task.key == (task.worker, len(results[task.worker]))
        results[task.worker].append(task.fn(*task.args))
    return results


def _decode(scheme, results, chunks):
    """Fold the chunks ``(worker, c)`` in the given order; return the estimate."""
    scheme.begin()
    for worker, c in chunks:
        scheme.fold(worker, results[worker][c])
    return scheme.estimate()


def _covered(orders, chunks):
    return {orders[w][c] for w, c in chunks} == set(range(N))


@pytest.mark.parametrize("problem_name", PROBLEMS)
@pytest.mark.parametrize("kind,s,order", CONFIGS)
@pytest.mark.slow
def test_exact_on_every_prefix_pattern(problem_name, kind, s, order):
    """Every pattern of "worker i finished its first p_i chunks" (p_i = 0..s+1), which
    includes every set of n - s complete workers: exact iff every partition is covered."""
    problem, scheme = _bound(problem_name, kind, s, order)
    orders = _expected_orders(kind, s, order)
    assert [o.tolist() for o in scheme.orders_] == orders
    theta = np.random.default_rng(2).standard_normal(problem.n_params) * 0.5
    g = problem.gradient(theta)
    results = _chunk_results(scheme, theta)
    assert [[k for k, _ in r] for r in results] == orders  # tasks come in processing order
    decoded = 0
    for pattern in itertools.product(range(s + 2), repeat=N):
        chunks = [(w, c) for w in range(N) for c in range(pattern[w])]
        estimate = _decode(scheme, results, chunks)
        assert scheme.ready(len(chunks)) == (estimate is not None)
        if _covered(orders, chunks):
            assert estimate is not None, pattern
            np.testing.assert_allclose(estimate, g, rtol=1e-9, atol=1e-12)
            decoded += 1
        else:
            assert estimate is None, pattern
    assert decoded > 0
    # the gradient-coding guarantee: any n - s workers that finish everything suffice
    for alive in itertools.combinations(range(N), N - s):
        chunks = [(w, c) for w in alive for c in range(s + 1)]
        np.testing.assert_allclose(_decode(scheme, results, chunks), g, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("problem_name", PROBLEMS)
@pytest.mark.parametrize("kind", ["cyclic", "frc"])
def test_staggered_order_decodes_from_every_first_chunk(problem_name, kind):
    problem, scheme = _bound(problem_name, kind, s=2)
    theta = np.random.default_rng(3).standard_normal(problem.n_params)
    results = _chunk_results(scheme, theta)
    firsts = [(w, 0) for w in range(N)]
    np.testing.assert_allclose(_decode(scheme, results, firsts), problem.gradient(theta), rtol=1e-9, atol=1e-12)
    assert scheme.sources() == {w: w for w in range(N)}  # cyclic: worker i starts on partition i


def test_any_subset_of_chunks_in_any_order_decodes_iff_covered():
    """Results may arrive out of processing order (an executor): all 2^12 subsets."""
    problem, scheme = _bound("logistic")
    orders = _expected_orders("cyclic", 1, "staggered")
    theta = np.random.default_rng(4).standard_normal(problem.n_params)
    g = problem.gradient(theta)
    results = _chunk_results(scheme, theta)
    every = [(w, c) for w in range(N) for c in range(2)]
    for mask in range(1 << len(every)):
        chunks = [chunk for b, chunk in enumerate(every) if mask >> b & 1][::-1]
        estimate = _decode(scheme, results, chunks)
        if _covered(orders, chunks):
            np.testing.assert_allclose(estimate, g, rtol=1e-9, atol=1e-12)
        else:
            assert estimate is None


@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_no_estimate_when_a_partition_is_missing(problem_name):
    problem, scheme = _bound(problem_name)  # cyclic, s = 1: partition 0 is worker 0's first, worker 5's second
    theta = np.ones(problem.n_params)
    results = _chunk_results(scheme, theta)
    assert _decode(scheme, results, []) is None
    chunks = [(w, c) for w in range(1, 5) for c in range(2)] + [(5, 0)]  # worker 0 silent, worker 5 half done
    assert _decode(scheme, results, chunks) is None
    assert not scheme.ready(len(chunks))
    assert set(scheme.sources()) == {1, 2, 3, 4, 5}
    # more than s stragglers: both holders of partition 3 (workers 2 and 3) silent
    chunks = [(w, c) for w in (0, 1, 4, 5) for c in range(2)]
    assert _decode(scheme, results, chunks) is None
    # the order matters: with sorted fractional repetition, the first chunks cover only half
    problem, frc = _bound(problem_name, kind="frc", order="sorted")
    results = _chunk_results(frc, theta)
    assert _decode(frc, results, [(w, 0) for w in range(N)]) is None
    problem, frc = _bound(problem_name, kind="frc", order="staggered")
    results = _chunk_results(frc, theta)
    np.testing.assert_allclose(_decode(frc, results, [(w, 0) for w in range(N)]), problem.gradient(theta), rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    problem_name=st.sampled_from(PROBLEMS),
    s=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    permutation=st.permutations(range(N * 4)),
    cut=st.integers(0, N * 4),
)
def test_fold_order_does_not_matter(problem_name, s, seed, permutation, cut):
    problem, scheme = _bound(problem_name, s=s, seed=seed)
    theta = np.random.default_rng(seed).standard_normal(problem.n_params)
    results = _chunk_results(scheme, theta)
    every = [(w, c) for w in range(N) for c in range(s + 1)]
    order = [every[i] for i in permutation if i < len(every)]
    reference = _decode(scheme, results, every)
    np.testing.assert_allclose(_decode(scheme, results, order), reference, rtol=1e-12, atol=0)
    np.testing.assert_allclose(reference, problem.gradient(theta), rtol=1e-9, atol=1e-12)
    # any prefix of an arrival order: the same verdict and estimate whatever the order
    part = order[:cut]
    forward, backward = _decode(scheme, results, part), _decode(scheme, results, part[::-1])
    assert (forward is None) == (backward is None) == (not _covered(scheme.orders_, part))
    if forward is not None:
        np.testing.assert_allclose(forward, backward, rtol=1e-12, atol=0)


def test_cost_of_each_chunk_counted_by_hand():
    """m = 62 samples, N = 6 workers, least squares on 5 features: n = 6 parameters.

    One unit is gradient_ops(m / N, n) = 2 * (62 / 6) * 6 = 124 multiply-adds. The split
    gives partitions 0 and 1 eleven rows and the rest ten. A chunk is one partition's
    gradient plus its weighting, coded_combination_ops([m_k], n) = 2 m_k n + n:
    2 * 11 * 6 + 6 = 138 or 2 * 10 * 6 + 6 = 126 multiply-adds; it sends n = 6 floats.
    """
    problem = _problems(m=62)["least-squares"]
    assert problem.n_params == 6
    scheme = PartialGradientCoding(1)
    scheme.bind(problem, N, np.random.default_rng(0))
    assert [p.size for p in scheme.partitions_] == [11, 11, 10, 10, 10, 10]
    big, small = 138 / 124, 126 / 124
    expected = {  # worker i processes partitions i, i + 1 (mod 6)
        (0, 0): big, (0, 1): big, (1, 0): big, (1, 1): small, (2, 0): small, (2, 1): small,
        (3, 0): small, (3, 1): small, (4, 0): small, (4, 1): small, (5, 0): small, (5, 1): big,
    }
    tasks = scheme.tasks(np.zeros(6))
    assert [t.key for t in tasks] == list(expected)
    for task in tasks:
        assert task.work == pytest.approx(expected[task.key], rel=1e-12)
        assert task.floats == 6.0
    # a worker's chunks together cost what one gradient-coding result (two partitions) does
    assert sum(t.work for t in tasks if t.worker == 0) == pytest.approx((2 * 22 * 6 + 2 * 6) / 124, rel=1e-12)
    # softmax with 3 classes: n = 18, unit = 2 * (62 / 6) * 18 = 372; an 11-row chunk is 2 * 11 * 18 + 18 = 414
    softmax = _problems(m=62)["softmax"]
    scheme.bind(softmax, N, np.random.default_rng(0))
    first = scheme.tasks(np.zeros(18))[0]
    assert first.work == pytest.approx(414 / 372, rel=1e-12) and first.floats == 18.0


def _optimum(problem):
    m = problem.n_samples
    return np.linalg.lstsq(
        np.vstack([np.c_[problem.X, np.ones(m)] / np.sqrt(m), np.sqrt(0.1) * np.c_[np.eye(5), np.zeros(5)]]),
        np.r_[problem.y / np.sqrt(m), np.zeros(5)], rcond=None)[0]


@pytest.mark.parametrize("policy,extra", [("first_k", {}), ("deadline", {"deadline": 60.0}), ("async", {"async": True})])
def test_training_reaches_the_optimum(policy, extra):
    problem = _problems()["least-squares"]
    target = problem.loss(_optimum(problem)) * 1.01
    kwargs = {"lr": 0.3 / problem.lipschitz()} if extra.pop("async", False) else {}
    history = train(problem, PartialGradientCoding(1), SimulatedCluster(6, ShiftedExponential(1.0, 1.0), seed=0),
                    policy=policy, max_steps=400, target_loss=target, progress=False, seed=0, **extra, **kwargs)
    assert history.loss[-1] <= target
    if policy != "async":
        assert max(history.grad_error) < 1e-9  # every step used the exact gradient


def _one_step(scheme, delays):
    problem = _problems()["least-squares"]
    history = train(problem, scheme, SimulatedCluster(6, FixedDelays(delays), seed=0),
                    policy="first_k", max_steps=1, progress=False, seed=0)
    return history.time[0]


def test_a_slow_workers_finished_chunks_are_used():
    # One worker 1.8x slow: its first chunk (partition 5) arrives at 1.8 * 1.05 = 1.89, before
    # its neighbour's second chunk (2.1) and before any gradient-coding worker is done (2.0).
    # (At exactly 2x it ties with its neighbour's second chunk: s = 1 puts every partition
    # first at one holder and second at the other.)
    scheme = PartialGradientCoding(1)
    t = _one_step(scheme, [1, 1, 1, 1, 1, 1.8])
    assert t == pytest.approx(1.89)
    assert scheme.sources()[5] == 5
    assert t < _one_step(GradientCoding(1), [1, 1, 1, 1, 1, 1.8])
    # Two workers 2x slow: gradient coding waits for a slow one (4.0); the partial scheme
    # takes slow worker 5's first chunk at 2.1 -- about twice as fast.
    scheme = PartialGradientCoding(1)
    t = _one_step(scheme, [1, 1, 1, 1, 2, 2])
    assert t == pytest.approx(2.1)
    assert scheme.sources()[5] == 5
    assert _one_step(GradientCoding(1), [1, 1, 1, 1, 2, 2]) >= 1.9 * t


def test_tasks_are_picklable_and_repr():
    problem, scheme = _bound("logistic")
    task = scheme.tasks(np.zeros(problem.n_params))[0]
    fn, args = pickle.loads(pickle.dumps((task.fn, task.args)))
    assert fn is partition_chunk
    k, value = fn(*args)
    np.testing.assert_array_equal(value, task.fn(*task.args)[1])
    assert k == 0
    assert repr(scheme) == "PartialGradientCoding(s=1, kind='cyclic', order='staggered')"
    assert PartialGradientCoding(2, kind="frc", order="sorted").name == "gc-partial-frc-sorted"


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: PartialGradientCoding(-1), ValueError, "s must be >= 0"),
        (lambda: PartialGradientCoding(1.5), TypeError, "s must be an integer"),
        (lambda: PartialGradientCoding(1, kind="mds"), ValueError, "kind must be one of"),
        (lambda: PartialGradientCoding(1, order="random"), ValueError, "order must be one of"),
    ],
)
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_bindings_and_results():
    problem = _problems()["least-squares"]
    with pytest.raises(ValueError, match="s must be < n_workers"):
        PartialGradientCoding(6).bind(problem, 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="s \\+ 1 to divide n_workers"):
        PartialGradientCoding(3, kind="frc").bind(problem, 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_workers \\(61\\) must not exceed"):
        PartialGradientCoding(1).bind(problem, 61, np.random.default_rng(0))
    scheme = PartialGradientCoding(1)
    scheme.bind(problem, 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="worker 0 does not hold partition 3"):
        scheme.fold(0, (3, np.zeros(problem.n_params)))
