import math

import numpy as np
import pytest

import reference as ref
from lwpd import (
    Codebook,
    Partition,
    block_codebook,
    coherence,
    grassmannian_codebook,
    hadamard_codebook,
    identity_codebook,
    projective_codebook,
    projective_count,
    random_codebook,
    simplex_codebook,
    welch_bound,
)

SMALL_SPACES = [(1, 2), (2, 2), (3, 2), (4, 2), (2, 3), (3, 3), (4, 3), (5, 3), (2, 5), (3, 5), (3, 7), (2, 11)]


@pytest.mark.parametrize("dim,q", SMALL_SPACES)
def test_projective_points_match_brute_force(dim, q):
    points = ref.projective_points(dim, q)
    assert len(points) == (q**dim - 1) // (q - 1)
    cb = projective_codebook(dim, q=q, normalize=False)
    assert len(cb) == len(points) == projective_count(dim, q)
    expected = {tuple(ref.lift(p, q)) for p in points}
    got = {tuple(row) for row in cb.to_dense()}
    assert got == expected


@pytest.mark.parametrize("dim,q,w", [(4, 3, 1), (4, 3, 2), (5, 3, 3), (6, 2, 2), (4, 5, 2), (8, 3, 2), (3, 7, 2)])
def test_projective_weight_limit_counts(dim, q, w):
    cb = projective_codebook(dim, q=q, max_weight=w, normalize=False)
    assert len(cb) == len(ref.projective_points(dim, q, w))
    assert len(cb) == sum(math.comb(dim, i) * (q - 1) ** (i - 1) for i in range(1, w + 1))
    assert cb.weights.max() <= w


@pytest.mark.parametrize("dim,q", [(3, 3), (4, 3), (3, 5), (5, 2)])
def test_no_two_projective_codewords_proportional(dim, q):
    rho = ref.correlations(projective_codebook(dim, q=q).to_dense())
    assert np.abs(ref.pairs_off_diagonal(rho)).max() < 1 - 1e-9


def test_projective_order_is_weight_then_support_then_values():
    cb = projective_codebook(4, q=3, normalize=False)
    dense = cb.to_dense()
    weights = cb.weights
    assert np.all(np.diff(weights) >= 0)
    for w in range(1, 5):
        rows = dense[weights == w]
        keys = [(tuple(np.flatnonzero(r)), tuple(int(a) % 3 for a in r[r != 0])) for r in rows]
        assert keys == sorted(keys)
    np.testing.assert_array_equal(dense[:4], np.eye(4))


def test_pg13_is_four_lines_45_degrees_apart():
    cb = projective_codebook(2, q=3)
    angles = np.degrees(np.arccos(np.clip(np.abs(ref.pairs_off_diagonal(ref.correlations(cb.to_dense()))), 0, 1)))
    assert sorted(np.round(angles, 9)) == [45.0, 45.0, 45.0, 45.0, 90.0, 90.0]
    directions = np.degrees(np.arctan2(cb.to_dense()[:, 1], cb.to_dense()[:, 0])) % 180
    assert sorted(np.round(directions, 9)) == [0.0, 45.0, 90.0, 135.0]


def test_weight3_points_of_pg23_are_four_lines_at_arccos_one_third():
    cb = projective_codebook(3, q=3)
    heavy = cb.to_dense()[cb.weights == 3]
    assert heavy.shape[0] == 4
    rho = np.abs(ref.pairs_off_diagonal(ref.correlations(heavy)))
    np.testing.assert_allclose(rho, 1 / 3, rtol=1e-12)
    np.testing.assert_allclose(np.degrees(np.arccos(rho)), math.degrees(math.acos(1 / 3)))


def test_projective_normalised_rows_are_unit():
    cb = projective_codebook(5, max_weight=3)
    np.testing.assert_allclose(np.linalg.norm(cb.to_dense(), axis=1), 1.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: projective_codebook(3),
        lambda: projective_codebook(4, max_weight=2),
        lambda: projective_codebook(3, q=5),
        lambda: simplex_codebook(4),
        lambda: identity_codebook(5),
        lambda: hadamard_codebook(8),
        lambda: random_codebook(20, 4, seed=1),
        lambda: random_codebook(30, 6, kind="rademacher", seed=2),
        lambda: random_codebook(30, 6, kind="sparse", weight=2, seed=3),
    ],
)
def test_welch_bound_never_violated(make):
    cb = make()
    dense = cb.to_dense()
    mu = np.abs(ref.pairs_off_diagonal(ref.correlations(dense))).max()
    assert mu >= welch_bound(len(cb), cb.dim) - 1e-12
    assert coherence(cb) == pytest.approx(mu, abs=1e-12)


@pytest.mark.parametrize("dim", [2, 3, 4, 7, 10])
def test_simplex_attains_welch_bound(dim):
    cb = simplex_codebook(dim)
    assert len(cb) == dim + 1
    rho = ref.pairs_off_diagonal(ref.correlations(cb.to_dense()))
    np.testing.assert_allclose(rho, -1 / dim, atol=1e-12)
    assert coherence(cb) == pytest.approx(welch_bound(dim + 1, dim), abs=1e-12)


def test_hadamard_is_orthonormal_and_dense():
    V = hadamard_codebook(16).to_dense()
    np.testing.assert_allclose(V @ V.T, np.eye(16), atol=1e-12)
    assert np.all(np.abs(V) == pytest.approx(0.25))


def test_identity_codebook():
    np.testing.assert_array_equal(identity_codebook(4).to_dense(), np.eye(4))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "sparse"])
def test_random_codebook_is_seeded_and_unit(kind):
    a = random_codebook(12, 7, kind=kind, seed=5)
    b = random_codebook(12, 7, kind=kind, seed=5)
    c = random_codebook(12, 7, kind=kind, seed=6)
    np.testing.assert_array_equal(a.to_dense(), b.to_dense())
    assert not np.array_equal(a.to_dense(), c.to_dense())
    np.testing.assert_allclose(np.linalg.norm(a.to_dense(), axis=1), 1.0)
    if kind == "sparse":
        assert set(a.weights.tolist()) == {3}
    if kind == "rademacher":
        assert np.allclose(np.abs(a.to_dense()), 1 / np.sqrt(7))


def test_random_codebook_weight_limits_support():
    cb = random_codebook(50, 9, kind="gaussian", weight=4, seed=0)
    assert set(cb.weights.tolist()) == {4}


def test_block_codebook_tiles_and_restricts():
    base = projective_codebook(4, max_weight=2, normalize=False)
    part = Partition.from_sizes([4, 4, 2, 4, 1])
    cb = block_codebook(base, part)
    dense = cb.to_dense()
    # blocks 0, 1 and 3 carry the base; block 2 the 4 points of PG(1,3); block 4 one point
    assert len(cb) == 16 * 3 + 4 + 1
    np.testing.assert_array_equal(dense[:16, :4], base.to_dense())
    np.testing.assert_array_equal(dense[16:32, 4:8], base.to_dense())
    block2 = dense[32:36, 8:10]
    assert {tuple(r) for r in block2} == {tuple(r) for r in projective_codebook(2, normalize=False).to_dense()}
    np.testing.assert_array_equal(dense[36:52, 10:14], base.to_dense())
    np.testing.assert_array_equal(dense[52:, 14:], [[1.0]])
    np.testing.assert_array_equal(cb.block_of, np.repeat([0, 1, 2, 3, 4], [16, 16, 4, 16, 1]))
    # every codeword stays inside its block
    for j, beta in enumerate(cb.block_of):
        lo, hi = part.offsets[beta], part.offsets[beta + 1]
        assert np.all(dense[j, :lo] == 0) and np.all(dense[j, hi:] == 0)


def test_block_codebook_restriction_drops_proportional_rows_and_keeps_unit_norm():
    dup = Codebook.from_dense(np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 1.0], [0.0, 0.0, 1.0]]))
    cb = block_codebook(dup, Partition.from_sizes([3, 2]))
    tail = cb.to_dense()[3:, 3:]
    assert tail.shape == (1, 2)  # (1,2) and (2,4) are one line; (0,0) is dropped
    unit = block_codebook(projective_codebook(3), Partition.from_sizes([2]))
    np.testing.assert_allclose(np.linalg.norm(unit.to_dense(), axis=1), 1.0)
    assert len(unit) == 4


def test_block_codebook_with_callable():
    part = Partition.from_sizes([3, 3, 2])
    cb = block_codebook(lambda s: projective_codebook(s), part)
    assert len(cb) == 13 + 13 + 4
    assert cb.partition == part


def test_block_codebook_errors():
    with pytest.raises(ValueError, match="base.dim"):
        block_codebook(projective_codebook(2), Partition.uniform(6, 3))
    with pytest.raises(TypeError, match="partition"):
        block_codebook(projective_codebook(2), 3)
    with pytest.raises(ValueError, match=r"base\(2\)"):
        block_codebook(lambda s: projective_codebook(3), Partition.uniform(4, 2))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: projective_codebook(3, q=4), ValueError, "q must be a prime"),
        (lambda: projective_codebook(3, q=1), ValueError, "q must be >= 2"),
        (lambda: projective_codebook(0), ValueError, "dim must be >= 1"),
        (lambda: projective_codebook(3, max_weight=0), ValueError, "max_weight must be >= 1"),
        (lambda: projective_codebook(2.5), TypeError, "dim must be an integer"),
        (lambda: projective_codebook(30), ValueError, "more than 20,000,000 points"),
        (lambda: projective_codebook(10**6), ValueError, "lower dim or max_weight"),
        (lambda: random_codebook(3, 3, seed=-1), ValueError, "seed must be a non-negative integer"),
        (lambda: random_codebook(3, 3, seed="a"), TypeError, "seed must be None"),
        (lambda: grassmannian_codebook(4, 2, seed=1.5), TypeError, "seed must be None"),
        (lambda: random_codebook(0, 3), ValueError, "n_codewords must be >= 1"),
        (lambda: random_codebook(3, 3, kind="uniform"), ValueError, "kind must be one of"),
        (lambda: random_codebook(3, 3, weight=4), ValueError, r"weight must be in \[1, 3\]"),
        (lambda: simplex_codebook(1), ValueError, "dim must be >= 2"),
        (lambda: hadamard_codebook(6), ValueError, "power of two"),
        (lambda: identity_codebook(0), ValueError, "dim must be >= 1"),
    ],
)
def test_constructor_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("dim,q,w", [(1, 3, None), (40, 3, None), (200, 5, 3), (10**6, 3, 2), (12, 2, 12)])
def test_projective_count_matches_the_closed_forms(dim, q, w):
    expected = (q**dim - 1) // (q - 1) if w is None or w >= dim else sum(
        math.comb(dim, i) * (q - 1) ** (i - 1) for i in range(1, w + 1)
    )
    assert projective_count(dim, q, w) == expected


@pytest.mark.parametrize("size, max_weight, keep", [(4, 2, None), (4, 2, 8), (4, 2, 100), (8, 2, 16), (3, 3, 3)])
def test_the_one_block_base_recipe(size, max_weight, keep):
    """projective_block_base (tiled by LWPD, CodedOptimizer and the DDP hook) is the
    projective base compressed to keep codewords, or the whole base."""
    from lwpd import compress
    from lwpd.constructions import projective_block_base

    base = projective_codebook(size, q=3, max_weight=max_weight)
    expected = base if keep is None or keep >= len(base) else compress(base, keep, criterion="logdet")
    assert projective_block_base(size, max_weight=max_weight, keep=keep) == expected
