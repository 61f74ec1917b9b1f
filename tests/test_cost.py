"""The cost model: every scheme's charge, checked by counting, and the clusters' use of it."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import FixedDelays, decode_projection

from lwpd import Codebook, Partition, block_codebook, identity_codebook, projective_codebook, train
from lwpd.cluster import ExecutorCluster, SimulatedCluster
from lwpd.cost import CostModel, codeword_support
from lwpd.problems import LeastSquares, Logistic, Softmax
from lwpd.schemes import LCC, LWPD, GradientCoding, IgnoreStragglers, Replication, Uncoded

M, D, N = 1000, 20, 10  # 1000 rows of 20 features, 10 workers: shards of 100 rows
P = D + 1  # least squares with an intercept
UNIT = 2 * (M / N) * P  # one uncoded shard gradient: forward + backward, 4200 multiply-adds


def _least_squares(m=M, d=D, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    return LeastSquares(X, X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(m), alpha=0.1, **kwargs)


def _three_disjoint_pairs():
    """3 codewords of weight 2 with disjoint supports in R^21 (6 coordinates touched)."""
    dense = np.zeros((3, P))
    for j in range(3):
        dense[j, 2 * j], dense[j, 2 * j + 1] = 1.0, -1.0
    return Codebook.from_dense(dense)


def _bound(scheme, problem=None, n_workers=N, seed=0):
    scheme.bind(_least_squares() if problem is None else problem, n_workers, np.random.default_rng(seed))
    return scheme


def test_the_module_docstring_example_is_what_a_sharded_lwpd_worker_is_charged():
    # a worker reads its 100 rows of 20 features and answers 3 codewords of weight 2
    scheme = _bound(LWPD(codebook=_three_disjoint_pairs(), chunks=1))
    for task in scheme.tasks(np.zeros(P)):
        assert task.args[4].size == 100
        assert task.work == pytest.approx((100 * 21 + 100 * 6 + 6) / UNIT)  # 2706 / 4200
        assert task.floats == 3


def test_data_parallel_schemes_are_charged_one_shard_gradient_and_send_the_gradient():
    for scheme in (Uncoded(), IgnoreStragglers(), Replication(2)):
        tasks = _bound(scheme).tasks(np.zeros(P))
        assert len(tasks) == N
        for task in tasks:
            rows = task.args[2].size
            assert rows == 100 or (isinstance(scheme, Replication) and rows == 200)
            assert task.work == pytest.approx(2 * rows * P / UNIT)
            assert task.floats == P


@pytest.mark.parametrize("kind", ["frc", "cyclic"])
def test_gradient_coding_is_charged_each_partition_gradient_and_the_coded_sum(kind):
    for task in _bound(GradientCoding(1, kind=kind)).tasks(np.zeros(P)):
        parts = task.args[2]
        assert len(parts) == 2 and sum(p.size for p in parts) == 200
        assert task.work == pytest.approx(sum(2 * p.size * P + P for p in parts) / UNIT)  # (2 * 200 * 21 + 42) / 4200
        assert task.floats == P


def test_lcc_is_charged_its_coded_block():
    for task in _bound(LCC(2)).tasks(np.zeros(P)):
        assert task.args[0].shape == (500, P + 1)  # [X 1 | y] of 500 coded rows
        assert task.work == pytest.approx(2 * 500 * P / UNIT)  # 5 units
        assert task.floats == P


def test_full_layout_charges_the_forward_pass_over_every_row_to_the_first_chunk():
    scheme = _bound(LWPD(layout="full", block_size=7, redundancy=None, chunks=2))
    for task in scheme.tasks(np.zeros(P)):
        touched, weight = codeword_support(scheme.codebook_, task.args[3])
        forward = M * P if task.key[1] == 0 else 0.0  # all 1000 rows x 21 parameters: 5 units
        assert task.work == pytest.approx((forward + M * touched + weight) / UNIT)
        assert task.floats == task.args[3].size


def test_moment_layout_charges_a_one_off_setup_and_then_rows_of_the_moments():
    scheme = _bound(LWPD(layout="moments", block_size=7, redundancy=2.0, chunks=1))
    setup = scheme.setup_tasks()
    assert len(setup) == N
    for task in setup:
        assert task.work == pytest.approx(100 * (P * (P + 1) / 2 + P) / UNIT)  # the shard's moments, once
        assert task.floats == 2 * (P * (P + 1) / 2 + P)  # to the master and back
    for task in scheme.tasks(np.zeros(P)):
        touched, weight = codeword_support(scheme.codebook_, task.args[3])
        assert task.work == pytest.approx((touched * P + weight) / UNIT)
    assert Uncoded().setup_tasks() == []


def test_codeword_support_counts_distinct_coordinates_and_total_weight():
    cb = Codebook.from_dense([[1, 1, 0], [0, 1, -1], [1, 0, 0]])
    assert codeword_support(cb, [0, 1]) == (3, 4.0)
    assert codeword_support(cb, [2, 2]) == (1, 2.0)
    assert codeword_support(cb, []) == (0, 0.0)


def test_the_default_lwpd_is_an_equal_work_configuration():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1600, 30))
    problem = Softmax(X, rng.integers(0, 4, 1600))
    scheme = _bound(LWPD(), problem, n_workers=16)
    tasks = scheme.tasks(np.zeros(problem.n_params))
    assert len(tasks) == 16 * 4  # streams four chunks per worker
    per_worker = np.bincount([t.worker for t in tasks], weights=[t.work for t in tasks])
    # half a unit of forward pass plus the partial derivatives (all coordinates), plus combining
    assert per_worker == pytest.approx(np.full(16, 1.0), rel=0.01)
    assert (per_worker >= 1.0).all()


def test_cost_model_prices_communication_and_validates():
    assert CostModel().communication(1e9) == 0.0 and CostModel().compute_only
    assert CostModel(latency=0.25, bandwidth=100.0).communication(50) == pytest.approx(0.75)
    assert CostModel(bandwidth=10.0).task_time(2.0, 3.0, 20) == pytest.approx(8.0)
    assert math.isinf(CostModel(latency=1.0).task_time(math.inf, 1.0, 0))
    with pytest.raises(ValueError, match="latency must be >= 0"):
        CostModel(latency=-1.0)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        CostModel(bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        CostModel(bandwidth=float("nan"))
    with pytest.raises(TypeError, match="bandwidth must be a positive real number"):
        CostModel(bandwidth="fast")
    with pytest.raises(ValueError, match="floats must be >= 0"):
        CostModel(bandwidth=1.0).communication(-1)
    with pytest.raises(TypeError, match="cost must be a lwpd.cost.CostModel"):
        SimulatedCluster(2, cost={"latency": 1.0})


def test_a_simulated_task_takes_delay_times_work_plus_its_communication():
    cluster = SimulatedCluster(2, FixedDelays([1.0, 3.0]), seed=0, cost=CostModel(latency=0.5, bandwidth=10.0))
    a = cluster.submit(0, int, 1, work=2.0, floats=10)  # 2 + 0.5 + 1 = 3.5
    b = cluster.submit(0, int, 2, work=1.0, floats=0)  # the worker is busy until 3.5: 3.5 + 1 + 0.5 = 5
    c = cluster.submit(1, int, 3, work=1.0, floats=20)  # 3 + 0.5 + 2 = 5.5
    finished = {done.task_id: done.finished for done in cluster.as_completed()}
    assert finished == pytest.approx({a: 3.5, b: 5.0, c: 5.5})
    with pytest.raises(ValueError, match="floats must be >= 0"):
        cluster.submit(0, int, work=1.0, floats=-2)
    assert cluster.pending == 0


def test_an_executor_cluster_sleeps_the_communication_too():
    with ThreadPoolExecutor(2) as pool:
        cluster = ExecutorCluster(pool, 2, FixedDelays([1.0, 1.0]), time_scale=0.01, cost=CostModel(latency=2.0))
        cluster.submit(0, int, 1, work=1.0, floats=5)
        (done,) = cluster.wait()
    assert done.latency >= 0.03  # (1 * 1 + 2) * 0.01 s


def test_history_records_compute_floats_and_decode_time_per_step():
    problem = _least_squares()
    cost = CostModel(latency=0.1, bandwidth=float(P))  # sending a gradient costs one unit
    history = train(problem, Uncoded(), SimulatedCluster(N, FixedDelays([1.0] * N), seed=0, cost=cost),
                    policy="first_k", max_steps=3, progress=False, seed=0)
    assert history.time == pytest.approx([2.1, 4.2, 6.3])  # 1 unit of compute + 0.1 + 21 / 21
    assert history.compute == pytest.approx([N * 1.0] * 3)
    assert history.floats == [N * P] * 3
    assert all(t > 0 for t in history.decode_time)
    totals = history.totals()
    assert totals["steps"] == 3 and totals["compute"] == pytest.approx(30.0) and totals["floats"] == 3 * N * P


def test_floats_count_only_the_results_that_arrived():
    problem = _least_squares()
    delays = FixedDelays([1.0] * (N - 2) + [np.inf, np.inf])
    history = train(problem, IgnoreStragglers(wait_for=0.5), SimulatedCluster(N, delays, seed=0), policy="deadline",
                    deadline=5.0, max_steps=2, progress=False, seed=0)
    assert history.received == [N - 2] * 2 and history.dropped == [2, 2]
    assert history.floats == [(N - 2) * P] * 2
    assert history.compute == pytest.approx([N * 1.0] * 2)  # dispatched work is spent, arrived or not


def test_moment_setup_is_charged_once_and_counted_in_the_time():
    problem = _least_squares()
    history = train(problem, LWPD(layout="moments", block_size=7, redundancy=2.0), SimulatedCluster(N, seed=0),
                    policy="first_k", max_steps=4, progress=False, seed=0)
    setup_units = 100 * (P * (P + 1) / 2 + P) / UNIT
    assert history.setup_compute == pytest.approx(N * setup_units)
    assert history.setup_floats == N * 2 * (P * (P + 1) / 2 + P)
    assert history.setup_time == pytest.approx(setup_units)  # every worker at delay 1, in parallel
    assert history.time[0] > history.setup_time
    assert history.totals()["compute"] == pytest.approx(history.setup_compute + sum(history.compute))


class _FailFirstRound:
    """Worker 0 never answers in the first round, then everyone takes 1 s per unit."""

    def __init__(self, n_workers):
        self.n_workers, self.rounds = n_workers, 0

    def sample(self, n_workers, rng):
        self.rounds += 1
        out = np.ones(n_workers)
        if self.rounds == 1:
            out[0] = np.inf
        return out

    def reset(self):
        self.rounds = 0


def test_a_setup_task_whose_worker_failed_is_dispatched_again():
    problem = _least_squares()
    history = train(problem, LWPD(layout="moments", block_size=7), SimulatedCluster(N, _FailFirstRound(N), seed=0),
                    policy="first_k", max_steps=2, progress=False, seed=0)
    setup_units = 100 * (P * (P + 1) / 2 + P) / UNIT
    assert history.setup_compute == pytest.approx((N + 1) * setup_units)  # worker 0's task twice
    assert history.setup_time == pytest.approx(2 * setup_units)
    dead = FixedDelays([np.inf] + [1.0] * (N - 1))
    with pytest.raises(RuntimeError, match="setup task\\(s\\) of lwpd never returned"):
        train(problem, LWPD(layout="moments", block_size=7), SimulatedCluster(N, dead, seed=0), policy="first_k",
              max_steps=2, progress=False, seed=0)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_moments_give_the_gradient_with_weights_and_intercepts(fit_intercept):
    rng = np.random.default_rng(3)
    weights = rng.uniform(0.2, 3.0, 200)
    problem = _least_squares(m=200, d=6, seed=3, sample_weight=weights, fit_intercept=fit_intercept)
    scheme = _bound(LWPD(layout="moments", codebook=identity_codebook(problem.n_params)), problem, n_workers=4)
    for task in scheme.setup_tasks():
        scheme.fold_setup(task.worker, task.fn(*task.args))
    A, b = scheme._moments
    theta = rng.standard_normal(problem.n_params)
    np.testing.assert_allclose(A @ theta - b, problem.gradient(theta), rtol=1e-10, atol=1e-12)


def _sharded_run(scheme, theta, arrivals):
    """Fold the (worker, chunk) results ``arrivals`` in order; return the estimate."""
    scheme.begin()
    tasks = {t.key: t for t in scheme.tasks(theta)}
    for key in arrivals:
        task = tasks[key]
        scheme.fold(task.worker, task.fn(*task.args))
    return scheme.estimate(), tasks


def _stacked_oracle(problem, scheme, theta, tasks, arrivals):
    """NumPy oracle: pinv of every received (shard, codeword) row against its value, each value
    the shard gradient's derivative scaled by N |S_w| / m."""
    V = scheme.codebook_.to_dense()
    rows, values = [], []
    for key in arrivals:
        task = tasks[key]
        shard, scale, indices = task.args[4], task.args[5], task.args[3]
        g_w = problem.gradient(theta, rows=shard)
        assert scale == pytest.approx(scheme.n_workers * shard.size / problem.n_samples)
        rows.extend(indices.tolist())
        values.extend((scale * V[indices] @ g_w).tolist())
    return decode_projection(V, np.array(rows), np.array(values))


def _sharded_problem():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((83, 5))  # shards of unequal size (83 rows over 6 workers)
    return Logistic(X, (X[:, 0] + 0.5 * rng.standard_normal(83) > 0).astype(int), alpha=0.05)


@pytest.mark.parametrize("redundancy", [1.0, 2.0, None])
def test_sharded_lwpd_is_exact_when_every_task_arrives(redundancy):
    problem = _sharded_problem()
    scheme = _bound(LWPD(block_size=3, redundancy=redundancy, chunks=2), problem, n_workers=6)
    theta = np.random.default_rng(5).standard_normal(problem.n_params)
    keys = [t.key for t in scheme.tasks(theta)]
    estimate, _ = _sharded_run(scheme, theta, keys)
    np.testing.assert_allclose(estimate, problem.gradient(theta), rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_sharded_lwpd_decodes_the_stacked_least_squares_fit_whatever_the_order(seed, data):
    problem = _sharded_problem()
    redundancy = data.draw(st.sampled_from([1.0, 2.0]))
    share = data.draw(st.sampled_from([1.0, 0.5]))
    scheme = _bound(LWPD(block_size=3, redundancy=redundancy, chunks=2, share=share), problem, n_workers=6, seed=seed)
    theta = np.random.default_rng(seed).standard_normal(problem.n_params)
    keys = [t.key for t in scheme.tasks(theta)]
    arrivals = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True))
    # the same step's tasks (dealt in begin) in two orders
    scheme._rng = np.random.default_rng(seed)
    estimate, tasks = _sharded_run(scheme, theta, arrivals)
    scheme._rng = np.random.default_rng(seed)
    reordered, _ = _sharded_run(scheme, theta, list(reversed(arrivals)))
    oracle = _stacked_oracle(problem, scheme, theta, tasks, arrivals)
    np.testing.assert_allclose(estimate, oracle, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(reordered, estimate, rtol=1e-10, atol=1e-12)


def test_sharing_half_the_codebook_halves_the_floats_and_balances_the_shards():
    problem = _sharded_problem()
    full = _bound(LWPD(block_size=3, chunks=1), problem, n_workers=6)
    half = _bound(LWPD(block_size=3, chunks=1, share=0.5), problem, n_workers=6)
    n_codewords = len(half.codebook_)
    for _ in range(3):
        half.begin()
        tasks = half.tasks(np.zeros(problem.n_params))
        answered = np.bincount(np.concatenate([t.args[3] for t in tasks]), minlength=n_codewords)
        assert (answered == 3).all()  # every codeword by round(0.5 * 6) = 3 shards
        assert sum(t.floats for t in tasks) == 3 * n_codewords
        sizes = [t.args[3].size for t in tasks]
        assert max(sizes) - min(sizes) <= 1
    assert sum(t.floats for t in full.tasks(np.zeros(problem.n_params))) == 6 * n_codewords


def test_moment_lwpd_projects_the_exact_gradient_onto_the_received_codewords():
    problem = _least_squares(m=120, d=7, seed=6)
    scheme = _bound(LWPD(layout="moments", block_size=4, redundancy=1.5, chunks=2), problem, n_workers=5)
    for task in scheme.setup_tasks():
        scheme.fold_setup(task.worker, task.fn(*task.args))
    theta = np.random.default_rng(7).standard_normal(problem.n_params)
    scheme.begin()
    tasks = scheme.tasks(theta)
    received = tasks[::3]
    for task in received:
        scheme.fold(task.worker, task.fn(*task.args))
    indices = np.concatenate([t.args[3] for t in received])
    V = scheme.codebook_.to_dense()
    oracle = decode_projection(V, indices, V[indices] @ problem.gradient(theta))
    np.testing.assert_allclose(scheme.estimate(), oracle, rtol=1e-9, atol=1e-12)


def test_moment_tasks_refuse_to_run_before_the_setup():
    scheme = _bound(LWPD(layout="moments", block_size=7))
    task = scheme.tasks(np.zeros(P))[0]
    with pytest.raises(RuntimeError, match="run the scheme's setup_tasks first"):
        task.fn(*task.args)
    with pytest.raises(TypeError, match="Uncoded has no setup tasks"):
        _bound(Uncoded()).fold_setup(0, None)


def test_a_block_codebook_over_the_parameters_keeps_its_partition_for_the_cost():
    cb = block_codebook(projective_codebook(3, max_weight=2), Partition.uniform(6, 3))
    touched, weight = codeword_support(cb, np.arange(len(cb)))
    assert touched == 6 and weight == cb.weights.sum()


def test_streaming_ignore_stragglers_charges_and_decodes_each_piece():
    problem = _sharded_problem()
    scheme = _bound(IgnoreStragglers(chunks=3), problem, n_workers=6)
    theta = np.random.default_rng(8).standard_normal(problem.n_params)
    tasks = scheme.tasks(theta)
    assert len(tasks) == 18 and len({t.key for t in tasks}) == 18
    unit = 2 * (83 / 6) * problem.n_params
    for task in tasks:
        rows = task.args[2]
        assert task.work == pytest.approx(2 * rows.size * problem.n_params / unit)
        assert task.floats == problem.n_params
    scheme.begin()
    for task in tasks:
        scheme.fold(task.worker, task.fn(*task.args))
    np.testing.assert_allclose(scheme.estimate(), problem.gradient(theta), rtol=1e-12, atol=1e-14)
    # a subset of pieces: the size-weighted mean of their gradients, whatever the order
    subset = tasks[::4]
    rows = np.concatenate([t.args[2] for t in subset])
    for order in (subset, subset[::-1]):
        scheme.begin()
        for task in order:
            scheme.fold(task.worker, task.fn(*task.args))
        np.testing.assert_allclose(scheme.estimate(), problem.gradient(theta, rows=rows), rtol=1e-12, atol=1e-14)
    assert not scheme.ready(13) and scheme.ready(14)  # 75% of 18 pieces
    with pytest.raises(ValueError, match=r"chunks \(20\) exceeds the rows of a worker's shard"):
        _bound(IgnoreStragglers(chunks=20), problem, n_workers=6)


def test_a_chunk_re_run_on_its_own_is_charged_its_own_forward_pass():
    scheme = _bound(LWPD(codebook=_three_disjoint_pairs(), chunks=3))
    for task in scheme.tasks(np.zeros(P)):
        forward = 100 * P / UNIT  # the shard's 100 rows x 21 parameters
        assert task.rerun_work - task.work == pytest.approx(0.0 if task.key[1] == 0 else forward)
    moments = _bound(LWPD(layout="moments", block_size=7))
    assert all(t.rerun_work == t.work for t in moments.tasks(np.zeros(P)))
    # the asynchronous policy re-dispatches single chunks: each is charged its rerun_work
    problem = _least_squares()
    history = train(problem, LWPD(codebook=_three_disjoint_pairs(), chunks=3), SimulatedCluster(N, seed=0),
                    policy="async", k=N, max_steps=3, lr=0.01, progress=False, seed=0)
    first_chunk, other_chunk = (100 * P + 100 * 2 + 2) / UNIT, (100 * 2 + 2) / UNIT
    dispatched_first_step = N * (first_chunk + 2 * other_chunk)
    assert history.compute[0] >= dispatched_first_step
    extra = history.compute[0] - dispatched_first_step  # re-dispatches, each with a forward pass
    assert extra == pytest.approx(round(extra / first_chunk) * first_chunk)


def test_history_files_from_before_the_cost_fields_still_load(tmp_path):
    import json

    from lwpd import History

    path = tmp_path / "old.json"
    path.write_text(json.dumps({"scheme": "old", "time": [1.0, 2.0], "loss": [1.0, 0.5], "grad_error": [0.1, 0.1],
                                "received": [4, 4], "dropped": [0, 0], "staleness": [0.0, 0.0]}))
    history = History.load(path)
    assert history.loss == [1.0, 0.5] and np.isnan(history.compute).all() and history.setup_time == 0.0
    assert np.isnan(history.initial_loss) and history.curve()[0].tolist() == [1.0, 2.0]  # no initial point recorded


def test_share_needs_fresh_dealing_and_enough_codewords():
    with pytest.raises(ValueError, match="share < 1 needs reassign=True"):
        LWPD(share=0.5, reassign=False)
    cb = Codebook.from_dense(np.eye(P)[:3])
    with pytest.raises(ValueError, match="some worker would answer nothing; raise share"):
        _bound(LWPD(codebook=cb, share=0.1))
    with pytest.raises(ValueError, match="with layout='full' each worker needs a codeword"):
        _bound(LWPD(codebook=cb, layout="full"))


def test_a_read_only_view_of_a_writable_array_is_not_cached():
    problem, fresh = _least_squares(), _least_squares()
    base = np.arange(0, M, 2)
    view = base[:]
    view.flags.writeable = False
    theta = np.ones(P)
    np.testing.assert_allclose(problem.gradient(theta, rows=view), fresh.gradient(theta, rows=view), rtol=1e-14)
    base[:] = np.arange(1, M, 2)  # the view changes with it
    np.testing.assert_allclose(problem.gradient(theta, rows=view), fresh.gradient(theta, rows=view), rtol=1e-14)


def test_an_executor_cluster_runs_a_logical_workers_tasks_one_after_another():
    with ThreadPoolExecutor(4) as pool:
        cluster = ExecutorCluster(pool, 2, FixedDelays([1.0, 1.0]), time_scale=0.05)
        first = cluster.submit(0, int, 1, work=1.0)
        second = cluster.submit(0, int, 2, work=1.0)  # queued behind the first on worker 0
        other = cluster.submit(1, int, 3, work=1.0)
        done = {d.task_id: d for d in cluster.as_completed()}
        start = done[first].submitted
        assert done[first].finished - start >= 0.05 and done[other].finished - start >= 0.05
        assert done[second].finished - start >= 0.1 - 1e-3  # the first's 0.05 s, then its own (clock reads differ)
        assert done[other].finished < done[second].finished
        # cancelling frees the worker: the next task starts at once
        cluster.submit(0, int, 4, work=100.0)
        cluster.cancel()
        fresh = cluster.submit(0, int, 5, work=1.0)
        (done,) = cluster.wait()
        assert done.task_id == fresh and done.latency < 0.1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 12), st.booleans())
def test_chunk_supports_count_each_chunks_distinct_coordinates_by_bitmap_and_by_sort(seed, n_chunks, bitmap):
    """Every chunk's (distinct coordinates, total weight) against a brute-force count over its
    dense codewords, on both routes (the bitmap and, past its size limit, the sort)."""
    from lwpd import _config
    from lwpd.cost import chunk_supports

    rng = np.random.default_rng(seed)
    dense = rng.integers(-1, 2, size=(15, 9)) * (rng.random((15, 9)) < 0.4)
    dense[~dense.any(axis=1), 0] = 1  # codewords are nonzero
    cb = Codebook.from_dense(dense)
    chunks = [rng.integers(0, len(cb), size=rng.integers(0, 6)) for _ in range(n_chunks)]  # repeats allowed
    limit = _config.SUPPORT_BITMAP_MAX_ENTRIES if bitmap else 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_config, "SUPPORT_BITMAP_MAX_ENTRIES", limit)
        touched, weight = chunk_supports(cb, chunks)
    assert touched.tolist() == [int((dense[chunk] != 0).any(axis=0).sum()) for chunk in chunks]
    assert weight.tolist() == [float((dense[chunk] != 0).sum()) for chunk in chunks]


def test_charging_rules_take_arrays_of_chunks_as_they_take_one():
    from lwpd.cost import derivative_ops, moment_derivative_ops, units

    rows, touched, weight, forward = [10, 20, 30], [3, 0, 7], [4.0, 0.0, 9.0], [True, False, True]
    ops = derivative_ops(np.array(rows), 21, np.array(touched), np.array(weight), forward=np.array(forward))
    assert ops.tolist() == [derivative_ops(r, 21, t, w, forward=f) for r, t, w, f in zip(rows, touched, weight, forward)]
    assert isinstance(derivative_ops(10, 21, 3, 4.0), float) and isinstance(units(5.0, 100, 4, 21), float)
    assert units(ops, 100, 4, 21).tolist() == [units(o, 100, 4, 21) for o in ops.tolist()]
    assert moment_derivative_ops(21, np.array(touched), np.array(weight)).tolist() == [
        moment_derivative_ops(21, t, w) for t, w in zip(touched, weight)]
