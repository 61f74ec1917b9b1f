import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from lwpd import (
    Codebook,
    Partition,
    PeelingDecoder,
    ProjectionDecoder,
    block_codebook,
    decode,
    identity_codebook,
    projective_codebook,
    random_codebook,
)

CODEBOOKS = {
    "gaussian": lambda: random_codebook(9, 6, seed=3),
    "sparse": lambda: random_codebook(40, 12, kind="sparse", weight=2, seed=4),
    "projective": lambda: projective_codebook(4, q=3),
    "projective-q5": lambda: projective_codebook(3, q=5, normalize=False),
    "tiled": lambda: block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(4 * 6, 4)),
    "tiled+tail": lambda: block_codebook(projective_codebook(5, max_weight=2), Partition.uniform(5 * 4 + 3, 5)),
    "mixed": lambda: block_codebook(lambda s: projective_codebook(s, max_weight=3), Partition.from_sizes([2, 4, 3, 4])),
}


@pytest.fixture(params=["per-block-scatter", "per-block-dense", "shared-patterns"])
def solve_path(request, monkeypatch):
    """Run a test with tiled blocks solved one by one (their information matrices assembled
    by scattering each received row, or densely from the whole base), and with blocks that
    received the same set of base rows sharing one factorisation (forced on however few
    blocks there are)."""
    from lwpd import _config

    if request.param.startswith("per-block"):
        monkeypatch.setattr(_config, "PATTERN_MAX_ROWS", 0)
        monkeypatch.setattr(_config, "DENSE_ASSEMBLY_RATIO", np.inf if request.param.endswith("dense") else 0.0)
    else:
        monkeypatch.setattr(_config, "PATTERN_MIN_BLOCKS", 1)
        monkeypatch.setattr(_config, "PATTERN_MIN_SHARING", 0.0)
    return request.param


def _received_sets(cb, rng, n_sets=6):
    """Random received multisets of several sizes, a few with repeats."""
    sets = []
    for size in np.linspace(1, len(cb), n_sets).astype(int):
        idx = rng.choice(len(cb), size=size, replace=False)
        if size > 2:
            idx = np.concatenate([idx, idx[:2]])  # repeated arrivals
        sets.append(idx)
    return sets


# ---------------------------------------------------------------------------- projection
@pytest.mark.parametrize("name", list(CODEBOOKS))
def test_projection_equals_pinv_for_random_values(name, kernel_build, solve_path):
    cb = CODEBOOKS[name]()
    V = cb.to_dense()
    rng = np.random.default_rng(7)
    for idx in _received_sets(cb, rng):
        values = rng.standard_normal(idx.size)  # inconsistent values: true least squares
        dec = ProjectionDecoder(cb)
        dec.update(idx, values)
        expected = ref.decode_projection(V, idx, values)
        np.testing.assert_allclose(dec.estimate(), expected, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(expected).max()))
        np.testing.assert_allclose(decode(cb, idx, values), expected, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(expected).max()))
        assert dec.rank == np.linalg.matrix_rank(V[idx])
        assert dec.n_received == idx.size
        np.testing.assert_array_equal(dec.received, np.unique(idx))


@pytest.mark.parametrize("name", list(CODEBOOKS))
def test_projection_of_exact_values_is_the_orthogonal_projection(name, kernel_build, solve_path):
    cb = CODEBOOKS[name]()
    V = cb.to_dense()
    rng = np.random.default_rng(11)
    g = rng.standard_normal(cb.dim)
    idx = rng.choice(len(cb), size=max(1, len(cb) // 2), replace=False)
    g_hat = decode(cb, idx, cb.encode(g)[idx])
    Q = np.linalg.svd(V[idx], full_matrices=False)[2][: np.linalg.matrix_rank(V[idx])]
    np.testing.assert_allclose(g_hat, Q.T @ (Q @ g), atol=1e-10)
    # every partial decode is a descent direction: <g_hat, g> = ||g_hat||^2 >= 0
    assert g_hat @ g == pytest.approx(g_hat @ g_hat, rel=1e-9, abs=1e-12)
    full = decode(cb, np.arange(len(cb)), cb.encode(g))
    if np.linalg.matrix_rank(V) == cb.dim:
        np.testing.assert_allclose(full, g, atol=1e-10)


def test_rank_deficient_received_set_gives_minimum_norm_solution():
    cb = projective_codebook(3, normalize=False)
    V = cb.to_dense()
    idx = np.array([3, 4, 0])  # (1,1,0), (1,-1,0), (1,0,0): rank 2 in R^3
    values = np.array([1.0, 2.0, 0.5])
    dec = ProjectionDecoder(cb)
    dec.update(idx, values)
    assert dec.rank == 2
    assert dec.block_ranks.tolist() == [2]
    np.testing.assert_allclose(dec.estimate(), np.linalg.pinv(V[idx]) @ values, rtol=1e-12, atol=1e-14)
    assert dec.estimate()[2] == 0.0  # no information about the third axis
    assert dec.recovered_fraction() == pytest.approx(2 / 3)


def test_duplicate_arrivals_are_repeated_measurements():
    cb = identity_codebook(2)
    dec = ProjectionDecoder(cb)
    dec.update(0, 1.0)
    dec.update(0, 3.0)
    dec.update(1, 5.0)
    np.testing.assert_allclose(dec.estimate(), [2.0, 5.0])  # average of the repeats
    assert dec.n_received == 3 and dec.rank == 2
    np.testing.assert_array_equal(dec.received, [0, 1])


def test_block_ranks_follow_the_partition():
    cb = block_codebook(projective_codebook(3), Partition.uniform(9, 3))
    dec = ProjectionDecoder(cb)
    dec.update([0, 1, 13, 26 + 5], [1.0, 1.0, 1.0, 1.0])
    assert dec.block_ranks.tolist() == [2, 1, 1]
    assert dec.rank == 4
    dec.reset()
    assert dec.rank == 0 and dec.n_received == 0
    np.testing.assert_array_equal(dec.estimate(), np.zeros(9))


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_projection_is_invariant_to_arrival_order(data):
    cb = block_codebook(projective_codebook(4, max_weight=3), Partition.uniform(11, 4))
    n = len(cb)
    idx = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3 * n)))
    values = np.array(data.draw(st.lists(st.integers(-5, 5), min_size=idx.size, max_size=idx.size)), dtype=float)
    perm = np.array(data.draw(st.permutations(range(idx.size))))
    split = data.draw(st.integers(0, idx.size))

    batch = ProjectionDecoder(cb)
    batch.update(idx, values)
    one_by_one = ProjectionDecoder(cb)
    for j in perm[:split]:
        one_by_one.update(int(idx[j]), float(values[j]))
    one_by_one.update(idx[perm[split:]], values[perm[split:]])

    np.testing.assert_allclose(one_by_one.estimate(), batch.estimate(), rtol=1e-10, atol=1e-10)
    assert one_by_one.rank == batch.rank
    np.testing.assert_allclose(batch.estimate(), ref.decode_projection(cb.to_dense(), idx, values), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "indices,values,exc,match",
    [
        (13, 1.0, IndexError, r"index must lie in \[0, 12\]"),
        (-1, 1.0, IndexError, "index must lie"),
        (2, float("nan"), ValueError, "value must be finite"),
        (2, float("inf"), ValueError, "value must be finite"),
        (2, "x", TypeError, "value must be a real number"),
        ([1, 13], [1.0, 2.0], IndexError, r"indices must lie in \[0, 12\]"),
        ([1, 2], [1.0, np.nan], ValueError, "values must be finite"),
        ([1, 2], [1.0], ValueError, "one entry per index"),
        ([1.5, 2], [1.0, 2.0], TypeError, "integer indices"),
        ([[1, 2]], [1.0, 2.0], ValueError, "indices must be 1-D"),
    ],
)
@pytest.mark.parametrize("decoder", [ProjectionDecoder, PeelingDecoder])
def test_rejected_updates_leave_the_decoder_unchanged(decoder, indices, values, exc, match):
    cb = projective_codebook(3, normalize=False)
    g = np.array([1.0, -2.0, 3.0])
    dec = decoder(cb)
    dec.update([0, 4], cb.encode(g)[[0, 4]])
    before = (dec.estimate().copy(), dec.n_received, dec.received.copy())
    with pytest.raises(exc, match=match):
        dec.update(indices, values)
    np.testing.assert_array_equal(dec.estimate(), before[0])
    assert dec.n_received == before[1]
    np.testing.assert_array_equal(dec.received, before[2])
    # and it still decodes correctly afterwards: nothing lost, nothing counted twice
    dec.update(np.arange(len(cb)), cb.encode(g))
    np.testing.assert_allclose(dec.estimate(), g, atol=1e-12)


def test_projection_rejects_huge_unpartitioned_blocks():
    from lwpd import _config

    cb = identity_codebook(_config.MAX_DECODE_BLOCK + 1)
    with pytest.raises(ValueError, match="give the codebook a Partition"):
        ProjectionDecoder(cb)
    with pytest.raises(TypeError, match="codebook must be a lwpd.Codebook"):
        ProjectionDecoder(np.eye(3))


def test_decode_validates_method():
    with pytest.raises(ValueError, match="method must be one of"):
        decode(identity_codebook(2), [0], [1.0], method="magic")


# ---------------------------------------------------------------------------- peeling
PEELING_CODEBOOKS = {
    "projective-w2": lambda: projective_codebook(6, max_weight=2, normalize=False),
    "projective-q5": lambda: projective_codebook(6, q=5, max_weight=2),
    # weight-2 codewords alone never start peeling: add a few coordinate axes
    "sparse": lambda: Codebook.from_dense(
        np.vstack([np.eye(15)[:4], random_codebook(30, 15, kind="sparse", weight=2, seed=9).to_dense()])
    ),
    "tiled+tail": lambda: block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(4 * 5 + 2, 4)),
}


@pytest.mark.parametrize("name", list(PEELING_CODEBOOKS))
def test_peeling_recovers_exactly_what_the_rule_reaches(name):
    cb = PEELING_CODEBOOKS[name]()
    V = cb.to_dense()
    rng = np.random.default_rng(5)
    reached_partial = False
    for trial in range(25):
        g = rng.standard_normal(cb.dim)
        size = rng.integers(1, min(len(cb), 2 * cb.dim) + 1)
        idx = rng.choice(len(cb), size=size, replace=False)
        values = cb.encode(g)[idx]
        dec = PeelingDecoder(cb)
        dec.update(idx, values)
        known, coords = ref.peel(V, idx, values)
        np.testing.assert_array_equal(dec.known, known)
        # never a wrong value: every recovered coordinate is the true one
        np.testing.assert_allclose(dec.values()[known], g[known], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dec.values()[known], coords[known], rtol=1e-10, atol=1e-10)
        assert np.isnan(dec.values()[~known]).all()
        np.testing.assert_array_equal(dec.estimate(fill=-7.0)[~known], -7.0)
        np.testing.assert_allclose(decode(cb, idx, values, method="peeling"), np.where(known, g, 0.0), atol=1e-10)
        assert dec.recovered_fraction() == pytest.approx(known.mean())
        reached_partial |= 0 < known.sum() < cb.dim
    assert reached_partial  # the random sets exercised partial recovery


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_peeling_is_invariant_to_arrival_order(data):
    cb = block_codebook(projective_codebook(5, max_weight=2, normalize=False), Partition.uniform(12, 5))
    g = np.array(data.draw(st.lists(st.integers(-9, 9), min_size=12, max_size=12)), dtype=float)
    idx = np.array(data.draw(st.lists(st.integers(0, len(cb) - 1), min_size=1, max_size=len(cb), unique=True)))
    perm = np.array(data.draw(st.permutations(range(idx.size))))
    values = cb.encode(g)[idx]
    a = PeelingDecoder(cb)
    a.update(idx, values)
    b = PeelingDecoder(cb)
    for j in perm:
        b.update(int(idx[j]), float(values[j]))
    np.testing.assert_array_equal(a.known, b.known)
    np.testing.assert_allclose(a.estimate(), b.estimate(), atol=1e-12)
    np.testing.assert_allclose(a.values()[a.known], g[a.known], atol=1e-12)


def test_peeling_example_chain_and_reset():
    cb = Codebook.from_dense([[1, 0, 0], [1, 1, 0], [0, 1, 1]])
    g = np.array([2.0, -1.0, 4.0])
    dec = PeelingDecoder(cb)
    dec.update([2, 1], cb.encode(g)[[2, 1]])
    assert not dec.known.any()
    dec.update(0, 2.0)  # unlocks the chain: x0 -> x1 -> x2
    np.testing.assert_array_equal(dec.values(), g)
    dec.update(0, 99.0)  # a repeat adds nothing and changes nothing
    np.testing.assert_array_equal(dec.values(), g)
    dec.reset()
    assert not dec.known.any() and dec.n_received == 0


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_shared_pattern_solve_equals_per_block_solve(data):
    from lwpd import _config

    # many small tiled blocks (so received sets repeat), a tail block, rank-deficient sets
    base = projective_codebook(3, max_weight=2)
    cb = block_codebook(base, Partition.uniform(3 * 40 + 2, 3))
    n = len(cb)
    idx = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2 * n)))
    values = np.array(data.draw(st.lists(st.integers(-5, 5), min_size=idx.size, max_size=idx.size)), dtype=float)
    saved = (_config.PATTERN_MAX_ROWS, _config.PATTERN_MIN_BLOCKS, _config.PATTERN_MIN_SHARING)
    try:
        _config.PATTERN_MAX_ROWS, _config.PATTERN_MIN_BLOCKS, _config.PATTERN_MIN_SHARING = 16, 1, 0.0
        shared = ProjectionDecoder(cb)
        shared.update(idx, values)
        _config.PATTERN_MAX_ROWS = 0
        per_block = ProjectionDecoder(cb)
        per_block.update(idx, values)
    finally:
        _config.PATTERN_MAX_ROWS, _config.PATTERN_MIN_BLOCKS, _config.PATTERN_MIN_SHARING = saved
    np.testing.assert_allclose(shared.estimate(), per_block.estimate(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(shared.block_ranks, per_block.block_ranks)
    np.testing.assert_allclose(shared.estimate(), ref.decode_projection(cb.to_dense(), idx, values), rtol=1e-9, atol=1e-9)


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_dense_tile_assembly_equals_the_scattered_assembly(data):
    """Both ways of assembling a tiled block's information matrix give the same estimate and
    ranks (to rounding), with repeats, rank-deficient sets and an untiled tail block."""
    from lwpd import _config

    base = projective_codebook(data.draw(st.integers(2, 5)), max_weight=2)
    b = base.dim
    cb = block_codebook(base, Partition.uniform(b * 7 + data.draw(st.integers(0, b - 1)), b))
    n = len(cb)
    idx = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2 * n)))
    values = np.array(data.draw(st.lists(st.floats(-10, 10), min_size=idx.size, max_size=idx.size)))
    saved = (_config.PATTERN_MAX_ROWS, _config.DENSE_ASSEMBLY_RATIO)
    decoders = {}
    try:
        _config.PATTERN_MAX_ROWS = 0  # per-block solves only
        for name, ratio in [("dense", np.inf), ("scatter", 0.0)]:
            _config.DENSE_ASSEMBLY_RATIO = ratio
            decoders[name] = ProjectionDecoder(cb)
            decoders[name].update(idx, values)
    finally:
        _config.PATTERN_MAX_ROWS, _config.DENSE_ASSEMBLY_RATIO = saved
    assert decoders["dense"]._state.packed.tile_dense.shape == (b, len(base))
    assert decoders["scatter"]._state.packed.tile_dense.size == 0
    dense, scatter = decoders["dense"], decoders["scatter"]
    np.testing.assert_allclose(dense.estimate(), scatter.estimate(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(dense.block_ranks, scatter.block_ranks)
    np.testing.assert_allclose(dense.estimate(), ref.decode_projection(cb.to_dense(), idx, values), rtol=1e-9, atol=1e-9)


def test_dense_tile_assembly_is_chosen_for_small_dense_tiles():
    """The default rule takes the dense assembly for the library's usual tile (64 rows of weight
    <= 2 on blocks of 8) and the scatter for a sparse tile of many coordinates."""
    dense = ProjectionDecoder(block_codebook(projective_codebook(8, max_weight=2), Partition.uniform(80, 8)))
    assert dense._state.packed.tile_dense.shape == (8, 64)
    sparse = ProjectionDecoder(block_codebook(identity_codebook(256), Partition.uniform(512, 256)))
    assert sparse._state.packed.tile_dense.size == 0


@given(n=st.integers(0, 40), where=st.integers(0, 39), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_all_finite_kernel_matches_numpy(n, where, bad, dtype):
    from lwpd._kernels import cpu

    a = np.random.default_rng(n).standard_normal(n).astype(dtype)
    assert cpu.all_finite(a)
    if n:
        a[where % n] = bad
        assert not cpu.all_finite(a)


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_scatter_kernel_matches_numpy_for_any_split_of_the_codewords(data):
    """Folding a batch by threads that each own a range of codewords gives the same counts
    and sums, bit for bit, as NumPy's unbuffered add (repeats added in arrival order)."""
    from lwpd._kernels import cpu

    n = data.draw(st.integers(1, 60))
    indices = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=120)), dtype=np.int64)
    values = np.random.default_rng(n).standard_normal(indices.size)
    counts = np.zeros(n, np.int64)
    sums = np.zeros(n)
    np.add.at(counts, indices, 1)
    np.add.at(sums, indices, values)
    for build, parts in ((cpu.scatter_results.serial, 1), (cpu.scatter_results.parallel, data.draw(st.integers(1, 7)))):
        got_counts, got_sums = np.zeros(n, np.int32), np.zeros(n)
        build(indices, values, got_counts, got_sums, parts)
        np.testing.assert_array_equal(got_counts, counts)
        np.testing.assert_array_equal(got_sums, sums)


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_received_sets_kernel_matches_numpy_for_any_split_of_the_blocks(data):
    """The torch optimizer's received sets: clearing the bits of the lost chunks' codewords and
    counting each run's sets, by threads that own block ranges (any number of them, more
    than blocks too), gives NumPy's masks and ``bincount``s."""
    from lwpd._kernels import cpu

    rows = np.array(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=30)), dtype=np.int64)  # codewords per block
    n_blocks, n_codewords = rows.size, int(rows.sum())
    block_of = np.repeat(np.arange(n_blocks), rows).astype(np.int32)  # non-decreasing: codewords by block
    row_of = (np.arange(n_codewords) - np.repeat(np.r_[0, np.cumsum(rows)[:-1]], rows)).astype(np.int8)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    n_chunks = data.draw(st.integers(1, 6))
    owner = rng.integers(0, n_chunks, n_codewords)
    chunks = [np.flatnonzero(owner == c) for c in range(n_chunks)]  # sorted, maybe empty
    starts = np.r_[0, np.cumsum([c.size for c in chunks])]
    lost = np.flatnonzero(rng.random(n_chunks) < 0.5)
    # runs: consecutive blocks with the same number of codewords
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    end = np.r_[first[1:], n_blocks]
    offset = np.r_[0, np.cumsum(1 << rows[first])]
    full = ((np.int64(1) << rows) - 1).astype(np.uint16)
    want = full.astype(np.int64)
    for j in np.concatenate([chunks[c] for c in lost] + [np.zeros(0, np.int64)]):
        want[block_of[j]] &= ~(1 << int(row_of[j]))
    want_counts = np.concatenate([np.bincount(want[a:z], minlength=1 << int(rows[a])) for a, z in zip(first, end)])
    for build, parts in ((cpu.received_sets.serial, data.draw(st.integers(1, 40))),
                         (cpu.received_sets.parallel, data.draw(st.integers(1, 40)))):
        flat = np.concatenate(chunks)
        masks, counts = build(full, lost, starts, block_of[flat], row_of[flat], first, end, offset, int(offset[-1]), parts)
        np.testing.assert_array_equal(masks, want)
        np.testing.assert_array_equal(counts, want_counts)
        assert masks.dtype == np.uint16 and not (full != ((np.int64(1) << rows) - 1)).any()  # the full masks untouched


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_in_place_projection_kernel_matches_numpy(data):
    """Projecting the blocks of a run whose set does not span them, of a vector held as
    several arrays (some possibly empty), through a permutation of its coordinates, in place,
    serial and threaded: NumPy's products on the concatenated vector, the other coordinates
    untouched, and the squared change as stored."""
    from lwpd._kernels import cpu

    size = data.draw(st.integers(1, 4))
    n_blocks = data.draw(st.integers(1, 12))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    first = size * data.draw(st.integers(0, 3))  # the run starts after other runs' coordinates
    dim = first + n_blocks * size
    cuts = np.sort(rng.choice(np.arange(1, dim), size=min(dim - 1, data.draw(st.integers(0, 4))), replace=False))
    if data.draw(st.booleans()):  # an empty array among them
        cuts = np.sort(np.r_[cuts, cuts[:1]]) if cuts.size else cuts
    # possibly an empty array first, and one last
    offsets = np.r_[[0] * data.draw(st.integers(1, 2)), cuts, [dim] * data.draw(st.integers(1, 2))].astype(np.int64)
    positions = rng.permutation(dim).astype(np.int32)
    flat = rng.standard_normal(dim).astype(dtype)
    grads = tuple(flat[a:z].copy() for a, z in zip(offsets[:-1], offsets[1:]))
    Q = rng.standard_normal((5, size, size))
    masks = rng.integers(0, 5, n_blocks).astype(np.uint16)
    spans = rng.random(5) < 0.4  # these sets' projector is the identity: their blocks are not touched
    want = flat.copy()
    for t, s in enumerate(masks):
        if not spans[s]:
            places = positions[first + t * size + np.arange(size)]
            want[places] = (Q[s] @ flat[places].astype(np.float64)).astype(dtype)
    for build, parts in ((cpu.project_in_place.serial, 1), (cpu.project_in_place.parallel, data.draw(st.integers(1, 5)))):
        arrays = tuple(a.copy() for a in grads)
        change = build(arrays, offsets, positions, first, size, masks, spans, Q, parts)
        np.testing.assert_allclose(np.concatenate(arrays), want, rtol=1e-6 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-12)
        assert change == pytest.approx(float(np.sum((np.concatenate(arrays).astype(np.float64) - flat) ** 2)),
                                       rel=1e-9, abs=1e-12)


def test_threaded_scatter_route_decodes_as_the_serial_one(monkeypatch):
    """A batch large enough for the threaded fold (thresholds lowered here) decodes exactly
    as the serial fold does, and as the pinv oracle."""
    from lwpd import _config

    cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(4 * 30, 4))
    rng = np.random.default_rng(5)
    values = cb.encode(rng.standard_normal(cb.dim))
    arrivals = rng.integers(0, len(cb), 500)
    serial = ProjectionDecoder(cb)
    serial.update(arrivals, values[arrivals])
    monkeypatch.setattr(_config, "SCATTER_PARALLEL_MIN_CODEWORDS", 1)
    monkeypatch.setattr(_config, "PARALLEL_MIN_WORK", 1)
    threaded = ProjectionDecoder(cb)
    threaded.update(arrivals, values[arrivals])
    np.testing.assert_array_equal(threaded._state.counts, serial._state.counts)
    np.testing.assert_array_equal(threaded.estimate(), serial.estimate())
    np.testing.assert_allclose(decode(cb, arrivals, values[arrivals]), ref.decode_projection(cb.to_dense(), arrivals, values[arrivals]),
                               rtol=1e-10, atol=1e-12)


def test_shared_patterns_are_used_on_a_large_tiled_codebook():
    from lwpd._kernels import cpu

    cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(4 * 2000, 4))
    rng = np.random.default_rng(3)
    g = rng.standard_normal(cb.dim)
    received = np.flatnonzero(np.arange(len(cb)) % 16 != 5)  # a worker holding every 16th codeword failed
    dec = ProjectionDecoder(cb)
    slots, masks = cpu.tile_pattern_slots(np.arange(2000), dec._state.packed.ints, dec._state.packed.bounds, dec._state.packed.floats,
                                          np.isin(np.arange(len(cb)), received).astype(np.int64), np.full(1 << 16, -1))
    assert (slots >= 0).all() and masks.size <= 16  # the failure pattern repeats
    dec.update(received, cb.encode(g)[received])
    # oracle, block by block (the codebook is block diagonal): the projection onto the span
    base = projective_codebook(4, max_weight=2).to_dense()
    got = np.zeros(len(cb), dtype=bool)
    got[received] = True
    expected = np.empty(cb.dim)
    for beta in range(2000):
        rows = base[got[beta * len(base):(beta + 1) * len(base)]]
        Q = np.linalg.svd(rows, full_matrices=False)[2][: np.linalg.matrix_rank(rows)]
        expected[4 * beta:4 * beta + 4] = Q.T @ (Q @ g[4 * beta:4 * beta + 4])
    np.testing.assert_allclose(dec.estimate(), expected, atol=1e-10)


def test_batches_are_solved_when_read_and_agree_with_single_updates_and_the_oracle():
    """Batch updates fold only; the estimate, rank and block ranks solve the touched blocks
    when read, interleaved single updates included, and equal the one-shot oracle."""
    cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(40, 4))
    rng = np.random.default_rng(21)
    g = rng.standard_normal(cb.dim)
    values = cb.encode(g)
    arrivals = rng.integers(0, len(cb), 60)  # repeats included
    dec = ProjectionDecoder(cb)
    dec.update(arrivals[:20], values[arrivals[:20]])
    dec.update(arrivals[20:40], values[arrivals[20:40]])
    dec.update(int(arrivals[40]), float(values[arrivals[40]]))  # a single arrival between batches
    dec.update(arrivals[41:], values[arrivals[41:]])
    V = cb.to_dense()
    expected = ref.decode_projection(V, arrivals, values[arrivals])
    np.testing.assert_allclose(dec.estimate(), expected, rtol=1e-10, atol=1e-12)
    assert dec.rank == np.linalg.matrix_rank(V[np.unique(arrivals)])
    one_shot = ProjectionDecoder(cb)
    one_shot.update(arrivals, values[arrivals])
    np.testing.assert_array_equal(one_shot.block_ranks, dec.block_ranks)
    dec.reset()
    assert dec.rank == 0 and not dec.estimate().any()


def test_the_oracle_drops_an_svd_rounding_of_zero():
    """The arrivals on which hypothesis found ``pinv``'s default cutoff (1e-15 of the largest
    singular value) too tight for the oracle: a zero singular value of the stacked rows came
    out at 1.01e-15 and spread values onto blocks nothing arrived for. The decoder is exactly
    zero there and the oracle, with the ``matrix_rank`` cutoff, agrees."""
    cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(4 * 50, 4))
    per_block = len(cb) // cb.blocks.n_blocks
    rng = np.random.default_rng(644)
    values = cb.encode(rng.standard_normal(cb.dim))
    arrivals = []
    for n_blocks in (3, 2, 3, 4, 4, 3):
        blocks = rng.choice(cb.blocks.n_blocks, size=n_blocks, replace=False)
        arrivals.append((blocks[:, None] * per_block + rng.integers(0, per_block, (blocks.size, 3))).ravel())
    arrivals = np.concatenate(arrivals)
    V = cb.to_dense()
    dec = ProjectionDecoder(cb)
    dec.update(arrivals, values[arrivals])
    untouched = np.abs(V[arrivals]).sum(axis=0) == 0
    assert untouched.any() and not dec.estimate()[untouched].any()
    np.testing.assert_allclose(dec.estimate(), ref.decode_projection(V, arrivals, values[arrivals]), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_few_blocks_at_a_time_decode_as_the_oracle(data):
    """Batches that each touch a few of many blocks, reads interleaved at random: every read
    is the oracle on everything so far (blocks touched before the last read, again after
    it, or never), and the one-shot decode of each batch is the oracle on its blocks and
    exactly zero elsewhere."""
    cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(4 * 50, 4))
    per_block = len(cb) // cb.blocks.n_blocks
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(cb.dim)
    values = cb.encode(g)
    V = cb.to_dense()
    dec = ProjectionDecoder(cb)
    so_far = np.zeros(0, dtype=np.int64)
    for _ in range(data.draw(st.integers(1, 6), label="batches")):
        blocks = rng.choice(cb.blocks.n_blocks, size=data.draw(st.integers(1, 4), label="blocks"), replace=False)
        batch = (blocks[:, None] * per_block + rng.integers(0, per_block, (blocks.size, 3))).ravel()
        dec.update(batch, values[batch])
        so_far = np.concatenate([so_far, batch])
        one_shot = decode(cb, batch, values[batch]).reshape(-1, 4)
        np.testing.assert_allclose(one_shot, ref.decode_projection(V, batch, values[batch]).reshape(-1, 4), atol=1e-12)
        untouched = np.setdiff1d(np.arange(cb.blocks.n_blocks), blocks)
        assert not one_shot[untouched].any()
        if data.draw(st.booleans(), label="read now"):
            np.testing.assert_allclose(dec.estimate(), ref.decode_projection(V, so_far, values[so_far]), atol=1e-12)
    np.testing.assert_allclose(dec.estimate(), ref.decode_projection(V, so_far, values[so_far]), atol=1e-12)
    assert dec.rank == np.linalg.matrix_rank(V[np.unique(so_far)])
    assert decode(cb, [], []).shape == (cb.dim,) and not decode(cb, [], []).any()


@pytest.mark.parametrize("scale", [1e-150, 1e-100, 1e-20, 1.0, 1e20, 1e100, 1e150])
def test_codebooks_at_extreme_scales_decode_as_pinv(scale):
    """Entries anywhere in the accepted range decode exactly (NumPy pinv oracle)."""
    cb = Codebook.from_dense(np.array([[scale, 0.0], [0.0, scale], [scale, scale]]))
    g = np.array([1.5, -2.0]) / scale  # values of order one
    values = cb.to_dense() @ g
    dec = ProjectionDecoder(cb)
    dec.update(np.arange(3), values)
    np.testing.assert_allclose(dec.estimate(), np.linalg.pinv(cb.to_dense()) @ values, rtol=1e-12)
    assert dec.recovered_fraction() == 1.0


@pytest.mark.parametrize("scale", [1e155, 1e300, 1e-170, 1e-300])
def test_codebooks_whose_products_overflow_or_underflow_are_refused(scale):
    with pytest.raises(ValueError, match=r"array has an entry of magnitude .*CODEBOOK_ENTRY_RANGE"):
        Codebook.from_dense(np.array([[scale, 0.0], [0.0, scale], [scale, scale]]))


def test_results_too_large_to_sum_are_refused_and_nothing_is_folded():
    cb = Codebook.from_dense(np.eye(2))
    dec = ProjectionDecoder(cb)
    with pytest.raises(ValueError, match="values must have magnitude at most"):
        dec.update([0, 0], [1e308, 1e308])
    with pytest.raises(ValueError, match="value must have magnitude at most"):
        dec.update(0, 1e308)
    assert dec.n_received == 0
    dec.update(0, 1e150)
    dec.update(0, 1e150)
    assert np.isfinite(dec.estimate()).all() and dec.estimate()[0] == pytest.approx(1e150)


def test_peeling_fill_must_be_a_finite_number_named():
    dec = PeelingDecoder(identity_codebook(3))
    dec.update(0, 1.0)
    with pytest.raises(TypeError, match="fill must be a real number"):
        dec.estimate(fill="x")
    with pytest.raises(ValueError, match="fill must be finite"):
        dec.estimate(fill=np.nan)


@pytest.mark.parametrize("threaded", [False, True])
def test_counts_are_uint16_and_an_arrival_past_a_full_count_is_refused_whole(monkeypatch, threaded):
    """The per-codeword counts are uint16 (10 bytes of state per codeword): a codeword may
    arrive 65,535 times between resets. A batch that would take any count past that is
    refused before anything is folded in (its other arrivals included), by the serial and
    the threaded fold alike, and so is a single arrival; the one-shot decode likewise."""
    from lwpd import _config, decoders

    if threaded:
        monkeypatch.setattr(_config, "SCATTER_PARALLEL_MIN_CODEWORDS", 1)
        monkeypatch.setattr(_config, "PARALLEL_MIN_WORK", 1)
    cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(8, 4))
    dec = ProjectionDecoder(cb)
    assert dec._state.counts.dtype == np.uint16
    values = cb.encode(np.random.default_rng(0).standard_normal(8))
    limit = 65_535
    received = np.r_[np.full(limit - 1, 3), np.arange(8)]  # codeword 3 then holds exactly the limit
    dec.update(received, values[received])
    before, counts, n = dec.estimate().copy(), dec._state.counts.copy(), dec.n_received
    np.testing.assert_allclose(before, ref.decode_projection(cb.to_dense(), received, values[received]), atol=1e-9)
    with pytest.raises(OverflowError, match="codeword 3 would arrive more than 65,535 times"):
        dec.update(np.array([9, 10, 3, 11]), values[[9, 10, 3, 11]])
    with pytest.raises(OverflowError, match="reset"):
        dec.update(3, float(values[3]))
    np.testing.assert_array_equal(dec._state.counts, counts)  # nothing was folded in
    np.testing.assert_array_equal(dec.estimate(), before)
    assert dec.n_received == n
    dec.update(np.array([9, 10]), values[[9, 10]])  # other codewords still fold in
    dec.reset()
    dec.update(3, float(values[3]))  # room again after a reset
    with pytest.raises(OverflowError):
        decoders.decode(cb, np.full(limit + 1, 3), np.full(limit + 1, values[3]))
    np.testing.assert_allclose(decoders.decode(cb, np.full(limit, 3), np.full(limit, values[3])),
                               decoders.decode(cb, [3], values[[3]]), atol=1e-12)  # the cached scratch is clean


@pytest.mark.parametrize("copy_how", ["deepcopy", "pickle"])
def test_a_copied_or_pickled_decoder_decodes_as_the_original(copy_how):
    """A copy keeps working on its own state: single and batch arrivals after copying decode
    as the pinv oracle, and the original is untouched."""
    import copy
    import pickle

    cb = block_codebook(projective_codebook(4, max_weight=2), Partition.uniform(12, 4))
    values = cb.encode(np.random.default_rng(2).standard_normal(cb.dim))
    original = ProjectionDecoder(cb)
    original.update(np.arange(5), values[:5])
    twin = copy.deepcopy(original) if copy_how == "deepcopy" else pickle.loads(pickle.dumps(original))
    for j in range(5, len(cb)):
        twin.update(int(j), float(values[j]))
    every = np.arange(len(cb))
    np.testing.assert_allclose(twin.estimate(), ref.decode_projection(cb.to_dense(), every, values), atol=1e-12)
    np.testing.assert_allclose(original.estimate(), ref.decode_projection(cb.to_dense(), every[:5], values[:5]), atol=1e-12)
    twin.reset()
    assert twin.rank == 0 and not twin.estimate().any() and original.n_received == 5
