import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from reference import FixedDelays, ill_conditioned_least_squares

from lwpd import Partition, block_codebook, projective_codebook, train
from lwpd.cluster import ExecutorCluster, SimulatedCluster
from lwpd.problems import LeastSquares, Logistic, Softmax
from lwpd.schemes import LCC, LWPD, GradientCoding, IgnoreStragglers, Replication, Uncoded
from lwpd.stragglers import ShiftedExponential


def _problems():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    return {
        "least-squares": LeastSquares(X, X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(60), alpha=0.1),
        "logistic": Logistic(X, (X[:, 0] + 0.3 * rng.standard_normal(60) > 0).astype(int), alpha=0.05),
        "softmax": Softmax(X, rng.integers(0, 3, 60), alpha=0.05),
    }


SCHEMES = {
    "uncoded": Uncoded,
    "ignore": IgnoreStragglers,
    "replication": lambda: Replication(2),
    "gc-frc": lambda: GradientCoding(1, kind="frc"),
    "gc-cyclic": lambda: GradientCoding(2, kind="cyclic"),
    "lwpd": lambda: LWPD(block_size=4),
    "lwpd-sharded-2x": lambda: LWPD(block_size=4, redundancy=2.0),
    "lwpd-full": lambda: LWPD(layout="full", block_size=4, redundancy=None),
    "lwpd-compressed": lambda: LWPD(layout="full", block_size=4, redundancy=2.0),
    "lwpd-peeling": lambda: LWPD(layout="full", block_size=4, redundancy=None, decoder="peeling"),
    "lwpd-chunked": lambda: LWPD(block_size=4, chunks=2),
}
LEAST_SQUARES_ONLY = {
    "lcc": lambda: LCC(2),
    "lwpd-moments": lambda: LWPD(layout="moments", block_size=4, redundancy=2.0),
    "lwpd-moments-peeling": lambda: LWPD(layout="moments", block_size=4, redundancy=None, decoder="peeling"),
}


def _setup(scheme):
    for task in scheme.setup_tasks():
        scheme.fold_setup(task.worker, task.fn(*task.args))


def _run_tasks(scheme, theta, workers=None):
    scheme.begin()
    for task in scheme.tasks(theta):
        if workers is None or task.worker in workers:
            scheme.fold(task.worker, task.fn(*task.args))
    return scheme.estimate()


@pytest.mark.parametrize("problem_name", ["least-squares", "logistic", "softmax"])
@pytest.mark.parametrize("scheme_name", list(SCHEMES))
def test_every_scheme_decodes_the_exact_gradient_without_stragglers(problem_name, scheme_name):
    problem = _problems()[problem_name]
    scheme = SCHEMES[scheme_name]()
    scheme.bind(problem, 6, np.random.default_rng(1))
    theta = np.random.default_rng(2).standard_normal(problem.n_params) * 0.3
    np.testing.assert_allclose(_run_tasks(scheme, theta), problem.gradient(theta), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("scheme_name", list(LEAST_SQUARES_ONLY))
def test_least_squares_schemes_decode_the_exact_gradient_without_stragglers(scheme_name):
    problem = _problems()["least-squares"]
    scheme = LEAST_SQUARES_ONLY[scheme_name]()
    scheme.bind(problem, 6, np.random.default_rng(1))
    _setup(scheme)
    theta = np.random.default_rng(2).standard_normal(problem.n_params) * 0.3
    np.testing.assert_allclose(_run_tasks(scheme, theta), problem.gradient(theta), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind,s", [("frc", 1), ("frc", 2), ("cyclic", 1), ("cyclic", 3)])
def test_gradient_coding_is_exact_from_every_n_minus_s_subset(kind, s):
    problem = _problems()["logistic"]
    scheme = GradientCoding(s, kind=kind)
    scheme.bind(problem, 6, np.random.default_rng(3))
    theta = np.random.default_rng(4).standard_normal(problem.n_params)
    g = problem.gradient(theta)
    for subset in itertools.combinations(range(6), 6 - s):
        np.testing.assert_allclose(_run_tasks(scheme, theta, set(subset)), g, rtol=1e-8, atol=1e-10)


def test_uncoded_and_replication_need_every_shard():
    problem = _problems()["least-squares"]
    theta = np.ones(problem.n_params)
    uncoded = Uncoded()
    uncoded.bind(problem, 6, np.random.default_rng(0))
    assert _run_tasks(uncoded, theta, workers={0, 1, 2, 3, 4}) is None
    rep = Replication(2)
    rep.bind(problem, 6, np.random.default_rng(0))
    # one copy of each of the 3 shards is enough
    np.testing.assert_allclose(_run_tasks(rep, theta, workers={0, 3, 5}), problem.gradient(theta), rtol=1e-12)
    assert _run_tasks(rep, theta, workers={0, 1, 2, 3}) is None


def test_lwpd_estimate_is_always_a_descent_direction():
    problem = _problems()["softmax"]
    scheme = LWPD(layout="full", block_size=4, redundancy=1.5)
    scheme.bind(problem, 8, np.random.default_rng(5))
    rng = np.random.default_rng(6)
    for _ in range(30):
        theta = rng.standard_normal(problem.n_params)
        workers = set(rng.choice(8, size=rng.integers(1, 9), replace=False).tolist())
        g_hat = _run_tasks(scheme, theta, workers)
        g = problem.gradient(theta)
        assert g_hat @ g >= -1e-12
        assert g_hat @ g == pytest.approx(g_hat @ g_hat, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("policy,extra", [("deadline", {"deadline": 60.0}), ("first_k", {"k": 5}), ("async", {})])
@pytest.mark.parametrize("scheme_name", ["uncoded", "ignore", "gc-cyclic", "lwpd", "lwpd-chunked", "lcc"])
def test_training_reaches_the_target_under_each_policy(policy, extra, scheme_name):
    problem = _problems()["least-squares"]
    optimum = np.linalg.lstsq(
        np.vstack([np.c_[problem.X, np.ones(60)] / np.sqrt(60), np.sqrt(0.1) * np.c_[np.eye(5), np.zeros(5)]]),
        np.r_[problem.y / np.sqrt(60), np.zeros(5)], rcond=None)[0]
    target = problem.loss(optimum) * 1.01
    if scheme_name == "uncoded" and policy == "first_k":
        extra = {"k": 6}  # uncoded cannot decode from fewer than all shards
    if policy == "async":
        extra = {"lr": 0.3 / problem.lipschitz()}  # stale gradients want a shorter step
    cluster = SimulatedCluster(6, ShiftedExponential(1.0, 1.0), seed=7)
    scheme = {**SCHEMES, **LEAST_SQUARES_ONLY}[scheme_name]()
    history = train(problem, scheme, cluster, policy=policy, max_steps=400,
                    target_loss=target, progress=False, seed=8, **extra)
    assert history.loss[-1] <= target
    assert history.time == sorted(history.time)


def _simulated(history):
    """A history without its wall-clock decode times: what a seed determines."""
    out = history.as_dict()
    assert len(out.pop("decode_time")) == len(history)
    return out


def test_training_is_deterministic_for_a_seed():
    problem = _problems()["logistic"]

    def run(seed):
        cluster = SimulatedCluster(6, ShiftedExponential(1.0, 0.5), seed=seed)
        return train(problem, LWPD(block_size=4, redundancy=1.0), cluster, deadline=2.5, max_steps=15, progress=False, seed=seed)

    a, b, c = run(1), run(1), run(2)
    assert _simulated(a) == _simulated(b)
    assert _simulated(a) != _simulated(c)


def test_executor_cluster_decodes_like_the_simulated_cluster():
    problem = _problems()["softmax"]
    kwargs = dict(policy="deadline", deadline=60.0, max_steps=3, progress=False, seed=3)
    simulated = train(problem, LWPD(block_size=4), SimulatedCluster(6, seed=0), **kwargs)
    with ThreadPoolExecutor(4) as pool:
        threaded = train(problem, LWPD(block_size=4), ExecutorCluster(pool, 6), **kwargs)
    assert set(threaded.received) == set(simulated.received) == {6 * 4}
    # all results arrive in both, in different orders: the decoded steps are the same
    np.testing.assert_allclose(threaded.loss, simulated.loss, rtol=1e-10)
    np.testing.assert_allclose(threaded.theta, simulated.theta, rtol=1e-10, atol=1e-12)


def test_history_round_trip_and_helpers(tmp_path):
    problem = _problems()["least-squares"]
    history = train(problem, LWPD(block_size=4), SimulatedCluster(3, seed=0), deadline=50.0, max_steps=5, progress=False, seed=0)
    assert len(history) == 5
    assert history.time_to(history.loss[2]) == history.time[2]
    assert history.time_to(-1.0) == float("inf")
    # the initial point (time 0, the loss at theta0) starts every curve
    assert history.initial_loss == pytest.approx(problem.loss(np.zeros(problem.n_params)), rel=1e-15)
    times, losses = history.curve()
    assert times.tolist() == [0.0, *history.time] and losses.tolist() == [history.initial_loss, *history.loss]
    assert history.time_to(history.initial_loss) == 0.0
    path = tmp_path / "h.json"
    history.save(path)
    loaded = type(history).load(path)
    assert loaded.as_dict() == history.as_dict()
    import matplotlib

    matplotlib.use("Agg")
    ax = history.plot()
    assert ax.get_xlabel() == "time" and len(ax.lines) == 1
    assert ax.lines[0].get_xdata()[0] == 0.0 and ax.lines[0].get_ydata()[0] == history.initial_loss


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"policy": "deadline"}, ValueError, "deadline is required"),
        ({"policy": "first_k", "k": 99}, ValueError, "k must be in"),
        ({"policy": "sometimes", "deadline": 1.0}, ValueError, "policy must be one of"),
        ({"deadline": -1.0}, ValueError, "deadline must be > 0"),
        ({"deadline": 1.0, "lr": 0.0}, ValueError, "lr must be > 0"),
        ({"policy": "async", "max_staleness": -1}, ValueError, "max_staleness must be >= 0"),
        ({"deadline": 1.0, "track_error": "no"}, TypeError, "track_error must be True or False"),
    ],
)
def test_train_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        train(_problems()["least-squares"], Uncoded(), SimulatedCluster(3, seed=0), progress=False, **kwargs)


def test_scheme_errors():
    problem = _problems()["least-squares"]
    with pytest.raises(ValueError, match="multiple of r"):
        Replication(4).bind(problem, 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="s must be < n_workers"):
        GradientCoding(6).bind(problem, 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="compress needs redundancy"):
        LWPD(redundancy=None, compress="logdet")
    with pytest.raises(ValueError, match="codebook must have dimension 6"):
        LWPD(codebook=block_codebook(projective_codebook(4), Partition.uniform(8, 4))).bind(problem, 2, np.random.default_rng(0))


@pytest.mark.parametrize("K", [1, 2, 3])
def test_lcc_recovers_the_least_squares_gradient_from_any_threshold_set(K):
    problem = _problems()["least-squares"]
    scheme = LCC(K)
    scheme.bind(problem, 7, np.random.default_rng(9))
    theta = np.random.default_rng(10).standard_normal(problem.n_params)
    g = problem.gradient(theta)
    for subset in itertools.combinations(range(7), scheme.threshold):
        np.testing.assert_allclose(_run_tasks(scheme, theta, set(subset)), g, rtol=1e-8, atol=1e-10)
    fewer = set(range(scheme.threshold - 1))
    if fewer:
        assert _run_tasks(scheme, theta, fewer) is None


def test_lcc_errors():
    with pytest.raises(TypeError, match="LeastSquares problems only"):
        LCC(2).bind(_problems()["logistic"], 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs at least 5 workers"):
        LCC(3).bind(_problems()["least-squares"], 4, np.random.default_rng(0))


@pytest.mark.parametrize("scheme_name,expected", [("uncoded", 6), ("gc-cyclic", 4), ("replication", None), ("lwpd", 18), ("ignore", 5)])
def test_waiting_until_ready_stops_at_the_natural_count(scheme_name, expected):
    problem = _problems()["least-squares"]
    cluster = SimulatedCluster(6, ShiftedExponential(1.0, 1.0), seed=3)
    history = train(problem, SCHEMES[scheme_name](), cluster, policy="first_k", max_steps=10, progress=False, seed=0)
    if expected is not None:
        assert set(history.received) == {expected}
    else:  # replication: between one copy of each of the 3 shards and all 6 results
        assert all(3 <= r <= 6 for r in history.received)
    assert all(np.isfinite(history.grad_error))


def test_async_policy_counts_staleness_and_drops_stale_results():
    from lwpd.stragglers import SlowWorkers

    problem = _problems()["least-squares"]
    cluster = SimulatedCluster(6, SlowWorkers(fraction=0.34, slowdown=20.0), seed=1)
    history = train(problem, LWPD(block_size=4, redundancy=1.0), cluster, policy="async", k=2, max_staleness=1,
                    max_steps=40, lr=0.3 / problem.lipschitz(), progress=False, seed=0)
    assert len(history) == 40
    assert sum(history.dropped) > 0  # the slow workers' results arrive too late
    assert all(0.0 <= s <= 1.0 for s in history.staleness)
    assert all(r >= 2 for r in history.received)
    assert history.time == sorted(history.time)
    assert history.loss[-1] < history.loss[0]
    again = train(problem, LWPD(block_size=4, redundancy=1.0), SimulatedCluster(6, SlowWorkers(fraction=0.34, slowdown=20.0), seed=1),
                  policy="async", k=2, max_staleness=1, max_steps=40, lr=0.3 / problem.lipschitz(), progress=False, seed=0)
    assert _simulated(again) == _simulated(history)



@pytest.mark.parametrize("chunks", [1, 3])
def test_lwpd_deals_every_codeword_once_spreading_each_block_over_the_workers(chunks):
    problem = _problems()["softmax"]
    scheme = LWPD(layout="full", block_size=4, redundancy=None, chunks=chunks)
    scheme.bind(problem, 5, np.random.default_rng(0))
    block_of = scheme.codebook_.block_of
    assignments = []
    for _ in range(4):
        scheme.begin()
        tasks = scheme.tasks(np.zeros(problem.n_params))
        assert len(tasks) == 5 * chunks and len({t.key for t in tasks}) == 5 * chunks
        dealt = np.concatenate([t.args[3] for t in tasks])
        np.testing.assert_array_equal(np.sort(dealt), np.arange(len(scheme.codebook_)))
        owner = np.empty(len(dealt), dtype=int)
        for t in tasks:
            owner[t.args[3]] = t.worker
        for block in np.unique(block_of):
            counts = np.bincount(owner[block_of == block], minlength=5)
            assert counts.max() - counts.min() <= 1  # round-robin: balanced within every block
        assert sum(t.floats for t in tasks) == len(scheme.codebook_)  # one float per codeword
        assignments.append(owner)
    assert any((a != assignments[0]).any() for a in assignments[1:])  # dealt afresh each step


def test_lwpd_without_reassignment_keeps_its_assignment():
    problem = _problems()["softmax"]
    scheme = LWPD(layout="full", block_size=4, redundancy=None, chunks=2, reassign=False)
    scheme.bind(problem, 5, np.random.default_rng(0))
    first = [t.args[3] for t in scheme.tasks(np.zeros(problem.n_params))]
    scheme.begin()
    for a, b in zip(first, [t.args[3] for t in scheme.tasks(np.zeros(problem.n_params))]):
        np.testing.assert_array_equal(a, b)


def test_reassignment_survives_a_dead_worker_that_a_fixed_assignment_cannot():
    # Without redundancy every codeword is needed; a worker that never answers erases the
    # same directions every step unless the codewords are dealt afresh.
    problem = _problems()["least-squares"]
    dead = FixedDelays([1.0, 1.0, 1.0, 1.0, np.inf])
    runs = {}
    for reassign in (True, False):
        runs[reassign] = train(problem, LWPD(layout="full", block_size=3, redundancy=1.0, reassign=reassign),
                               SimulatedCluster(5, dead, seed=0), policy="deadline", deadline=10.0,
                               max_steps=300, progress=False, seed=0)
    g_opt_loss = min(runs[True].loss)
    assert runs[True].grad_error[-1] < 0.95
    assert runs[False].grad_error[-1] > 0.999  # only the erased directions are left
    assert runs[False].loss[-1] > g_opt_loss + 1e-6


def test_a_slow_worker_contributes_the_chunks_it_finished_by_the_deadline():
    problem = _problems()["softmax"]
    make = lambda: LWPD(block_size=4, chunks=4, reassign=False)  # noqa: E731
    scheme = make()
    # worker 0 is 4x slower: by the deadline it has finished 1 of its 4 chunks
    cluster = SimulatedCluster(5, FixedDelays([4.0, 1.0, 1.0, 1.0, 1.0]), seed=0)
    scheme.bind(problem, 5, np.random.default_rng(0))
    tasks = scheme.tasks(np.zeros(problem.n_params))
    first, second = (t.work for t in tasks if t.worker == 0 and t.key[1] < 2)
    slowest_fast_worker = max(sum(t.work for t in tasks if t.worker == w) for w in range(1, 5))
    deadline = 4.0 * (first + 0.5 * second)
    assert slowest_fast_worker < deadline  # the other workers finish all their chunks
    history = train(problem, make(), cluster, policy="deadline", deadline=deadline, max_steps=3, progress=False, seed=0)
    assert set(history.received) == {4 * 4 + 1}


def test_lwpd_chunk_errors():
    problem = _problems()["least-squares"]
    with pytest.raises(ValueError, match="chunks"):
        LWPD(block_size=2, chunks=0)
    capped = LWPD(block_size=2, chunks=50)
    capped.bind(problem, 6, np.random.default_rng(0))  # more chunks than codewords: one result per codeword
    assert all(len(chunks) == len(part) for chunks, part in zip(capped._chunks, capped._worker_codewords))
    with pytest.raises(ValueError, match=r"fewer than n_workers \(40\)"):
        LWPD(layout="full", block_size=2).bind(problem, 40, np.random.default_rng(0))
    with pytest.raises(TypeError, match="reassign must be True or False"):
        LWPD(reassign="yes")
    with pytest.raises(ValueError, match="layout must be one of"):
        LWPD(layout="rows")
    with pytest.raises(ValueError, match=r"share must lie in \(0, 1\]"):
        LWPD(share=1.5)
    with pytest.raises(ValueError, match="share applies to layout='sharded' only"):
        LWPD(layout="full", share=0.5)
    with pytest.raises(ValueError, match="decoder='peeling' needs layout='full' or 'moments'"):
        LWPD(decoder="peeling")
    with pytest.raises(TypeError, match="layout='moments' applies to LeastSquares problems only"):
        LWPD(layout="moments").bind(_problems()["logistic"], 3, np.random.default_rng(0))


def test_tracking_the_gradient_error_does_not_change_the_run():
    problem = _problems()["logistic"]

    def run(track_error):
        cluster = SimulatedCluster(6, ShiftedExponential(1.0, 0.5), seed=2)
        return train(problem, LWPD(block_size=4, redundancy=1.5), cluster, deadline=2.5, max_steps=12,
                     progress=False, seed=2, track_error=track_error)

    tracked, untracked = run(True), run(False)
    assert tracked.loss == untracked.loss and tracked.time == untracked.time
    decoded = np.asarray(tracked.received) > 0  # a step where nothing arrived has no error to record
    assert decoded.any() and np.isfinite(np.asarray(tracked.grad_error)[decoded]).all()
    assert np.isnan(untracked.grad_error).all()


def test_a_deadline_step_ends_when_every_task_has_arrived():
    problem = _problems()["least-squares"]
    # every worker takes 1 s per unit; uncoded tasks are 1 unit: all arrive at t = 1 of each step
    history = train(problem, Uncoded(), SimulatedCluster(3, FixedDelays([1.0, 1.0, 1.0]), seed=0),
                    policy="deadline", deadline=10.0, max_steps=3, progress=False, seed=0)
    assert history.time == pytest.approx([1.0, 2.0, 3.0])
    # a worker that never answers: the step waits out the deadline
    history = train(problem, IgnoreStragglers(), SimulatedCluster(3, FixedDelays([1.0, 1.0, np.inf]), seed=0),
                    policy="deadline", deadline=10.0, max_steps=2, progress=False, seed=0)
    assert history.time == pytest.approx([10.0, 20.0]) and history.received == [2, 2]


def test_a_codeword_dealt_to_a_doubly_loaded_worker_still_arrives():
    """Nine parameters (blocks of 8 and 1) on 8 workers, full layout: the intercept's single
    codeword always shares a worker with a codeword of the first block. Sent as its own
    result it arrives in time, so first-k reaches the optimum (it used to stall, the intercept
    never updated, at a loss of 0.49)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((240, 8))
    problem = LeastSquares(X, X @ np.arange(1.0, 9.0) + 1.0)
    history = train(problem, LWPD(layout="full"), SimulatedCluster(8, seed=0), policy="first_k", max_steps=400,
                    target_loss=1e-10, progress=False, seed=0)
    assert history.loss[-1] <= 1e-10 and abs(history.theta[-1] - 1.0) < 1e-4


def test_history_saves_strict_json_and_reads_null_back_as_nan(tmp_path):
    import json

    from lwpd import History

    h = History(scheme="demo")
    h.record(time=1.0, loss=0.5, grad_error=float("nan"), received=0, dropped=0, staleness=float("inf"),
             compute=1.0, floats=0.0, decode_time=0.0)
    h.save(tmp_path / "h.json")
    raw = (tmp_path / "h.json").read_text()
    assert "NaN" not in raw and "Infinity" not in raw and json.loads(raw)["grad_error"] == [None]
    back = History.load(tmp_path / "h.json")
    assert np.isnan(back.grad_error[0]) and np.isnan(back.staleness[0]) and back.loss == [0.5]


# ---------------------------------------------------------------------------- acceleration
def _steps_to(history, f_star, start, rtol):
    reached = np.flatnonzero(np.asarray(history.loss) - f_star <= rtol * (start - f_star))
    return int(reached[0]) + 1 if reached.size else None


def test_nesterov_reaches_the_least_squares_solution_in_fewer_steps():
    """Exact gradients (uncoded, every shard): the accelerated run reaches the oracle's
    optimum (np.linalg.lstsq) to 1e-10 of the initial gap in well under half the steps of
    plain gradient descent, and every task was computed at the extrapolated point (the
    recorded gradient error, taken there, is rounding)."""
    problem, X, y = ill_conditioned_least_squares()
    f_star = problem.loss(np.linalg.lstsq(X, y, rcond=None)[0])
    start = problem.loss(np.zeros(30))
    runs = {}
    for acceleration in (None, "nesterov"):
        runs[acceleration] = train(problem, Uncoded(), SimulatedCluster(6, seed=0), policy="first_k", max_steps=4000,
                                   target_loss=f_star + 1e-10 * (start - f_star), progress=False, seed=0,
                                   acceleration=acceleration)
    plain, fast = _steps_to(runs[None], f_star, start, 1e-10), _steps_to(runs["nesterov"], f_star, start, 1e-10)
    assert fast is not None and plain is not None and fast < 0.5 * plain, (fast, plain)
    assert np.nanmax(runs["nesterov"].grad_error) < 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.slow
def test_nesterov_with_partial_gradients_stays_stable(seed):
    """Partially decoded (biased) LWPD estimates under stragglers: the restarts keep the
    accelerated run stable -- finite, below its start, and no worse than plain steps by more
    than a few percent of the start's gap."""
    problem, _, _ = ill_conditioned_least_squares(seed)
    start = problem.loss(np.zeros(30))
    finals = {}
    for acceleration in (None, "nesterov"):
        h = train(problem, LWPD(), SimulatedCluster(8, ShiftedExponential(1.0, 0.5), seed=seed), policy="first_k",
                  max_steps=200, progress=False, seed=seed, acceleration=acceleration, track_error=False)
        assert np.all(np.isfinite(h.loss))
        finals[acceleration] = h.loss[-1]
    assert finals["nesterov"] < start
    assert finals["nesterov"] <= finals[None] + 0.02 * start


@pytest.mark.parametrize("acceleration", ["nesterov", "lbfgs"])
def test_acceleration_is_refused_under_async_and_with_memory(acceleration):
    """Stale gradients mix with neither momentum nor curvature pairs: both are refused, by
    name, under the asynchronous policy and with a scheme that keeps values across steps."""
    problem, _, _ = ill_conditioned_least_squares()
    refused = f"acceleration='{acceleration}' needs a synchronous policy"
    with pytest.raises(ValueError, match=refused):
        train(problem, Uncoded(), SimulatedCluster(4, seed=0), policy="async", max_steps=3, progress=False,
              acceleration=acceleration)
    for scheme in (LWPD(memory=True), IgnoreStragglers(memory=True)):
        with pytest.raises(ValueError, match=refused):
            train(problem, scheme, SimulatedCluster(4, seed=0), policy="first_k", max_steps=3, progress=False,
                  acceleration=acceleration)


def test_an_unknown_acceleration_is_refused_and_auto_falls_back():
    problem, _, _ = ill_conditioned_least_squares()
    with pytest.raises(ValueError, match="acceleration"):
        train(problem, Uncoded(), SimulatedCluster(4, seed=0), policy="first_k", max_steps=3, progress=False,
              acceleration="heavy-ball")
    # "auto" where momentum cannot apply: exactly the plain run
    runs = [train(problem, Uncoded(), SimulatedCluster(4, seed=0), policy="async", max_steps=20, progress=False, seed=0,
                  acceleration=a) for a in (None, "auto")]
    np.testing.assert_array_equal(runs[0].loss, runs[1].loss)


def test_readiness_checks_count_as_decode_time():
    """An exact scheme's readiness check is its decode (kept for the step), so the master's
    decode time includes it: a ready() that takes 20 ms shows in every step's decode_time."""
    import time as _time

    problem, _, _ = ill_conditioned_least_squares()
    scheme = GradientCoding(1, kind="frc")
    real_ready = scheme.ready

    def slow_ready(received):
        _time.sleep(0.02)
        return real_ready(received)

    scheme.ready = slow_ready
    h = train(problem, scheme, SimulatedCluster(6, seed=0), policy="first_k", max_steps=3, progress=False, seed=0)
    assert min(h.decode_time) >= 0.02


def test_progress_bar_into_a_log_redraws_rarely_and_says_when_it_stopped_early(capsys):
    """Into a file or a pipe (not a terminal) the bar redraws at most every
    PROGRESS_LOG_INTERVAL seconds, not once per step; a run that stops at its target says so."""
    pytest.importorskip("tqdm")
    problem, X, y = ill_conditioned_least_squares()
    f_star = problem.loss(np.linalg.lstsq(X, y, rcond=None)[0])
    h = train(problem, Uncoded(), SimulatedCluster(6, seed=0), policy="first_k", max_steps=3000,
              target_loss=f_star + 1e-3 * (problem.loss(np.zeros(30)) - f_star), progress=True, seed=0)
    err = capsys.readouterr().err
    assert 50 < len(h) < 3000
    assert err.count("\r") < 20, err.count("\r")  # was one redraw per step
    assert f"stopped after {len(h)} of 3000 steps" in err


class _OneChunkAtATime(SimulatedCluster):
    """A simulated cluster without ``submit_many``: the training loop submits every chunk of
    a worker on its own, each computed by its own call."""

    submit_many = None


@pytest.mark.parametrize("make", [
    lambda: LWPD(block_size=4, chunks=3),
    lambda: LWPD(layout="full", block_size=4, redundancy=2.0, chunks=3),
    lambda: LWPD(layout="moments", block_size=4, redundancy=2.0, chunks=2),
    lambda: LWPD(block_size=4, chunks=3, memory=True),
    lambda: __import__("lwpd.schemes", fromlist=["ReplicatedLWPD"]).ReplicatedLWPD(block_size=4, chunks=2),
], ids=["sharded", "full", "moments", "memory", "replicated"])
@pytest.mark.parametrize("policy", ["first_k", "deadline"])
def test_a_workers_chunks_computed_together_give_the_run_of_chunks_computed_alone(make, policy):
    """The simulator computes a worker's chunks in one call (Task.joint); the run -- losses,
    modelled times, compute, floats and counts -- is that of every chunk computed alone."""
    problem = _problems()["least-squares"]
    runs = [train(problem, make(), cluster(6, ShiftedExponential(1.0, 0.5), seed=2), policy=policy, max_steps=6,
                  deadline=10.0 if policy == "deadline" else None, seed=0, progress=False)
            for cluster in (SimulatedCluster, _OneChunkAtATime)]
    together, alone = runs
    np.testing.assert_allclose(together.loss, alone.loss, rtol=1e-12)
    np.testing.assert_allclose(together.theta, alone.theta, rtol=1e-11, atol=1e-14)
    for field in ("time", "compute", "floats", "received", "dispatched", "dropped"):
        assert getattr(together, field) == getattr(alone, field), field
    assert len(together.loss) == 6 and together.loss[-1] < together.loss[0]  # it trained
