"""Byzantine workers: fault injection, robust decoding (exact at the correction limit, a
reported failure past it) and training through lies, against brute-force oracles."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwpd import Partition, ProjectionDecoder, block_codebook, compress, projective_codebook, train
from lwpd.cluster import ExecutorCluster, SimulatedCluster
from lwpd.problems import LeastSquares
from lwpd.robust import Byzantine, DecodingFailureWarning, RobustDecoder, block_code_limits
from lwpd.schemes import RobustAggregation
from lwpd.schemes import LWPD


def base12():
    return compress(projective_codebook(4, q=3, max_weight=2), 12, criterion="logdet")


def min_distance(A):
    """Brute force: d = r - (most rows inside one hyperplane through 0), over the hyperplanes
    spanned by rank - 1 rows (rank-deficient A: hyperplanes of its row space)."""
    r = A.shape[0]
    rank = np.linalg.matrix_rank(A)
    if rank == 0:
        return r
    best = 0
    for subset in itertools.combinations(range(r), rank - 1):
        S = A[list(subset)]
        if subset and np.linalg.matrix_rank(S) < rank - 1:
            continue
        # normal of span(S) within the row space of A
        rowspace = np.linalg.svd(A)[2][:rank]
        coords = S @ rowspace.T if subset else np.zeros((0, rank))
        normal = np.linalg.svd(np.vstack([coords, np.zeros((1, rank))]))[2][-1] if subset else np.eye(rank)[0]
        inside = np.abs(A @ rowspace.T @ normal) < 1e-9
        best = max(best, int(inside.sum()))
    return r - best


@pytest.mark.parametrize("received", [None, [0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 2, 3, 5, 7, 8, 9, 10, 11], [1, 2, 3, 4, 6]])
def test_block_code_limits_match_the_brute_force_distance(received):
    cb = block_codebook(base12(), Partition.uniform(4, 4))
    corrects, detects = block_code_limits(cb, received, max_errors=5)
    rows = cb.to_dense()[np.arange(12) if received is None else received]
    d = min_distance(rows)
    assert detects[0] == min(d - 1, 10) and corrects[0] == detects[0] // 2


def encode_block(seed=0, n=8):
    cb = block_codebook(base12(), Partition.uniform(n, 4))
    g = np.random.default_rng(seed).standard_normal(n)
    return cb, g, cb.encode(g)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_corrects_exactly_up_to_the_radius(data):
    """Any t <= radius corrupted values per block, anywhere, of any size: the exact gradient,
    and exactly the corrupted codewords rejected, in any arrival order."""
    cb, g, values = encode_block(data.draw(st.integers(0, 10**6)))
    radius = block_code_limits(cb, max_errors=2)[0]
    assert (radius == 2).all()
    bad = []
    for block in range(2):
        t = data.draw(st.integers(0, 2))
        bad += [12 * block + j for j in data.draw(st.lists(st.integers(0, 11), min_size=t, max_size=t, unique=True))]
    lies = values.copy()
    for j in bad:
        lies[j] += data.draw(st.floats(0.1, 1e3)) * data.draw(st.sampled_from([-1.0, 1.0]))
    order = data.draw(st.permutations(range(24)))
    dec = RobustDecoder(cb, max_errors=2)
    for j in order:
        dec.update(int(j), float(lies[j]))
    np.testing.assert_allclose(dec.estimate(), g, rtol=1e-9, atol=1e-9)
    assert dec.report.rejected.tolist() == sorted(bad) and dec.report.failed_blocks.size == 0


def test_past_the_radius_the_failure_is_reported_never_a_wrong_gradient():
    cb, g, values = encode_block(1)
    lies = values.copy()
    rng = np.random.default_rng(0)
    lies[[0, 4, 9]] += rng.normal(0, 5, 3)  # three corrupted values in block 0 (radius 2)
    lies[14] += 3.0  # one in block 1: corrected
    dec = RobustDecoder(cb, max_errors=2)
    dec.update(np.arange(24), lies)
    with pytest.warns(DecodingFailureWarning, match="1 block"):
        est = dec.estimate()
    assert dec.report.failed_blocks.tolist() == [0] and dec.report.corrected_blocks.tolist() == [1]
    np.testing.assert_array_equal(est[:4], 0.0)  # left out, not decoded wrongly
    np.testing.assert_allclose(est[4:], g[4:], rtol=1e-9)
    assert dec.report.rejected.tolist() == [14] and dec.recovered_fraction() == 0.5


def test_without_redundancy_nothing_can_be_verified():
    """Four unit vectors: any value is consistent, so with max_errors=1 the block is left out
    (unverified); it is decoded when the user trusts it (unverified='use', or max_errors=0)."""
    cb = block_codebook(projective_codebook(4, q=3, max_weight=1), Partition.uniform(4, 4))  # 4 unit vectors
    assert block_code_limits(cb)[0].tolist() == [0]
    for decoder, expected, unverified in [(RobustDecoder(cb), [0, 0, 0, 0], [0]),
                                          (RobustDecoder(cb, unverified="use"), [1, 2, 3, 4], [0]),
                                          (RobustDecoder(cb, max_errors=0), [1, 2, 3, 4], [])]:
        decoder.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
        np.testing.assert_allclose(decoder.estimate(), expected)
        assert decoder.report.unverified_blocks.tolist() == unverified


def test_clean_values_decode_as_the_projection_decoder():
    """Trusted (max_errors=0) or verified, clean values decode as the projection decoder does;
    a block that received no spare codeword is left out unless trusted."""
    cb, g, values = encode_block(2)
    keep = np.r_[0, 3, 5, 12:24]  # block 0: 3 rows (rank 3, no spare), block 1: all 12 (4 spare)
    plain = ProjectionDecoder(cb)
    plain.update(keep, values[keep])
    trusted, checked = RobustDecoder(cb, max_errors=0), RobustDecoder(cb, max_errors=1)
    for robust in (trusted, checked):
        robust.update(keep, values[keep])
    np.testing.assert_allclose(trusted.estimate(), plain.estimate(), atol=1e-12)
    estimate = checked.estimate()
    np.testing.assert_array_equal(estimate[:4], 0.0)
    np.testing.assert_allclose(estimate[4:], plain.estimate()[4:], atol=1e-12)
    assert checked.report.unverified_blocks.tolist() == [0] and checked.report.rejected.size == 0


def test_robust_decoder_bad_input():
    cb, _, _ = encode_block()
    dec = RobustDecoder(cb)
    with pytest.raises(ValueError, match="finite"):
        dec.update([0, 1], [1.0, np.nan])
    with pytest.raises(IndexError):
        dec.update(24, 1.0)
    assert dec.n_received == 0  # nothing folded after an error
    with pytest.raises(ValueError, match="max_errors"):
        RobustDecoder(cb, max_errors=-1)


# -- fault injection ---------------------------------------------------------------------

@pytest.mark.parametrize("attack, expected", [
    ("sign_flip", lambda x: -x), ("scaled", lambda x: 10 * x), ("constant", lambda x: np.full_like(x, 10.0))])
def test_attacks(attack, expected):
    faults = Byzantine(0.2, attack=attack, seed=3)
    faults.bind(10)
    assert faults.workers.size == 2
    x = np.array([1.0, -2.0, 0.5])
    honest = next(w for w in range(10) if w not in faults.workers)
    liar = int(faults.workers[0])
    idx, out = faults.corrupt(liar, (np.array([4, 7, 9]), x))
    np.testing.assert_array_equal(idx, [4, 7, 9])  # which task it answers is never a lie
    np.testing.assert_allclose(out, expected(x))
    assert faults.corrupt(honest, x) is x


def test_random_attack_is_seeded_and_reset_repeats_it():
    faults = Byzantine(0.3, seed=5)
    faults.bind(10)
    first = (faults.workers, faults.corrupt(int(faults.workers[0]), np.ones(4)))
    faults.reset()
    again = (faults.workers, faults.corrupt(int(faults.workers[0]), np.ones(4)))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert np.abs(first[1] - 1).max() > 1  # a lie of magnitude ~10


@pytest.mark.parametrize("kwargs, match", [({"fraction": 0.5}, "fraction"), ({"fraction": 0.1, "attack": "x"}, "attack"),
                                           ({"fraction": 0.1, "magnitude": 0}, "magnitude")])
def test_byzantine_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Byzantine(**kwargs)


def test_every_cluster_takes_faults():
    faults = Byzantine(0.34, attack="sign_flip", seed=0)  # one liar in three
    with ThreadPoolExecutor(3) as pool:
        for cluster in (SimulatedCluster(3, seed=0, faults=faults), ExecutorCluster(pool, 3, seed=0, faults=faults)):
            for w in range(3):
                cluster.submit(w, np.ones, 2)
            out = {c.worker: c.result for c in cluster.as_completed()}
            (liar,) = faults.workers
            for w in range(3):
                np.testing.assert_array_equal(out[w], [-1.0, -1.0] if w == liar else [1.0, 1.0])
    with pytest.raises(TypeError, match="faults must be None or a fault model"):
        SimulatedCluster(2, faults=object())


@pytest.mark.parametrize("n_workers, fraction, liars", [(2, 0.3, 0), (4, 0.4, 1), (10, 0.1, 1), (12, 0.25, 3), (9, 0.49, 4)])
def test_byzantine_workers_are_always_a_minority(n_workers, fraction, liars):
    faults = Byzantine(fraction, seed=0)
    faults.bind(n_workers)
    assert faults.workers.size == liars and 2 * liars < n_workers


def test_byzantine_corrupts_dicts_and_complex_values():
    faults = Byzantine(0.34, attack="sign_flip", seed=0)
    faults.bind(3)
    liar = int(faults.workers[0])
    out = faults.corrupt(liar, {"g": np.ones(3), "piece": 2})
    np.testing.assert_array_equal(out["g"], -np.ones(3))
    assert out["piece"] == 2
    np.testing.assert_array_equal(faults.corrupt(liar, np.array([1 + 2j])), [-1 - 2j])


def test_robust_aggregation_rules():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 3))
    problem = LeastSquares(X, X @ [1.0, 2.0, 3.0], fit_intercept=False)
    theta = rng.standard_normal(3)
    for rule, oracle in [("median", lambda G: np.median(G, axis=0)),
                         ("trimmed_mean", lambda G: np.sort(G, axis=0)[1:-1].mean(axis=0))]:
        scheme = RobustAggregation(rule, trim=0.2)
        scheme.bind(problem, 5, np.random.default_rng(0))
        scheme.begin()
        G = []
        for task in scheme.tasks(theta):
            result = task.fn(*task.args)
            G.append(result)
            scheme.fold(task.worker, result)
        np.testing.assert_allclose(scheme.estimate(), oracle(np.array(G)), atol=1e-12)
    with pytest.raises(ValueError, match="trim"):
        RobustAggregation("trimmed_mean", trim=0.5)


# -- training through lies ---------------------------------------------------------------

def byzantine_run(scheme, seed=0):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 8))
    problem = LeastSquares(X, X @ rng.standard_normal(8) + 0.01 * rng.standard_normal(600), fit_intercept=False)
    target = problem.loss(np.linalg.lstsq(X, problem.y, rcond=None)[0]) * (1 + 1e-6)
    cluster = SimulatedCluster(12, seed=seed, faults=Byzantine(0.1, attack="random", seed=seed))
    h = train(problem, scheme, cluster, deadline=10.0, max_steps=300, target_loss=target, progress=False, seed=seed)
    return h, target


def coded(decoder):
    return LWPD(layout="full", block_size=4, redundancy=3.0, chunks=1, decoder=decoder, max_errors=1)


@pytest.mark.slow
def test_training_with_10_percent_byzantine_workers():
    """One liar in twelve: robust decoding reaches the least-squares optimum, every lie
    excluded; plain projection decoding does not; the median baseline is reported beside."""
    robust, target = byzantine_run(coded("robust"))
    assert robust.loss[-1] <= target
    assert all(x >= 1 for x in robust.excluded)  # the liar's result is excluded every step
    plain, _ = byzantine_run(coded("projection"))
    assert plain.loss[-1] > 100 * target and len(plain) == 300
    median, _ = byzantine_run(RobustAggregation("median"))
    trimmed, _ = byzantine_run(RobustAggregation("trimmed_mean", trim=0.1))
    # The aggregation baselines are biased (shards differ): they stall above the optimum.
    assert min(median.loss) > target and min(trimmed.loss) > target
    assert min(median.loss) < plain.loss[-1]


def test_robust_decoder_needs_consistent_values():
    with pytest.raises(ValueError, match="decoder='robust' needs layout='full' or 'moments'"):
        LWPD(decoder="robust")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 8))
    with pytest.raises(ValueError, match="max_staleness=0"):
        train(LeastSquares(X, X.sum(axis=1)), coded("robust"), SimulatedCluster(12, seed=0), policy="async",
              max_staleness=1, progress=False)


def test_a_worker_holding_more_codewords_of_a_block_than_max_errors_is_warned():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 8))
    scheme = coded("robust")  # 12 codewords per block
    with pytest.warns(UserWarning, match="one worker holds up to 2 codewords of a block"):
        scheme.bind(LeastSquares(X, X.sum(axis=1), fit_intercept=False), 6, np.random.default_rng(0))


@pytest.mark.parametrize("layout", ["full", "moments"])
def test_honest_runs_near_the_optimum_exclude_nothing(layout):
    """Values near the optimum are small differences of large terms; their rounding must not
    look like lies (the decoder's allowance follows the size of the terms)."""
    import warnings

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 8))
    problem = LeastSquares(X, X @ np.arange(8.0) + 0.1 * rng.standard_normal(400), fit_intercept=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecodingFailureWarning)
        h = train(problem, LWPD(layout=layout, block_size=4, redundancy=3.0, decoder="robust", max_errors=2),
                  SimulatedCluster(8, seed=0), deadline=100.0, max_steps=150, progress=False, seed=0)
    assert sum(h.excluded) == 0 and sum(h.unverified) == 0
    best = problem.loss(np.linalg.lstsq(X, problem.y, rcond=None)[0])
    assert h.loss[-1] <= best * (1 + 1e-9)


def test_too_many_liars_are_reported_not_decoded():
    """Three liars in twelve workers: three lies per block, past the radius of max_errors=1
    (and within the s - t = 3 that detection guarantees). Every block is reported failed and
    left out, so the run stands still instead of following a forged gradient."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 8))
    problem = LeastSquares(X, X @ rng.standard_normal(8), fit_intercept=False)
    cluster = SimulatedCluster(12, seed=0, faults=Byzantine(0.25, attack="random", seed=0))
    scheme = coded("robust")
    with pytest.warns(DecodingFailureWarning, match="left out of the estimate"):
        h = train(problem, scheme, cluster, deadline=10.0, max_steps=5, progress=False, seed=0)
    assert scheme.report.failed_blocks.tolist() == [0, 1]
    np.testing.assert_allclose(h.loss, problem.loss(np.zeros(8)))  # no step was taken on a wrong gradient


def test_a_block_that_received_only_its_rank_is_left_out_not_decoded_wrongly():
    """The minimal form: four independent codewords of one block of 4, one of them 5 off. No
    check is possible (radius 0), so the block is left out and reported, unless the user asks
    for it with unverified='use' (then the lie goes through, as the flag says)."""
    cb = block_codebook(base12(), Partition.uniform(4, 4))
    g = np.array([1.0, -2.0, 0.5, 3.0])
    rows = [0, 1, 2, 3]
    assert np.linalg.matrix_rank(cb.to_dense()[rows]) == 4
    values = cb.encode(g)[rows]
    values[2] += 5.0
    dec = RobustDecoder(cb, max_errors=1)
    dec.update(rows, values)
    np.testing.assert_array_equal(dec.estimate(), 0.0)
    assert dec.report.unverified_blocks.tolist() == [0] and dec.recovered_fraction() == 0.0
    taken = RobustDecoder(cb, max_errors=1, unverified="use")
    taken.update(rows, values)
    assert np.abs(taken.estimate() - g).max() > 1.0 and taken.report.unverified_blocks.tolist() == [0]
    with pytest.raises(ValueError, match="unverified"):
        RobustDecoder(cb, unverified="keep")
    with pytest.raises(ValueError, match="unverified='use' applies to decoder='robust' only"):
        LWPD(unverified="use")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_block_is_exact_or_left_out_never_wrong(data):
    """Any received subset of each block, any assumed bound m and at most m lies of any size:
    each block of the estimate is the projection of the truth on the received rows (NumPy
    pinv oracle) or zero and reported (failed or unverified) -- never a wrong value."""
    cb = block_codebook(base12(), Partition.uniform(8, 4))
    dense = cb.to_dense()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    g = rng.standard_normal(8)
    m = data.draw(st.integers(0, 2))
    received, lied = [], []
    for block in range(2):
        size = data.draw(st.integers(1, 12))
        rows = 12 * block + rng.choice(12, size, replace=False)
        received.append(np.sort(rows))
        lies = data.draw(st.integers(0, min(m, size)))
        lied.append(rng.choice(rows, lies, replace=False))
    idx = np.concatenate(received)
    values = cb.encode(g)
    for bad in lied:
        values[bad] += rng.choice([-1, 1], bad.size) * rng.uniform(0.5, 10.0, bad.size)
    dec = RobustDecoder(cb, max_errors=m)
    dec.update(idx, values[idx])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DecodingFailureWarning)
            estimate = dec.estimate()
    report = dec.report
    for block, rows in enumerate(received):
        A = dense[rows][:, 4 * block: 4 * block + 4]
        truth = np.linalg.pinv(A) @ (A @ g[4 * block: 4 * block + 4])
        got = estimate[4 * block: 4 * block + 4]
        left_out = block in report.failed_blocks or block in report.unverified_blocks
        if left_out:
            np.testing.assert_array_equal(got, 0.0)
        else:
            np.testing.assert_allclose(got, truth, atol=1e-8)


def test_training_never_steps_on_an_unverified_block():
    """The issue's run: redundancy 3 under a deadline, one liar in twelve. Blocks that
    received only their rank are counted and left out, so every step is a projection of the
    true gradient and the least-squares loss never rises (step 1 / L); taking them unchecked
    lets a lie in."""
    from lwpd.stragglers import ShiftedExponential

    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 8))
    problem = LeastSquares(X, X @ rng.standard_normal(8) + 0.1 * rng.standard_normal(600))

    def run(unverified):
        cluster = SimulatedCluster(12, ShiftedExponential(0.2, 0.5), faults=Byzantine(1 / 12, seed=1), seed=0)
        scheme = LWPD(layout="full", redundancy=3.0, decoder="robust", max_errors=1, block_size=4,
                      unverified=unverified)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return train(problem, scheme, cluster, policy="deadline", deadline=3.0, max_steps=60, progress=False,
                         seed=0)

    safe = run("drop")
    assert sum(safe.unverified) > 0
    assert np.all(np.diff(safe.loss) <= 1e-12 * np.abs(safe.loss[:-1]))
    taken = run("use")
    assert sum(taken.unverified) == sum(safe.unverified) and np.any(np.diff(taken.loss) > 0)


def test_a_block_that_can_never_be_verified_is_warned_at_bind():
    """Nine parameters in blocks of 4: the last block has one coordinate and one codeword
    (PG(0, q) has one point), so no lie in it can ever be detected."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 9))
    with pytest.warns(UserWarning, match=r"1 block\(s\) \(\[2\]\) cannot detect max_errors=1"):
        coded("robust").bind(LeastSquares(X, X.sum(axis=1), fit_intercept=False), 12, np.random.default_rng(0))
