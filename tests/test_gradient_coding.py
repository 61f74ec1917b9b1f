"""Tests of the gradient-coding encoding matrices (Tandon et al., ICML 2017)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lwpd._gradient_coding import cyclic_matrix, decoding_vector, frc_matrix, partition_assignment

GRID = [(n, s) for n in range(1, 9) for s in range(n)]
FRC_GRID = [(n, s) for n, s in GRID if n % (s + 1) == 0]


def _check_every_subset(B: np.ndarray, s: int, seed: int) -> None:
    n = B.shape[0]
    G = np.random.default_rng(seed).standard_normal((n, 3))
    full = G.sum(axis=0)
    ones = np.ones(n)
    for subset in itertools.combinations(range(n), n - s):
        a = decoding_vector(B, list(subset))
        assert a.shape == (n - s,)
        np.testing.assert_allclose(a @ B[list(subset)], ones, atol=1e-8, rtol=0)
        coded = B[list(subset)] @ G  # what the arrived workers send
        np.testing.assert_allclose(a @ coded, full, atol=1e-8, rtol=0)


@pytest.mark.parametrize(("n", "s"), GRID)
def test_cyclic_recovers_from_every_subset(n, s):
    B = cyclic_matrix(n, s, rng=100 * n + s)
    assert B.shape == (n, n) and B.dtype == np.float64
    _check_every_subset(B, s, seed=n + s)


@pytest.mark.parametrize(("n", "s"), FRC_GRID)
def test_frc_recovers_from_every_subset(n, s):
    B = frc_matrix(n, s)
    assert B.shape == (n, n)
    assert set(np.unique(B)) <= {0.0, 1.0}
    _check_every_subset(B, s, seed=n * s + 7)


@pytest.mark.parametrize(("n", "s"), GRID)
def test_cyclic_support(n, s):
    B = cyclic_matrix(n, s, rng=3)
    parts = partition_assignment(B)
    assert len(parts) == n
    for i, p in enumerate(parts):
        assert p.dtype == np.int64
        assert p.tolist() == sorted((i + k) % n for k in range(s + 1))
        assert B[i, i] == 1.0
    # every partition is held by exactly s + 1 workers
    counts = np.bincount(np.concatenate(parts), minlength=n)
    assert (counts == s + 1).all()


@pytest.mark.parametrize(("n", "s"), FRC_GRID)
def test_frc_groups(n, s):
    parts = partition_assignment(frc_matrix(n, s))
    size = s + 1
    for i, p in enumerate(parts):
        g = i // size
        assert p.tolist() == list(range(g * size, (g + 1) * size))


def test_cyclic_is_reproducible_and_seeded():
    np.testing.assert_array_equal(cyclic_matrix(6, 2, rng=5), cyclic_matrix(6, 2, rng=5))
    np.testing.assert_array_equal(cyclic_matrix(6, 2), cyclic_matrix(6, 2))
    assert not np.array_equal(cyclic_matrix(6, 2, rng=5), cyclic_matrix(6, 2, rng=6))
    gen = np.random.default_rng(0)
    assert not np.array_equal(cyclic_matrix(6, 2, rng=gen), cyclic_matrix(6, 2, rng=gen))


def test_s_zero_is_identity():
    np.testing.assert_array_equal(cyclic_matrix(5, 0, rng=1), np.eye(5))
    np.testing.assert_array_equal(frc_matrix(5, 0), np.eye(5))


@pytest.mark.parametrize(("n", "s"), [(n, s) for n, s in GRID if n - s >= 2])
def test_cyclic_too_few_arrivals_raise(n, s):
    B = cyclic_matrix(n, s, rng=11 * n + s)
    for subset in itertools.combinations(range(n), n - s - 1):
        with pytest.raises(ValueError, match="arrived"):
            decoding_vector(B, list(subset))


def test_frc_missing_group_raises_but_one_per_group_suffices():
    B = frc_matrix(6, 2)
    # one worker of each group is enough for FRC, even though fewer than n - s arrived
    a = decoding_vector(B, [0, 4])
    np.testing.assert_allclose(a @ B[[0, 4]], np.ones(6), atol=1e-12)
    # a whole group missing (3 stragglers > s = 2) cannot be decoded
    with pytest.raises(ValueError, match=r"arrived = \[0, 1, 2\]"):
        decoding_vector(B, [0, 1, 2])


def test_decoding_vector_argument_errors():
    B = cyclic_matrix(4, 1, rng=0)
    with pytest.raises(ValueError, match="arrived is empty"):
        decoding_vector(B, [])
    with pytest.raises(ValueError, match="distinct"):
        decoding_vector(B, [0, 0, 1])
    with pytest.raises(IndexError, match="arrived"):
        decoding_vector(B, [0, 1, 4])
    with pytest.raises(TypeError, match="arrived"):
        decoding_vector(B, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="square"):
        decoding_vector(np.ones((3, 4)), [0, 1])
    with pytest.raises(ValueError, match="B must be 2-D"):
        decoding_vector(np.ones(4), [0, 1])
    with pytest.raises(ValueError, match="tol"):
        decoding_vector(B, [0, 1, 2], tol=0.0)
    with pytest.raises(ValueError, match="B must be finite"):
        partition_assignment(np.full((2, 2), np.nan))


def test_single_worker():
    B = cyclic_matrix(1, 0)
    np.testing.assert_array_equal(B, [[1.0]])
    np.testing.assert_allclose(decoding_vector(B, [0]), [1.0])
    assert [p.tolist() for p in partition_assignment(frc_matrix(1, 0))] == [[0]]


@pytest.mark.parametrize("make", [frc_matrix, cyclic_matrix])
def test_size_errors(make):
    with pytest.raises(ValueError, match="n_workers"):
        make(0, 0)
    with pytest.raises(ValueError, match="s must be in"):
        make(4, 4)
    with pytest.raises(ValueError, match="s must be in"):
        make(4, -1)
    with pytest.raises(TypeError, match="n_workers"):
        make(4.0, 1)
    with pytest.raises(TypeError, match="s must be an integer"):
        make(4, True)


def test_frc_divisibility_error():
    with pytest.raises(ValueError, match=r"s \+ 1 to divide n_workers.*s \+ 1 = 3.*n_workers = 7"):
        frc_matrix(7, 2)


def test_cyclic_bad_rng():
    with pytest.raises(TypeError, match="rng"):
        cyclic_matrix(4, 1, rng="seed")
    with pytest.raises(ValueError, match="rng"):
        cyclic_matrix(4, 1, rng=-1)


# ---------------------------------------------------------------------------- the scheme's fast paths
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_scheme_readiness_and_frc_closed_form_agree_with_the_general_solve(data):
    """Arrivals in any order: after each one, GradientCoding.ready agrees with whether the
    general least-squares solve (decoding_vector) succeeds, and the FRC closed-form decoding
    vector equals its minimum-norm solution; the decoded estimate is the full gradient."""
    from lwpd.problems import LeastSquares
    from lwpd.schemes import GradientCoding

    kind = data.draw(st.sampled_from(["frc", "cyclic"]), label="kind")
    s = data.draw(st.integers(0, 3), label="s")
    n = (s + 1) * data.draw(st.integers(1, 4), label="groups") if kind == "frc" else data.draw(st.integers(s + 1, 9), label="n")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    X = rng.standard_normal((9 * n, 3))
    problem = LeastSquares(X, X @ np.ones(3))
    scheme = GradientCoding(s, kind=kind)
    scheme.bind(problem, n, np.random.default_rng(0))
    theta = rng.standard_normal(problem.n_params)
    results = {t.worker: t.fn(*t.args) for t in scheme.tasks(theta)}
    order = data.draw(st.permutations(range(n)), label="order")
    scheme.begin()
    for count, worker in enumerate(order, start=1):
        scheme.fold(worker, results[worker])
        arrived = np.sort(np.array(order[:count]))
        try:
            expected = decoding_vector(scheme._B, arrived)
        except ValueError:
            expected = None
        assert scheme.ready(count) == (expected is not None)
        if expected is not None:
            np.testing.assert_allclose(scheme._decoding_vector(arrived), expected, atol=1e-9)
            np.testing.assert_allclose(scheme.estimate(), problem.gradient(theta), atol=1e-9)
