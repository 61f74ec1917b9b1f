import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from lwpd import Codebook, Partition, block_codebook, identity_codebook, projective_codebook, random_codebook


# ---------------------------------------------------------------------------- Partition
def test_partition_uniform_and_from_sizes():
    p = Partition.uniform(10, 4)
    assert p.n_blocks == 3 and p.dim == 10 and len(p) == 3
    assert p.sizes.tolist() == [4, 4, 2]
    assert p.offsets.tolist() == [0, 4, 8, 10]
    assert p == Partition.from_sizes([4, 4, 2])
    assert p.block_of_coordinate([0, 3, 4, 9]).tolist() == [0, 0, 1, 2]
    assert Partition.uniform(8, 4).sizes.tolist() == [4, 4]
    assert pickle.loads(pickle.dumps(p)) == p


@pytest.mark.parametrize("coords,exc", [(-1, IndexError), (10, IndexError), (1.5, TypeError), ([[1]], ValueError)])
def test_partition_block_of_coordinate_rejects_bad_coordinates(coords, exc):
    with pytest.raises(exc, match="coordinates"):
        Partition.uniform(10, 4).block_of_coordinate(coords)


def test_partition_is_read_only():
    p = Partition.uniform(6, 3)
    with pytest.raises(ValueError):
        p.sizes[0] = 5


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: Partition.uniform(0, 2), ValueError, "n must be >= 1"),
        (lambda: Partition.uniform(5, 0), ValueError, "block_size must be >= 1"),
        (lambda: Partition.from_sizes([3, 0]), ValueError, "sizes must all be >= 1"),
        (lambda: Partition.from_sizes([]), ValueError, "non-empty"),
        (lambda: Partition.from_sizes([1.5]), TypeError, "integers"),
    ],
)
def test_partition_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------- Codebook
def test_from_dense_properties():
    dense = np.array([[1, 0, 0, 0], [1, -1, 0, 0], [0, 0, 2, 1]])
    cb = Codebook.from_dense(dense, Partition.uniform(4, 2))
    assert len(cb) == cb.n_codewords == 3
    assert cb.dim == 4
    assert cb.dtype == np.float64
    assert cb.weights.tolist() == [1, 2, 2]
    assert cb.block_of.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(cb.to_dense(), dense)
    assert isinstance(cb.to_scipy(), sp.csr_array)
    np.testing.assert_array_equal(cb.gram(), dense @ dense.T)
    np.testing.assert_array_equal(cb.gram(dense=False).toarray(), dense @ dense.T)
    assert "n_codewords=3" in repr(cb)


def test_from_scipy_matches_from_dense_and_keeps_float32():
    dense = np.array([[0.5, 0.0, -1.0], [0.0, 2.0, 0.0]], dtype=np.float32)
    a = Codebook.from_scipy(sp.csr_matrix(dense))
    b = Codebook.from_dense(dense)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a.to_dense(), b.to_dense())


def test_normalized_and_subset():
    cb = Codebook.from_dense([[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]])
    unit = cb.normalized()
    np.testing.assert_allclose(np.linalg.norm(unit.to_dense(), axis=1), 1.0)
    sub = cb.subset([2, 0])
    np.testing.assert_array_equal(sub.to_dense(), [[1.0, 1.0], [3.0, 4.0]])
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 2\]"):
        cb.subset([3])


def test_tiled_codebook_behaves_like_its_dense_matrix():
    base = projective_codebook(4, max_weight=2)
    cb = block_codebook(base, Partition.uniform(18, 4))  # 4 full blocks + a block of 2
    dense = cb.to_dense()
    rebuilt = Codebook.from_dense(dense, cb.partition)
    assert rebuilt.weights.tolist() == cb.weights.tolist()
    assert rebuilt.block_of.tolist() == cb.block_of.tolist()
    np.testing.assert_allclose(cb.normalized().to_dense(), dense / np.linalg.norm(dense, axis=1, keepdims=True))
    sub = cb.subset([0, 17, 66])
    np.testing.assert_array_equal(sub.to_dense(), dense[[0, 17, 66]])
    assert sub.block_of.tolist() == [0, 1, 4]


def test_codebook_is_immutable_and_picklable():
    cb = block_codebook(projective_codebook(3), Partition.uniform(7, 3))
    with pytest.raises(ValueError):
        cb.weights[0] = 7
    with pytest.raises(AttributeError):
        cb.dim = 4
    back = pickle.loads(pickle.dumps(cb))
    np.testing.assert_array_equal(back.to_dense(), cb.to_dense())
    g = np.arange(7.0)
    np.testing.assert_array_equal(back.encode(g), cb.encode(g))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: Codebook.from_dense([[1.0, 0.0], [0.0, 0.0]]), ValueError, "zero row"),
        (lambda: Codebook.from_dense([[1.0, np.nan]]), ValueError, "array must be finite"),
        (lambda: Codebook.from_dense([1.0, 2.0]), ValueError, "array must be 2-D"),
        (lambda: Codebook.from_dense([["a"]]), TypeError, "real numeric"),
        (lambda: Codebook.from_dense([[1.0, 1.0, 0.0]], Partition.uniform(4, 2)), ValueError, "cover the dimension"),
        (lambda: Codebook.from_dense([[0.0, 1.0, 1.0]], Partition.uniform(3, 2)), ValueError, "inside one block"),
        (lambda: Codebook.from_dense([[1.0]], partition=2), TypeError, "partition must be"),
        (lambda: Codebook.from_scipy(np.eye(2)), TypeError, "scipy.sparse"),
        (lambda: Codebook.from_scipy(sp.csr_matrix((2, 2))), ValueError, "zero row"),
    ],
)
def test_codebook_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------- encode
CODEBOOKS = {
    "random": lambda: random_codebook(40, 13, seed=0),
    "sparse": lambda: random_codebook(60, 25, kind="sparse", weight=3, seed=1),
    "projective": lambda: projective_codebook(5, q=3),
    "tiled": lambda: block_codebook(projective_codebook(8, max_weight=2), Partition.uniform(8 * 7, 8)),
    "tiled+tail": lambda: block_codebook(projective_codebook(4), Partition.uniform(4 * 9 + 3, 4)),
    "mixed": lambda: block_codebook(lambda s: projective_codebook(s, q=5, max_weight=2), Partition.from_sizes([3, 5, 2, 5])),
}


@pytest.mark.parametrize("name", list(CODEBOOKS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [None, 1, 5])
def test_encode_matches_dense_product(name, dtype, batch, kernel_build):
    cb = CODEBOOKS[name]()
    rng = np.random.default_rng(42)
    shape = (cb.dim,) if batch is None else (batch, cb.dim)
    g = rng.standard_normal(shape).astype(dtype)
    out = cb.encode(g)
    expected = ref.encode(cb.to_dense(), g.astype(np.float64))
    assert out.dtype == dtype
    assert out.shape == ((len(cb),) if batch is None else (batch, len(cb)))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol)


def test_encode_casts_integers_to_float64():
    cb = projective_codebook(3, normalize=False)
    out = cb.encode(np.array([1, 2, 3]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, cb.to_dense() @ np.array([1.0, 2.0, 3.0]))


@given(st.lists(st.floats(-1e6, 1e6), min_size=6, max_size=6))
@settings(max_examples=50, deadline=None)
def test_encode_is_linear(values):
    cb = block_codebook(projective_codebook(3), Partition.uniform(6, 3))
    g = np.array(values)
    h = np.arange(6.0)
    np.testing.assert_allclose(cb.encode(g + 2 * h), cb.encode(g) + 2 * cb.encode(h), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize(
    "g,exc,match",
    [
        (np.ones(4), ValueError, "g must have length 3"),
        (np.ones((2, 2, 3)), ValueError, "g must be 1-D or 2-D"),
        (np.array([1.0, np.nan, 0.0]), ValueError, "g must be finite"),
        (np.array([[1.0, 0.0, np.inf]]), ValueError, "g must be finite"),
        (np.array([1 + 1j, 0, 0]), TypeError, "real numeric"),
    ],
)
def test_encode_errors(g, exc, match, kernel_build):
    with pytest.raises(exc, match=match):
        projective_codebook(3).encode(g)


def test_encode_into_out_buffer():
    cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(4 * 3 + 1, 4))
    g = np.random.default_rng(0).standard_normal((2, cb.dim))
    out = np.full((2, len(cb)), np.nan)
    assert cb.encode(g, out=out) is out
    np.testing.assert_allclose(out, ref.encode(cb.to_dense(), g), rtol=1e-12)
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous numpy array of shape"):
        cb.encode(g, out=np.empty((2, len(cb)), dtype=np.float32))
    with pytest.raises(ValueError, match="out must be"):
        cb.encode(g[0], out=out)


@pytest.mark.parametrize("path", ["dense", "ell"])
@pytest.mark.parametrize("block,weight", [(1, 1), (3, 3), (8, 2), (16, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_tiled_encode_paths_match_the_oracle(path, block, weight, dtype, kernel_build, monkeypatch):
    from lwpd import _config

    monkeypatch.setattr(_config, "DENSE_TILE_BYTES_PER_WEIGHT", 10**9 if path == "dense" else 0)
    cb = block_codebook(projective_codebook(block, max_weight=weight), Partition.uniform(block * 5 + 1, block))
    g = np.random.default_rng(block).standard_normal((3, cb.dim)).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cb.encode(g), ref.encode(cb.to_dense(), g.astype(np.float64)), rtol=rtol, atol=rtol)


def test_codebook_equality_compares_contents():
    dense = [[1.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]]
    assert Codebook.from_dense(dense) == Codebook.from_dense(np.array(dense))
    assert Codebook.from_dense(dense) != Codebook.from_dense(dense, Partition.uniform(4, 2))
    assert Codebook.from_dense(dense) != Codebook.from_dense(dense[::-1])
    tiled = block_codebook(projective_codebook(3), Partition.uniform(7, 3))
    assert tiled == Codebook.from_dense(tiled.to_dense(), tiled.partition)
    assert tiled != "codebook"


def test_partition_sizes_that_would_overflow_are_refused_with_the_cause():
    with pytest.raises(ValueError, match=r"sizes must sum to at most .* got 9,223,372,036,854,775,808"):
        Partition([2**62, 2**62])
    with pytest.raises(ValueError, match=r"sizes must sum to at most .*got a block of 1e\+20"):
        Partition([1e20])
    assert Partition([2**40, 2**40]).dim == 2**41


def test_encode_into_a_read_only_out_names_out():
    cb = identity_codebook(4)
    out = np.zeros(4)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be a writeable"):
        cb.encode(np.ones(4), out=out)
