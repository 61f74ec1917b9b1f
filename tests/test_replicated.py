"""Tests of LWPD on fractional-repetition groups (lwpd.schemes.ReplicatedLWPD and
complementary_bases), of random-k sparsification (lwpd.schemes.RandomK), and of the
per-row-set Lipschitz bound ``problem.lipschitz(rows=...)``.

The oracles are plain NumPy: matrix ranks, ``np.linalg.pinv`` projections of each group's
exact gradient (``problem.gradient(theta, rows=group)``) onto the codewords it delivered,
row-weighted averages, and ``np.linalg.eigvalsh`` of the augmented Gram matrix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from reference import small_problems, uneven_shards
from lwpd import train
from lwpd.cluster import SimulatedCluster
from lwpd.placement import shard_rows
from lwpd.problems import LeastSquares, Logistic, Softmax
from lwpd.schemes import RandomK, ReplicatedLWPD
from lwpd.schemes._replicated import complementary_bases

N = 6  # workers: three groups of two


def _problems(m=60):
    return small_problems(m)


def _uneven_placement(m=60):
    """Explicit, deliberately unequal shards, so the groups weigh differently."""
    return [np.sort(part).astype(np.int64) for part in uneven_shards(m)]


def _block_sizes(n, block_size):
    size = min(block_size, n)
    return [size] * (n // size) + ([n % size] if n % size else [])


# ====================================================================== complementary_bases


@settings(max_examples=25, deadline=None)
@given(s=st.integers(1, 16))
def test_complementary_bases_span_from_every_complementary_prefix(s):
    first, second = complementary_bases(s)
    assert first.shape == second.shape == (s, s)
    assert np.linalg.matrix_rank(first) == s
    assert np.linalg.matrix_rank(second) == s
    for p in range(s + 1):
        assert np.linalg.matrix_rank(np.vstack([first[:p], second[: s - p]])) == s, p
    # codewords of PG(s-1, 3) lifted to {0, +1, -1}, weight at most two
    assert set(np.unique(second).tolist()) <= {-1.0, 0.0, 1.0}
    assert ((second != 0).sum(axis=1) <= 2).all()


@pytest.mark.parametrize("s", [1, 2, 3, 5, 8])
def test_complementary_bases_are_the_documented_codewords(s):
    first, second = complementary_bases(s)
    np.testing.assert_array_equal(first, np.eye(s))
    e = np.eye(s)
    if s == 1:
        expected = e
    else:
        expected = np.vstack([e[s - 2 - i] + e[s - 1 - i] for i in range(s - 1)] + [e[0] - e[1]])
    np.testing.assert_array_equal(second, expected)


@pytest.mark.parametrize("size,exc", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)])
def test_complementary_bases_refuse_bad_sizes_naming_size(size, exc):
    with pytest.raises(exc, match="size"):
        complementary_bases(size)


# ====================================================================== ReplicatedLWPD: set-up


def _bind(problem, scheme, placement=None, seed=3):
    shards = _uneven_placement(problem.n_samples) if placement is None else shard_rows(problem, N, placement, seed)
    scheme.bind(problem, N, np.random.default_rng(seed), shards=shards)
    groups = [np.sort(np.concatenate([shards[2 * g], shards[2 * g + 1]])) for g in range(N // 2)]
    return shards, groups


def _chunk_results(scheme, theta):
    """``{(worker, c): (indices, values)}`` for every task of a step at ``theta``."""
    results = {}
    for task in scheme.tasks(theta):
        assert task.key not in results
        results[task.key] = task.fn(*task.args)
    return results


def _oracle_estimate(problem, V, groups, sizes, folded_indices, theta):
    """The estimate the docstring promises, from scratch: each group's exact gradient
    projected (pinv) onto the codewords it delivered; per block the row-weighted mean over
    the groups that span it, or over every group's projection when none does.
    Returns ``(estimate, spanned)``."""
    m, n = problem.n_samples, problem.n_params
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    weights = np.array([rows.size for rows in groups], dtype=float) / m
    projections = np.zeros((len(groups), n))
    spanned = np.zeros((len(groups), len(sizes)), dtype=bool)
    for g, rows in enumerate(groups):
        idx = np.unique(np.asarray(folded_indices[g], dtype=np.int64))
        if not idx.size:
            continue
        Vg = V[idx]
        exact = problem.gradient(theta, rows=rows)
        projections[g] = np.linalg.pinv(Vg) @ (Vg @ exact)
        for b, size in enumerate(sizes):
            spanned[g, b] = np.linalg.matrix_rank(Vg[:, offsets[b]:offsets[b + 1]]) == size
    estimate = np.zeros(n)
    for b in range(len(sizes)):
        use = spanned[:, b] if spanned[:, b].any() else np.ones(len(groups), dtype=bool)
        cols = slice(offsets[b], offsets[b + 1])
        estimate[cols] = np.average(projections[use][:, cols], axis=0, weights=weights[use])
    return estimate, spanned


@pytest.mark.parametrize("problem_name", ["least-squares", "softmax"])
@pytest.mark.parametrize("block_size,chunks", [(3, 3), (8, 4), (4, 4), (5, 2), (8, 1)])
def test_each_member_streams_its_basis_in_processing_order(problem_name, block_size, chunks):
    problem = _problems()[problem_name]
    scheme = ReplicatedLWPD(block_size=block_size, chunks=chunks)
    _bind(problem, scheme)
    scheme.begin()
    V = scheme.codebook_.to_dense()
    sizes = _block_sizes(problem.n_params, block_size)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    results = _chunk_results(scheme, np.zeros(problem.n_params))
    assert sorted(results) == [(w, c) for w in range(N) for c in range(chunks)]
    for w in range(N):
        basis = complementary_bases  # member 0: unit vectors; member 1: the weight-2 basis
        for b, s in enumerate(sizes):
            expected = basis(s)[w % 2]
            cols = slice(offsets[b], offsets[b + 1])
            per_chunk = []
            for c in range(chunks):
                idx = np.asarray(results[(w, c)][0])
                in_block = idx[(np.abs(V[idx][:, cols]).sum(axis=1) > 0)]
                # every codeword lies inside one block
                outside = np.delete(V[in_block], np.arange(offsets[b], offsets[b + 1]), axis=1)
                assert not outside.any()
                per_chunk.append(V[in_block][:, cols])
            assert [len(p) for p in per_chunk] == [len(a) for a in np.array_split(np.arange(s), chunks)]
            np.testing.assert_array_equal(np.vstack(per_chunk), expected)


@pytest.mark.parametrize("problem_name", ["least-squares", "softmax"])
@pytest.mark.parametrize("block_size,chunks", [(3, 3), (8, 4), (4, 4), (5, 4), (7, 2)])
@pytest.mark.parametrize("placement", ["iid", "sorted", "explicit"])
def test_no_stragglers_gives_the_exact_gradient(problem_name, block_size, chunks, placement):
    problem = _problems()[problem_name]
    sizes = _block_sizes(problem.n_params, block_size)
    if problem_name == "softmax" and block_size in (4, 5, 7):
        assert sizes[-1] < sizes[0]  # a last, smaller block
    theta0 = np.random.default_rng(5).standard_normal(problem.n_params) * 0.3
    history = train(problem, ReplicatedLWPD(block_size=block_size, chunks=chunks), SimulatedCluster(N, seed=0),
                    deadline=1e9, max_steps=2, progress=False, seed=1, theta0=theta0,
                    placement=_uneven_placement() if placement == "explicit" else placement)
    assert history.received == history.dispatched == [N * chunks] * 2
    assert max(history.grad_error) < 1e-10


def test_odd_number_of_workers_is_refused_naming_n_workers():
    problem = _problems()["least-squares"]
    with pytest.raises(ValueError, match="n_workers"):
        ReplicatedLWPD().bind(problem, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_workers"):
        train(problem, ReplicatedLWPD(), SimulatedCluster(3, seed=0), deadline=1.0, max_steps=1, progress=False)


@pytest.mark.parametrize("block_size,chunks", [(4, 5), (3, 4), (1, 2)])
def test_more_chunks_than_block_size_is_refused_naming_chunks(block_size, chunks):
    problem = _problems()["softmax"]
    with pytest.raises(ValueError, match="chunks"):
        ReplicatedLWPD(block_size=block_size, chunks=chunks).bind(problem, N, np.random.default_rng(0))


def test_more_chunks_than_parameters_is_refused_naming_chunks():
    problem = LeastSquares(np.random.default_rng(0).standard_normal((20, 2)), np.zeros(20))  # 3 parameters
    with pytest.raises(ValueError, match="chunks"):
        ReplicatedLWPD(block_size=8, chunks=4).bind(problem, 4, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs,exc,name", [
    ({"block_size": 0}, ValueError, "block_size"),
    ({"block_size": 2.5}, TypeError, "block_size"),
    ({"chunks": 0}, ValueError, "chunks"),
    ({"wait_for": 0.0}, ValueError, "wait_for"),
    ({"wait_for": 1.5}, ValueError, "wait_for"),
    ({"memory": 1}, TypeError, "memory"),
    ({"max_age": -1}, ValueError, "max_age"),
])
def test_bad_parameters_are_refused_naming_them(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        ReplicatedLWPD(**kwargs)


# ====================================================================== ReplicatedLWPD: decoding


CONFIGS = [("least-squares", 4, 2), ("least-squares", 8, 4), ("softmax", 8, 4), ("softmax", 3, 3), ("softmax", 5, 2)]


@pytest.mark.parametrize("problem_name,block_size,chunks", CONFIGS)
def test_complementary_prefixes_give_the_exact_gradient(problem_name, block_size, chunks):
    """Member 0 of every group sends its first p chunks, member 1 its first C - p."""
    problem = _problems()[problem_name]
    scheme = ReplicatedLWPD(block_size=block_size, chunks=chunks)
    _bind(problem, scheme)
    theta = np.random.default_rng(7).standard_normal(problem.n_params) * 0.5
    exact = problem.gradient(theta)
    for p in range(chunks + 1):
        scheme.begin()
        results = _chunk_results(scheme, theta)
        received = 0
        for g in range(N // 2):
            for worker, count in ((2 * g, p), (2 * g + 1, chunks - p)):
                for c in range(count):
                    scheme.fold(worker, results[(worker, c)])
                    received += 1
        np.testing.assert_allclose(scheme.estimate(), exact, rtol=1e-9, atol=1e-12)
        assert scheme.spanned().all()
        assert scheme.ready(received)


@settings(max_examples=40, deadline=None)
@given(config=st.sampled_from(CONFIGS), data=st.data())
def test_any_prefixes_per_group_and_any_fold_order_give_the_exact_gradient(config, data):
    problem_name, block_size, chunks = config
    problem = _problems()[problem_name]
    scheme = ReplicatedLWPD(block_size=block_size, chunks=chunks)
    _bind(problem, scheme)
    theta = np.random.default_rng(8).standard_normal(problem.n_params) * 0.5
    scheme.begin()
    results = _chunk_results(scheme, theta)
    keys = []
    for g in range(N // 2):
        p = data.draw(st.integers(0, chunks))
        extra = data.draw(st.integers(0, p))  # member 1 may do more than its complement
        keys += [(2 * g, c) for c in range(p)] + [(2 * g + 1, c) for c in range(min(chunks, chunks - p + extra))]
    for key in data.draw(st.permutations(keys)):
        scheme.fold(key[0], results[key])
    np.testing.assert_allclose(scheme.estimate(), problem.gradient(theta), rtol=1e-9, atol=1e-12)
    assert scheme.spanned().all()


@settings(max_examples=40, deadline=None)
@given(config=st.sampled_from(CONFIGS), data=st.data())
def test_any_arrivals_decode_as_the_row_weighted_mean_of_group_projections(config, data):
    """Whatever subset of chunks arrives, in any order: per block, the row-weighted mean of
    the exact group gradients over the groups that span it, else of every group's
    projection; ready() is True exactly when every group spans every block."""
    problem_name, block_size, chunks = config
    problem = _problems()[problem_name]
    scheme = ReplicatedLWPD(block_size=block_size, chunks=chunks, partial=True)
    _, groups = _bind(problem, scheme)
    V = scheme.codebook_.to_dense()
    sizes = _block_sizes(problem.n_params, block_size)
    theta = np.random.default_rng(9).standard_normal(problem.n_params) * 0.5
    scheme.begin()
    results = _chunk_results(scheme, theta)
    keys = data.draw(st.lists(st.sampled_from(sorted(results)), unique=True, max_size=len(results)))
    keys = data.draw(st.permutations(keys))
    folded = [[] for _ in groups]
    assert scheme.estimate() is None
    assert not scheme.ready(0)
    for count, key in enumerate(keys, start=1):
        scheme.fold(key[0], results[key])
        folded[key[0] // 2].extend(np.asarray(results[key][0]).tolist())
        _, spanned = _oracle_estimate(problem, V, groups, sizes, folded, theta)
        assert scheme.ready(count) == bool(spanned.all())
    if not keys:
        assert scheme.estimate() is None
        return
    expected, spanned = _oracle_estimate(problem, V, groups, sizes, folded, theta)
    np.testing.assert_allclose(scheme.estimate(), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(scheme.spanned(), spanned)


@pytest.mark.parametrize("problem_name,block_size,chunks", CONFIGS)
def test_a_block_one_group_misses_is_the_weighted_mean_of_the_spanning_groups(problem_name, block_size, chunks):
    problem = _problems()[problem_name]
    scheme = ReplicatedLWPD(block_size=block_size, chunks=chunks, partial=True)
    _, groups = _bind(problem, scheme)
    V = scheme.codebook_.to_dense()
    sizes = _block_sizes(problem.n_params, block_size)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    theta = np.random.default_rng(10).standard_normal(problem.n_params) * 0.5
    exact = [problem.gradient(theta, rows=rows) for rows in groups]
    weights = [rows.size for rows in groups]
    for missing in range(len(sizes)):
        cols = slice(offsets[missing], offsets[missing + 1])
        scheme.begin()
        results = _chunk_results(scheme, theta)
        for (worker, c), (indices, values) in results.items():
            indices, values = np.asarray(indices), np.asarray(values)
            if worker // 2 == 0:  # group 0 sends nothing for the block `missing`
                keep = ~np.abs(V[indices][:, cols]).sum(axis=1).astype(bool)
                indices, values = indices[keep], values[keep]
            scheme.fold(worker, (indices, values))
        estimate = scheme.estimate()
        expected = np.average(exact, axis=0, weights=weights)  # all groups: the full gradient
        np.testing.assert_allclose(expected, problem.gradient(theta), rtol=1e-10, atol=1e-13)
        expected[cols] = np.average([exact[1][cols], exact[2][cols]], axis=0, weights=weights[1:])
        np.testing.assert_allclose(estimate, expected, rtol=1e-9, atol=1e-12)
        spanned = scheme.spanned()
        assert not spanned[0, missing] and spanned[0].sum() == len(sizes) - 1
        assert spanned[1:].all()
        assert not scheme.ready(len(results))


@pytest.mark.parametrize("problem_name,block_size,chunks", [c for c in CONFIGS if c[1] > c[2] or c[2] > 1])
def test_a_block_no_group_spans_is_the_weighted_mean_of_the_projections(problem_name, block_size, chunks):
    """Only member 0's first chunk of every group: its unit vectors, so each group's
    projection is its gradient on those coordinates and zero elsewhere."""
    problem = _problems()[problem_name]
    scheme = ReplicatedLWPD(block_size=block_size, chunks=chunks, partial=True)
    _, groups = _bind(problem, scheme)
    V = scheme.codebook_.to_dense()
    m = problem.n_samples
    theta = np.random.default_rng(11).standard_normal(problem.n_params) * 0.5
    scheme.begin()
    results = _chunk_results(scheme, theta)
    expected = np.zeros(problem.n_params)
    for g, rows in enumerate(groups):
        indices, values = results[(2 * g, 0)]
        scheme.fold(2 * g, (indices, values))
        coords = np.flatnonzero(np.abs(V[np.asarray(indices)]).sum(axis=0))
        assert coords.size == len(indices)  # unit vectors
        mask = np.zeros(problem.n_params)
        mask[coords] = 1.0
        expected += rows.size / m * mask * problem.gradient(theta, rows=rows)
    np.testing.assert_allclose(scheme.estimate(), expected, rtol=1e-9, atol=1e-12)
    assert not scheme.spanned().any()
    assert not scheme.ready(N // 2)


def _memory_scheme(problem, **kwargs):
    scheme = ReplicatedLWPD(block_size=4, chunks=2, memory=True, **kwargs)
    shards, groups = _bind(problem, scheme)
    return scheme, shards, groups


def _lipschitz_oracle(problem, rows, curvature):
    X = problem.X[rows]
    A = np.column_stack([X, np.ones(len(rows))])
    return curvature * np.linalg.eigvalsh(A.T @ A)[-1] / len(rows) + problem.alpha


@pytest.mark.parametrize("problem_name", ["least-squares", "softmax"])
def test_memory_fills_a_silent_group_from_its_previous_values(problem_name):
    problem = _problems()[problem_name]
    scheme, _, groups = _memory_scheme(problem)
    rng = np.random.default_rng(12)
    theta0, theta1 = rng.standard_normal((2, problem.n_params)) * 0.5
    # step 0: everything arrives
    scheme.begin()
    for (worker, _c), result in _chunk_results(scheme, theta0).items():
        scheme.fold(worker, result)
    np.testing.assert_allclose(scheme.estimate(), problem.gradient(theta0), rtol=1e-9, atol=1e-12)
    assert scheme.staleness() == (0.0, 0.0)
    # step 1: group 0 sends nothing; groups 1 and 2 answer at theta1
    scheme.begin()
    for (worker, _c), result in _chunk_results(scheme, theta1).items():
        if worker // 2 != 0:
            scheme.fold(worker, result)
    m = problem.n_samples
    expected = (groups[0].size * problem.gradient(theta0, rows=groups[0])
                + groups[1].size * problem.gradient(theta1, rows=groups[1])
                + groups[2].size * problem.gradient(theta1, rows=groups[2])) / m
    np.testing.assert_allclose(scheme.estimate(), expected, rtol=1e-9, atol=1e-12)
    assert scheme.spanned().all()
    # the step rule's staleness: group 0's curvature share times its age (1 step)
    curvature = {"least-squares": 1.0, "softmax": 0.5}[problem_name]
    full = _lipschitz_oracle(problem, np.arange(m), curvature)
    share = groups[0].size / m * _lipschitz_oracle(problem, groups[0], curvature) / full
    staleness, oldest = scheme.staleness()
    assert oldest == 1.0
    assert staleness == pytest.approx(share, rel=1e-9)


def test_memory_counts_late_results_as_kept_values_with_their_age():
    """A slow group's step-0 results arrive during step 1 (``age=1``): they fill its
    blocks as kept values computed at the old parameters, and the staleness says so."""
    problem = _problems()["softmax"]
    scheme, _, groups = _memory_scheme(problem)
    rng = np.random.default_rng(15)
    theta0, theta1 = rng.standard_normal((2, problem.n_params)) * 0.5
    m = problem.n_samples
    scheme.begin()
    step0 = _chunk_results(scheme, theta0)
    for (worker, _c), result in step0.items():
        if worker // 2 != 0:  # group 0 is still working
            scheme.fold(worker, result)
    expected0 = np.average([problem.gradient(theta0, rows=groups[g]) for g in (1, 2)], axis=0,
                           weights=[groups[1].size, groups[2].size])
    np.testing.assert_allclose(scheme.estimate(), expected0, rtol=1e-9, atol=1e-12)
    assert not scheme.spanned()[0].any()
    scheme.begin()
    for (worker, _c), result in step0.items():
        if worker // 2 == 0:
            scheme.fold(worker, result, age=1)
    for (worker, _c), result in _chunk_results(scheme, theta1).items():
        if worker // 2 != 0:
            scheme.fold(worker, result)
    expected1 = (groups[0].size * problem.gradient(theta0, rows=groups[0])
                 + groups[1].size * problem.gradient(theta1, rows=groups[1])
                 + groups[2].size * problem.gradient(theta1, rows=groups[2])) / m
    np.testing.assert_allclose(scheme.estimate(), expected1, rtol=1e-9, atol=1e-12)
    assert scheme.spanned().all()
    full = _lipschitz_oracle(problem, np.arange(m), 0.5)
    share = groups[0].size / m * _lipschitz_oracle(problem, groups[0], 0.5) / full
    staleness, oldest = scheme.staleness()
    assert oldest == 1.0
    assert staleness == pytest.approx(share, rel=1e-9)


def test_memory_mixes_fresh_and_kept_codewords_of_a_group_by_projection():
    """Group 0 sends only member 1's first chunk at step 1: its block is decoded from those
    fresh codewords together with the kept (step-0) values of the rest."""
    problem = _problems()["least-squares"]
    scheme, _, groups = _memory_scheme(problem)
    V = scheme.codebook_.to_dense()
    rng = np.random.default_rng(13)
    theta0, theta1 = rng.standard_normal((2, problem.n_params)) * 0.5
    scheme.begin()
    step0 = _chunk_results(scheme, theta0)
    for (worker, _c), result in step0.items():
        scheme.fold(worker, result)
    scheme.estimate()
    scheme.begin()
    step1 = _chunk_results(scheme, theta1)
    for (worker, c), result in step1.items():
        if worker // 2 != 0 or (worker, c) == (1, 0):
            scheme.fold(worker, result)
    fresh = set(np.asarray(step1[(1, 0)][0]).tolist())
    group0 = sorted({int(j) for w in (0, 1) for c in range(2) for j in step0[(w, c)][0]})
    g_old, g_new = problem.gradient(theta0, rows=groups[0]), problem.gradient(theta1, rows=groups[0])
    values = np.array([V[j] @ (g_new if j in fresh else g_old) for j in group0])
    x0 = np.linalg.pinv(V[group0]) @ values
    m = problem.n_samples
    expected = (groups[0].size * x0 + groups[1].size * problem.gradient(theta1, rows=groups[1])
                + groups[2].size * problem.gradient(theta1, rows=groups[2])) / m
    np.testing.assert_allclose(scheme.estimate(), expected, rtol=1e-9, atol=1e-12)
    assert scheme.spanned().all()


def test_without_memory_a_silent_group_is_left_out():
    problem = _problems()["softmax"]
    scheme = ReplicatedLWPD(block_size=4, chunks=2, partial=True)
    _, groups = _bind(problem, scheme)
    rng = np.random.default_rng(14)
    theta0, theta1 = rng.standard_normal((2, problem.n_params)) * 0.5
    scheme.begin()
    for (worker, _c), result in _chunk_results(scheme, theta0).items():
        scheme.fold(worker, result)
    scheme.estimate()
    scheme.begin()
    for (worker, _c), result in _chunk_results(scheme, theta1).items():
        if worker // 2 != 0:
            scheme.fold(worker, result)
    expected = np.average([problem.gradient(theta1, rows=groups[g]) for g in (1, 2)], axis=0,
                          weights=[groups[1].size, groups[2].size])
    np.testing.assert_allclose(scheme.estimate(), expected, rtol=1e-9, atol=1e-12)
    assert not scheme.spanned()[0].any() and scheme.spanned()[1:].all()
    assert scheme.staleness() == (0.0, 0.0)


@pytest.mark.parametrize("s", range(1, 17))
def test_the_identity_twin_spans_from_every_complementary_prefix(s):
    first, second = complementary_bases(s, second="identity")
    np.testing.assert_array_equal(second, np.eye(s)[::-1])
    for p in range(s + 1):
        assert np.linalg.matrix_rank(np.vstack([first[:p], second[: s - p]])) == s


@pytest.mark.parametrize("problem_name", ["least-squares", "softmax"])
def test_the_identity_twin_is_exact_and_costs_what_replication_does(problem_name):
    """With the second member on the reversed unit vectors, every arrival still decodes the
    exact gradient, and a worker's whole basis costs two units of compute (replication's),
    where the weight-2 basis costs more: its codewords touch two coordinates."""
    problem = _problems()[problem_name]
    twin = ReplicatedLWPD(block_size=4, chunks=2, second="identity")
    coded = ReplicatedLWPD(block_size=4, chunks=2)
    for scheme in (twin, coded):
        _bind(problem, scheme)
        scheme.begin()
    theta = np.random.default_rng(16).standard_normal(problem.n_params) * 0.5
    for (worker, _c), result in _chunk_results(twin, theta).items():
        twin.fold(worker, result)
    np.testing.assert_allclose(twin.estimate(), problem.gradient(theta), rtol=1e-9, atol=1e-12)
    work = lambda scheme, member: sum(t.work for t in scheme.tasks(theta) if t.worker == member)  # noqa: E731
    assert work(twin, 1) == pytest.approx(work(twin, 0))
    assert work(coded, 1) > work(coded, 0) == pytest.approx(work(twin, 0))
    assert "second='identity'" in repr(twin)
    with pytest.raises(ValueError, match="second"):
        ReplicatedLWPD(second="hadamard")


def test_without_memory_or_partial_there_is_no_estimate_until_every_group_spans():
    """The default is exact or nothing, as replication: one group silent, no estimate; all
    groups, the exact gradient."""
    problem = _problems()["softmax"]
    scheme = ReplicatedLWPD(block_size=4, chunks=2)
    _bind(problem, scheme)
    theta = np.random.default_rng(15).standard_normal(problem.n_params) * 0.5
    scheme.begin()
    results = _chunk_results(scheme, theta)
    for (worker, _c), result in results.items():
        if worker // 2 != 0:
            scheme.fold(worker, result)
    assert scheme.estimate() is None and not scheme.ready(len(results))
    for (worker, _c), result in results.items():
        if worker // 2 == 0:
            scheme.fold(worker, result)
    assert scheme.ready(len(results))
    np.testing.assert_allclose(scheme.estimate(), problem.gradient(theta), rtol=1e-9, atol=1e-12)
    assert "partial=True" in repr(ReplicatedLWPD(partial=True))
    with pytest.raises(TypeError, match="partial"):
        ReplicatedLWPD(partial=1)


def test_memory_ready_stops_at_wait_for_of_the_chunks():
    problem = _problems()["least-squares"]
    scheme, _, _ = _memory_scheme(problem, wait_for=0.5)
    scheme.begin()
    assert scheme.ready(math.ceil(0.5 * N * 2))
    assert not scheme.ready(math.ceil(0.5 * N * 2) - 1)


# ====================================================================== RandomK


def _randk_bound(problem, share, seed=0, placement=None, chunks=None):
    scheme = RandomK(share=share, chunks=chunks)
    shards = _uneven_placement(problem.n_samples) if placement is None else placement
    scheme.bind(problem, N, np.random.default_rng(seed), shards=shards)
    return scheme, [np.sort(np.asarray(s)) for s in shards]


def _coordinates(scheme):
    """Coordinate of each codeword of RandomK's codebook (checked to be unit vectors)."""
    V = scheme.codebook_.to_dense()
    assert V.shape == (scheme.problem.n_params, scheme.problem.n_params)
    assert ((V != 0).sum(axis=1) == 1).all() and (V[V != 0] == 1).all()
    coords = np.argmax(V, axis=1)
    assert sorted(coords.tolist()) == list(range(V.shape[1]))
    return coords


@settings(max_examples=30, deadline=None)
@given(d=st.integers(1, 20), share=st.floats(0.01, 1.0), seed=st.integers(0, 1000))
def test_randomk_each_worker_answers_k_distinct_coordinates_per_step(d, share, seed):
    rng = np.random.default_rng(seed)
    problem = LeastSquares(rng.standard_normal((30, d)), rng.standard_normal(30))
    n = problem.n_params
    k = max(1, round(share * n))
    scheme, _ = _randk_bound(problem, share, seed, placement=shard_rows(problem, N, "iid", seed))
    theta = np.zeros(n)
    seen = []
    for _step in range(3):
        scheme.begin()
        per_worker = [[] for _ in range(N)]
        for task in scheme.tasks(theta):
            per_worker[task.worker].extend(np.asarray(task.args[3]).tolist())
            assert task.floats == len(task.args[3])
        for answered in per_worker:
            assert len(answered) == k
            assert len(set(answered)) == k
            assert all(0 <= j < n for j in answered)
        seen.append([tuple(sorted(a)) for a in per_worker])
    if 1 <= k < n and n >= 3:  # fresh random choices each step (n >= 3: more than a few choices)
        assert len({tuple(s) for s in seen}) > 1


@pytest.mark.parametrize("problem_name", ["least-squares", "softmax"])
@pytest.mark.parametrize("share", [0.2, 0.5, 0.75, 1.0])
def test_randomk_sends_k_floats_per_worker_and_step(problem_name, share):
    problem = _problems()[problem_name]
    k = max(1, round(share * problem.n_params))
    history = train(problem, RandomK(share=share), SimulatedCluster(N, seed=0), deadline=1e9, max_steps=3,
                    progress=False, seed=2)
    assert history.received == history.dispatched
    for floats in history.floats:
        assert floats / N == k


@settings(max_examples=30, deadline=None)
@given(problem_name=st.sampled_from(["least-squares", "softmax"]), share=st.sampled_from([0.15, 0.3, 0.6, 1.0]),
       seed=st.integers(0, 10_000), data=st.data())
def test_randomk_estimate_is_the_per_coordinate_mean_over_the_answering_shards(problem_name, share, seed, data):
    problem = _problems()[problem_name]
    scheme, shards = _randk_bound(problem, share, seed)
    coords = _coordinates(scheme)
    m, n = problem.n_samples, problem.n_params
    theta = np.random.default_rng(seed).standard_normal(n) * 0.5
    scheme.begin()
    chunks = {(w, c): np.asarray(part[0]) for w, parts in enumerate(scheme._chunks) for c, part in enumerate(parts)}
    tasks = scheme.tasks(theta)
    for task in tasks:
        np.testing.assert_array_equal(task.args[3], chunks[task.key])
    everything = data.draw(st.booleans())
    arrived = tasks if everything else data.draw(st.lists(st.sampled_from(tasks), unique_by=lambda t: t.key))
    arrived = data.draw(st.permutations(arrived))
    answers = [[] for _ in range(n)]  # per coordinate: the scaled shard gradient entries that answered it
    for task in arrived:
        w = task.worker
        scheme.fold(w, task.fn(*task.args))
        g_w = problem.gradient(theta, rows=shards[w])
        for j in chunks[task.key]:
            answers[coords[j]].append(N * shards[w].size / m * g_w[coords[j]])
    expected = np.array([np.mean(a) if a else 0.0 for a in answers])
    estimate = scheme.estimate()
    if not arrived:
        assert estimate is None
        return
    np.testing.assert_allclose(estimate, expected, rtol=1e-9, atol=1e-12)


def test_randomk_leaves_unanswered_coordinates_at_zero_and_weights_uneven_shards():
    """A deterministic companion of the property test: several seeds, every chunk
    arriving, a small share so that some coordinates go unanswered."""
    problem = _problems()["softmax"]
    m, n = problem.n_samples, problem.n_params
    theta = np.random.default_rng(0).standard_normal(n) * 0.5
    unanswered = partially = 0
    for seed in range(6):
        scheme, shards = _randk_bound(problem, 0.1, seed)
        coords = _coordinates(scheme)
        scheme.begin()
        count = np.zeros(n)
        total = np.zeros(n)
        for w, parts in enumerate(scheme._chunks):
            g_w = problem.gradient(theta, rows=shards[w])
            for indices, _work, _rerun in parts:
                count[coords[indices]] += 1
                total[coords[indices]] += N * shards[w].size / m * g_w[coords[indices]]
        for task in scheme.tasks(theta):
            scheme.fold(task.worker, task.fn(*task.args))
        expected = np.divide(total, count, out=np.zeros(n), where=count > 0)
        np.testing.assert_allclose(scheme.estimate(), expected, rtol=1e-9, atol=1e-12)
        assert (scheme.estimate()[count == 0] == 0).all()
        unanswered += int((count == 0).sum())
        partially += int(((count > 0) & (count < N)).sum())
    assert unanswered > 0 and partially > 0  # both branches of the oracle were exercised


def test_randomk_with_few_parameters_and_many_workers_still_answers_one_coordinate_each():
    """k = round(0.3 * 2) = 1 coordinate per worker: nobody answers nothing, so nothing
    should be refused (the "some worker would answer nothing" rule is LWPD's allocation of
    each codeword to round(share * n_workers) shards, not random-k's)."""
    rng = np.random.default_rng(0)
    problem = LeastSquares(rng.standard_normal((30, 1)), rng.standard_normal(30))  # 2 parameters
    scheme = RandomK(share=0.3)
    scheme.bind(problem, N, np.random.default_rng(0))
    scheme.begin()
    answered = [[] for _ in range(N)]
    for task in scheme.tasks(np.zeros(2)):
        answered[task.worker].extend(np.asarray(task.args[3]).tolist())
    assert [len(a) for a in answered] == [round(0.3 * 2)] * N


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_randomk_refuses_a_share_outside_the_unit_interval(share):
    with pytest.raises(ValueError, match="share"):
        RandomK(share=share)


def test_randomk_is_ready_after_wait_for_of_its_chunks():
    problem = _problems()["softmax"]
    scheme = RandomK(share=0.5, wait_for=0.5)
    scheme.bind(problem, N, np.random.default_rng(0))
    scheme.begin()
    total = len(scheme.tasks(np.zeros(problem.n_params)))
    assert scheme.ready(math.ceil(0.5 * total))
    assert not scheme.ready(math.ceil(0.5 * total) - 1)


# ====================================================================== lipschitz(rows=...)


def _augmented(X, rows, weights=None, intercept=True):
    Xr = X[rows].toarray() if sp.issparse(X) else X[rows]
    A = np.column_stack([Xr, np.ones(len(rows))]) if intercept else Xr
    if weights is not None:
        A = A * np.sqrt(weights[rows])[:, None]
    return A


def _norm_sq(A):
    return np.linalg.eigvalsh(A.T @ A)[-1]


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["least-squares", "logistic", "softmax"]),
    d=st.integers(1, 9),
    alpha=st.sampled_from([0.0, 0.3]),
    weighted=st.booleans(),
    sparse=st.booleans(),
    intercept=st.booleans(),
    data=st.data(),
)
def test_lipschitz_over_rows_is_the_curvature_times_the_augmented_norm(kind, d, alpha, weighted, sparse, intercept,
                                                                        data):
    m = 25
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    X = rng.standard_normal((m, d)) * rng.uniform(0.5, 3.0, d)
    if sparse:
        X[rng.random((m, d)) < 0.5] = 0.0
    w = rng.uniform(0.0, 3.0, m) if weighted else None
    y = {"least-squares": rng.standard_normal(m), "logistic": np.arange(m) % 2, "softmax": np.arange(m) % 3}[kind]
    cls = {"least-squares": LeastSquares, "logistic": Logistic, "softmax": Softmax}[kind]
    curvature = {"least-squares": 1.0, "logistic": 0.25, "softmax": 0.5}[kind]
    problem = cls(sp.csr_matrix(X) if sparse else X, y, alpha, sample_weight=w, fit_intercept=intercept)
    units = None if w is None else w * m / w.sum()
    rows = np.array(sorted(data.draw(st.sets(st.integers(0, m - 1), min_size=1, max_size=m))))
    expected = curvature * _norm_sq(_augmented(X, rows, units, intercept)) / rows.size + alpha
    got = problem.lipschitz(rows=rows)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert problem.lipschitz(rows=rows) == got
    assert problem.lipschitz(rows=rows.tolist()) == got  # any array-like of the same rows
    # over all rows it is the full bound
    everything = curvature * _norm_sq(_augmented(X, np.arange(m), units, intercept)) / m + alpha
    assert problem.lipschitz(rows=np.arange(m)) == pytest.approx(everything, rel=1e-9, abs=1e-12)
    assert problem.lipschitz() == pytest.approx(everything, rel=1e-9, abs=1e-12)


def test_lipschitz_of_a_shard_bounds_its_gradients_curvature():
    """Finite differences: for least squares the gradient over rows moves by exactly its
    Hessian, whose largest eigenvalue the bound is (up to the unpenalised intercept)."""
    problem = _problems()["least-squares"]
    rows = np.arange(0, 60, 4)
    L = problem.lipschitz(rows=rows)
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(problem.n_params)
    ratios = []
    for _ in range(50):
        step = rng.standard_normal(problem.n_params) * 1e-3
        diff = problem.gradient(theta + step, rows=rows) - problem.gradient(theta, rows=rows)
        ratios.append(np.linalg.norm(diff) / np.linalg.norm(step))
    assert max(ratios) <= L * (1 + 1e-9)
    assert max(ratios) > 0.5 * L


def test_lipschitz_is_cached_per_row_set(monkeypatch):
    problem = _problems()["logistic"]
    calls = []
    original = problem._augmented_norm_sq

    def counting(rows=None):
        calls.append(None if rows is None else tuple(np.asarray(rows).tolist()))
        return original(rows)

    monkeypatch.setattr(problem, "_augmented_norm_sq", counting)
    a = problem.lipschitz(rows=[1, 2, 3, 10])
    b = problem.lipschitz(rows=np.array([1, 2, 3, 10]))
    assert a == b and len(calls) == 1
    c = problem.lipschitz(rows=[1, 2, 3, 11])
    assert len(calls) == 2 and c != a
    assert problem.lipschitz(rows=[1, 2, 3, 11]) == c and len(calls) == 2
    expected = 0.25 * _norm_sq(_augmented(problem.X, np.array([1, 2, 3, 11]))) / 4 + problem.alpha
    assert c == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("rows,exc", [
    ([], ValueError),
    (np.array([], dtype=np.int64), ValueError),
    ([0, 60], IndexError),
    ([-1, 3], IndexError),
    (np.ones(60, dtype=bool), TypeError),
    ([0.0, 1.0], TypeError),
    (np.arange(6).reshape(2, 3), ValueError),
])
def test_lipschitz_refuses_bad_rows_naming_rows(rows, exc):
    problem = _problems()["softmax"]
    with pytest.raises(exc, match="rows"):
        problem.lipschitz(rows=rows)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), pairs=st.integers(1, 4))
def test_fresh_counts_kept_on_arrival_equal_the_received_rows(seed, pairs):
    """Without memory, the codewords per (group, block) that ready() reads are kept as results
    arrive; after every arrival they equal the count over the received rows, and ready()
    says what the full check (enough rows everywhere, then every group spans every block) says."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40 * pairs, 9))
    problem = LeastSquares(X, X @ np.ones(9))
    n = 2 * pairs
    scheme = ReplicatedLWPD(block_size=4)
    scheme.bind(problem, n, np.random.default_rng(seed))
    theta = rng.standard_normal(problem.n_params)
    tasks = scheme.tasks(theta)
    scheme.begin()
    for count, t in enumerate(rng.permutation(len(tasks)), start=1):
        task = tasks[t]
        scheme.fold(task.worker, task.fn(*task.args))
        reference = np.add.reduceat(scheme._received, scheme._block_first, axis=1)
        np.testing.assert_array_equal(scheme._fresh_counts, reference)
        enough = not (reference < scheme._sizes).any()
        if enough:
            scheme.estimate()
        assert scheme.ready(count) == (enough and bool(scheme._spanned.all()))
