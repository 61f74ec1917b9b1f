"""Tests for lwpd.cluster: the simulated cluster (virtual clock) and the executor cluster."""

from __future__ import annotations

import operator
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from lwpd.cluster import Completion, ExecutorCluster, SimulatedCluster


class FixedDelays:
    """Fixed per-worker delays; with a list of rows, one row per round (cycling)."""

    def __init__(self, rows):
        rows = np.asarray(rows, dtype=np.float64)
        self.rows = rows if rows.ndim == 2 else rows[None, :]
        self.calls = 0
        self.resets = 0

    def sample(self, n_workers, rng):
        row = self.rows[self.calls % len(self.rows)]
        self.calls += 1
        assert row.shape == (n_workers,)
        return row.copy()

    def reset(self):
        self.calls = 0
        self.resets += 1


class ExpDelays:
    """Shifted exponential delays drawn from the cluster's generator."""

    def sample(self, n_workers, rng):
        return 1.0 + rng.exponential(1.0, size=n_workers)

    def reset(self):
        pass


def brute_force(n_workers, delays, submissions):
    """Finish times for submissions ``(time, worker, work)`` (all submitted in one round,
    in order, at non-decreasing times), by the rule: a worker runs its tasks one after
    another, each starting at max(submit time, previous finish)."""
    busy = [0.0] * n_workers
    finish = []
    for t, w, work in submissions:
        start = max(t, busy[w])
        end = start + (np.inf if np.isinf(delays[w]) else delays[w] * work)
        busy[w] = end
        finish.append(end)
    return finish


def expected_order(finish):
    return sorted((f, i) for i, f in enumerate(finish) if np.isfinite(f))


def in_time_order(completions):
    """``(finished, task_id)`` of completions, checked to come in order of finish time, with
    tasks that finish at the same time (broken by a random key) put in id order."""
    times = [c.finished for c in completions]
    assert times == sorted(times)
    return sorted((c.finished, c.task_id) for c in completions)


# -- SimulatedCluster ---------------------------------------------------------------------

def test_completion_order_matches_brute_force():
    rng = np.random.default_rng(1)
    n = 5
    for trial in range(20):
        delays = rng.uniform(0.1, 3.0, size=n)
        cluster = SimulatedCluster(n, delays=FixedDelays(delays), seed=trial)
        works = rng.uniform(0.0, 2.0, size=30)
        workers = rng.integers(0, n, size=30)
        subs = []
        for i, (w, work) in enumerate(zip(workers, works)):
            tid = cluster.submit(int(w), operator.mul, i, 10, work=float(work))
            assert tid == i
            subs.append((0.0, int(w), float(work)))
        finish = brute_force(n, delays, subs)
        got = list(cluster.as_completed())
        assert [c.task_id for c in got] == [i for _, i in expected_order(finish)]
        assert [c.finished for c in got] == [f for f, _ in expected_order(finish)]
        assert all(c.result == 10 * c.task_id for c in got)
        assert cluster.now == max(finish)
        assert cluster.pending == 0


def test_sequential_per_worker_and_submissions_later_in_time():
    delays = np.array([1.0, 2.0, 0.5])
    cluster = SimulatedCluster(3, delays=FixedDelays(delays), seed=0)
    subs = []
    for w, work in [(0, 1.0), (0, 2.0), (1, 1.0), (2, 4.0), (0, 0.5)]:
        cluster.submit(w, str, w, work=work)
        subs.append((0.0, w, work))
    first = cluster.wait(deadline=2.5)  # worker 0: [0,1], [1,3], [3,3.5]; 1: [0,2]; 2: [0,2]
    assert in_time_order(first) == [(1.0, 0), (2.0, 2), (2.0, 3)]  # tasks 2 and 3 tie: either may come first
    assert cluster.now == 2.5 and cluster.pending == 2
    for w, work in [(1, 1.0), (0, 1.0), (2, 0.0)]:  # worker 0 still busy until 3.5
        cluster.submit(w, str, w, work=work)
        subs.append((2.5, w, work))
    finish = brute_force(3, delays, subs)
    rest = cluster.wait()
    assert in_time_order(rest) == [(f, i) for f, i in expected_order(finish) if i not in (0, 2, 3)]
    assert finish[6] == 4.5 and finish[7] == 2.5
    assert all(c.submitted == 2.5 for c in rest if c.task_id >= 5)


def test_k_and_deadline_leave_the_rest_pending():
    cluster = SimulatedCluster(4, delays=FixedDelays([1.0, 2.0, 3.0, 4.0]), seed=0)
    for w in range(4):
        cluster.submit(w, int, w)
    got = cluster.wait(k=2)
    assert [c.worker for c in got] == [0, 1]
    assert cluster.now == 2.0 and cluster.pending == 2
    assert cluster.wait(deadline=2.5) == []
    assert cluster.now == 2.5 and cluster.pending == 2
    got = cluster.wait(deadline=3.0)  # finishing exactly at the deadline counts
    assert [c.worker for c in got] == [2] and cluster.now == 3.0
    assert cluster.wait(deadline=1.0) == [] and cluster.now == 3.0  # a past deadline waits not
    got = cluster.wait(deadline=100.0, k=5)
    assert [c.worker for c in got] == [3] and cluster.now == 100.0
    assert cluster.pending == 0


def test_k_with_ties_and_lazy_iteration():
    cluster = SimulatedCluster(3, seed=0)  # no delay model: 1 s per unit of work
    ids = [cluster.submit(w, int, w) for w in range(3)]
    it = cluster.as_completed()
    c = next(it)
    assert isinstance(c, Completion) and c.task_id in ids and cluster.now == 1.0 and c.latency == 1.0
    assert cluster.pending == 2
    it.close()
    got = cluster.wait(k=1)
    assert len(got) == 1 and got[0].task_id in set(ids) - {c.task_id} and cluster.pending == 1
    rest = cluster.wait()
    assert sorted([c.task_id, got[0].task_id, rest[0].task_id]) == ids  # each tied task exactly once


def test_ties_are_broken_by_a_seeded_random_key_not_by_id():
    """With equal delays and work, first-k among healthy workers is uniform: over 2,000
    rounds each of 8 workers is among the first 4 about 1,000 times (binomial, p = 1/2,
    sd 22.4; the tolerance is 5 sd), worker 0 first about 250 times, and the same seed
    gives the same order."""
    n, k, rounds = 8, 4, 2000
    cluster = SimulatedCluster(n, delays=FixedDelays(np.ones(n)), seed=3)
    chosen, first = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    orders = []
    for _ in range(rounds):
        cluster.new_round()
        for w in range(n):
            cluster.submit(w, int, w)
        got = cluster.wait(k=k)
        assert all(c.finished == got[0].finished for c in got)
        orders.append([c.worker for c in got])
        chosen[[c.worker for c in got]] += 1
        first[got[0].worker] += 1
        cluster.cancel()
    sd = np.sqrt(rounds * 0.5 * 0.5)
    assert np.all(np.abs(chosen - rounds * k / n) < 5 * sd), chosen
    sd_first = np.sqrt(rounds * (1 / n) * (1 - 1 / n))
    assert np.all(np.abs(first - rounds / n) < 5 * sd_first), first
    again = SimulatedCluster(n, delays=FixedDelays(np.ones(n)), seed=3)
    for w in range(n):
        again.submit(w, int, w)
    assert [c.worker for c in again.wait(k=k)] == orders[0]  # deterministic for the seed


def test_tie_keys_do_not_change_the_delay_draws():
    """The tie keys come from a stream of their own: the delays a seed draws are the same
    whatever number of tasks was submitted before."""
    draws = []
    for tasks in (1, 50):
        cluster = SimulatedCluster(4, delays=ExpDelays(), seed=11)
        for _ in range(tasks):
            cluster.submit(0, int, 0)
        cluster.cancel()
        cluster.new_round()
        cluster.submit(1, int, 1)
        draws.append(cluster.wait()[0].latency)
    assert draws[0] == draws[1]


def test_infinite_workers_never_complete_and_cancel_frees_them():
    cluster = SimulatedCluster(3, delays=FixedDelays([1.0, np.inf, 2.0]), seed=0)
    a = cluster.submit(0, int, 0)
    b = cluster.submit(1, int, 1)
    b2 = cluster.submit(1, int, 1, work=0.0)
    c = cluster.submit(2, int, 2)
    assert [x.task_id for x in cluster.wait()] == [a, c]  # ends although b, b2 are stuck
    assert cluster.now == 2.0 and cluster.pending == 2
    assert cluster.wait(deadline=50.0) == [] and cluster.now == 50.0
    assert cluster.cancel([b]) == 1
    assert cluster.pending == 1  # b2 is still behind an infinite delay of its own
    assert cluster.cancel() == 1 and cluster.pending == 0
    cluster.new_round()  # same fixed row: worker 1 still never returns
    d = cluster.submit(1, int, 1)
    assert cluster.wait(deadline=60.0) == [] and cluster.pending == 1
    assert cluster.cancel(d) == 1


def test_cancel_running_task_reschedules_the_queue():
    cluster = SimulatedCluster(2, delays=FixedDelays([1.0, 1.0]), seed=0)
    a = cluster.submit(0, int, 1, work=5.0)  # [0, 5]
    b = cluster.submit(0, int, 2, work=1.0)  # [5, 6]
    c = cluster.submit(1, int, 3, work=3.0)  # [0, 3]
    assert cluster.wait(deadline=2.0) == []
    assert cluster.cancel([a, a]) == 1  # worker 0 idle at t=2: b now runs [2, 3]
    assert cluster.cancel([a]) == 0  # already cancelled: ignored
    got = cluster.wait()
    assert [(x.task_id, x.finished) for x in got] == [(b, 3.0), (c, 3.0)]
    d = cluster.submit(0, int, 4)  # worker 0 idle since 3
    assert cluster.wait()[0].finished == 4.0 and d == 3
    with pytest.raises(ValueError, match="task_ids: no task 9"):
        cluster.cancel([9])


def test_cancel_queued_task_keeps_running_one():
    cluster = SimulatedCluster(1, delays=FixedDelays([1.0]), seed=0)
    a = cluster.submit(0, int, 1, work=2.0)  # [0, 2]
    b = cluster.submit(0, int, 2, work=2.0)  # [2, 4]
    c = cluster.submit(0, int, 3, work=1.0)  # [4, 5]
    cluster.wait(deadline=1.0)
    cluster.cancel(b)
    got = cluster.wait()
    assert [(x.task_id, x.finished) for x in got] == [(a, 2.0), (c, 3.0)]


def test_rounds_resample_and_fix_durations_at_submission():
    model = FixedDelays([[1.0, 1.0], [3.0, 0.5]])
    cluster = SimulatedCluster(2, delays=model, seed=0)
    assert cluster.round == 0 and cluster.round_delays is None
    a = cluster.submit(0, int, 0)  # starts round 1 automatically
    assert cluster.round == 1 and model.calls == 1
    np.testing.assert_array_equal(cluster.new_round(), [3.0, 0.5])
    b = cluster.submit(0, int, 0)
    c = cluster.submit(1, int, 1)
    got = cluster.wait()
    assert [(x.task_id, x.finished) for x in got] == [(c, 0.5), (a, 1.0), (b, 4.0)]


def _three_rounds(cluster):
    """(task id, finish time) of the first 4 of 6 tasks in each of three rounds."""
    out = []
    for _ in range(3):
        cluster.new_round()
        for w in range(6):
            cluster.submit(w, int, w, work=1.0 + w % 2)
        out += [(c.task_id, c.finished) for c in cluster.as_completed(k=4)]
        cluster.cancel()
    return out


def _trace(seed):
    cluster = SimulatedCluster(6, delays=ExpDelays(), seed=seed)
    return _three_rounds(cluster), cluster


def test_deterministic_for_a_seed_and_reset():
    first, cluster = _trace(7)
    again, _ = _trace(7)
    other, _ = _trace(8)
    assert first == again
    assert first != other
    cluster.reset()
    assert cluster.now == 0.0 and cluster.pending == 0 and cluster.round == 0
    assert _three_rounds(cluster) == first


def test_reset_resets_delay_model_and_generator_seed():
    model = FixedDelays([[1.0], [2.0]])
    cluster = SimulatedCluster(1, delays=model, seed=np.random.default_rng(3))
    cluster.submit(0, int, 0)
    cluster.new_round()
    cluster.wait()
    cluster.reset()
    assert model.resets == 1 and model.calls == 0 and cluster.now == 0.0
    assert cluster.submit(0, int, 0) == 0
    assert cluster.wait()[0].finished == 1.0
    # seed=None: fresh entropy, but reset repeats the stream
    c = SimulatedCluster(3, delays=ExpDelays())
    d1 = c.new_round()
    c.reset()
    np.testing.assert_array_equal(c.new_round(), d1)


def test_task_exception_is_raised_at_completion():
    cluster = SimulatedCluster(2, delays=FixedDelays([1.0, 2.0]), seed=0)
    cluster.submit(0, operator.truediv, 1, 0)
    cluster.submit(1, int, 5)
    with pytest.raises(ZeroDivisionError):
        cluster.wait()
    assert cluster.pending == 1 and cluster.wait()[0].result == 5


def _times_ten(arg_lists):
    return [x * 10 for (x,) in arg_lists]


def test_submit_many_matches_the_tasks_submitted_one_by_one():
    """One call computes a worker's tasks; ids, finish times, the seeded tie order, results
    and the priced communication are those of the same tasks submitted one at a time."""
    from lwpd.cost import CostModel

    rng = np.random.default_rng(3)
    n = 4
    for trial in range(10):
        delays = rng.choice([0.5, 1.0, 2.0], size=n)  # equal delays: ties that the seeded key breaks
        together, alone = (SimulatedCluster(n, delays=FixedDelays(delays), seed=trial,
                                            cost=CostModel(latency=0.25, bandwidth=8.0)) for _ in range(2))
        for _ in range(6):
            worker, size = int(rng.integers(n)), int(rng.integers(1, 4))
            xs, works, floats = rng.integers(0, 100, size), rng.choice([0.5, 1.0], size), rng.choice([0.0, 4.0], size)
            ids = together.submit_many(worker, _times_ten, [(int(x),) for x in xs], works.tolist(), floats.tolist())
            assert ids == [alone.submit(worker, operator.mul, int(x), 10, work=float(w), floats=float(f))
                           for x, w, f in zip(xs, works, floats)]
        record = [[(c.task_id, c.worker, c.result, c.finished) for c in cluster.as_completed()]
                  for cluster in (together, alone)]
        assert record[0] == record[1] and len(record[0]) > 0


def test_submit_many_delivers_an_error_from_every_task_and_refuses_bad_input_whole():
    cluster = SimulatedCluster(2, delays=FixedDelays([1.0, 2.0]), seed=0)

    def broken(arg_lists):
        raise ZeroDivisionError("no")

    cluster.submit_many(1, broken, [(1,), (2,)], [1.0, 1.0], [0.0, 0.0])
    cluster.submit_many(0, lambda arg_lists: [1], [(1,), (2,)], [1.0, 1.0], [0.0, 0.0])  # one result short
    done = cluster.wait(errors="return")
    assert [type(c.error) for c in sorted(done, key=lambda c: c.task_id)] == [ZeroDivisionError] * 2 + [RuntimeError] * 2
    for kwargs, match in [({"works": [1.0], "floats": [0.0, 0.0]}, "one entry per task"),
                          ({"works": [1.0, -1.0], "floats": [0.0, 0.0]}, "work"),
                          ({"works": [1.0, 1.0], "floats": [0.0, np.nan]}, "floats")]:
        with pytest.raises(ValueError, match=match):
            cluster.submit_many(0, _times_ten, [(1,), (2,)], **kwargs)
    with pytest.raises(IndexError, match="worker"):
        cluster.submit_many(2, _times_ten, [(1,)], [1.0], [0.0])
    with pytest.raises(TypeError, match="fn"):
        cluster.submit_many(0, 3, [(1,)], [1.0], [0.0])
    assert cluster.pending == 0  # nothing refused was scheduled
    assert cluster.submit(0, int, 7) == 4  # and no task id was spent on it


def test_validation_messages():
    with pytest.raises(ValueError, match="n_workers"):
        SimulatedCluster(0)
    with pytest.raises(TypeError, match="n_workers"):
        SimulatedCluster(2.0)
    with pytest.raises(TypeError, match="delays"):
        SimulatedCluster(2, delays=object())
    with pytest.raises(TypeError, match="seed"):
        SimulatedCluster(2, seed="x")
    cluster = SimulatedCluster(2, seed=0)
    with pytest.raises(IndexError, match="worker"):
        cluster.submit(2, int)
    with pytest.raises(TypeError, match="worker"):
        cluster.submit(True, int)
    with pytest.raises(TypeError, match="fn"):
        cluster.submit(0, 3)
    for bad in (-1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="work"):
            cluster.submit(0, int, work=bad)
    with pytest.raises(ValueError, match="deadline"):
        cluster.as_completed(deadline=np.inf)
    with pytest.raises(ValueError, match="k"):
        cluster.as_completed(k=0)
    with pytest.raises(TypeError, match="task_ids"):
        cluster.cancel(["a"])
    bad_shape = SimulatedCluster(3, delays=FixedDelays([[1.0, 2.0]]))
    with pytest.raises(AssertionError):
        bad_shape.new_round()

    class Negative:
        def sample(self, n, rng):
            return -np.ones(n)

        def reset(self):
            pass

    with pytest.raises(ValueError, match="non-negative"):
        SimulatedCluster(2, delays=Negative()).new_round()

    class WrongShape(Negative):
        def sample(self, n, rng):
            return np.ones(n + 1)

    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        SimulatedCluster(2, delays=WrongShape()).submit(0, int)
    with pytest.raises(TypeError, match="executor"):
        ExecutorCluster(object(), 2)
    with pytest.raises(ValueError, match="time_scale"):
        ExecutorCluster(ThreadPoolExecutor(1), 2, time_scale=-1.0)


# -- ExecutorCluster ----------------------------------------------------------------------

def test_executor_cluster_threads_slow_worker_last():
    delays = FixedDelays([1.0, 1.0, 1.0, 10.0])
    with ThreadPoolExecutor(4) as pool:
        cluster = ExecutorCluster(pool, 4, delays=delays, time_scale=0.01, seed=0)
        ids = [cluster.submit(w, operator.mul, w, 3) for w in range(4)]
        assert ids == [0, 1, 2, 3] and cluster.pending == 4
        got = cluster.wait()
        assert sorted(c.result for c in got) == [0, 3, 6, 9]
        assert got[-1].worker == 3 and got[-1].finished >= 0.1
        assert [c.finished for c in got] == sorted(c.finished for c in got)
        assert cluster.pending == 0


def test_executor_cluster_k_deadline_cancel_and_inf():
    delays = FixedDelays([0.0, 0.0, 30.0, np.inf])
    with ThreadPoolExecutor(4) as pool:
        cluster = ExecutorCluster(pool, 4, delays=delays, time_scale=0.01, seed=0)
        start = cluster.now
        for w in range(4):
            cluster.submit(w, int, w)
        got = cluster.wait(k=2)
        assert sorted(c.worker for c in got) == [0, 1] and cluster.pending == 2
        got = cluster.wait(deadline=start + 0.05)  # worker 2 needs 0.3 s, worker 3 forever
        assert got == [] and cluster.pending == 2 and cluster.now >= start + 0.05
        assert cluster.wait(deadline=cluster.now + 1.0, k=1)[0].worker == 2
        assert cluster.wait() == [] and cluster.pending == 1  # only the infinite worker left
        slow = cluster.submit(2, int, 2)  # 0.3 s sleep
        assert cluster.cancel(slow) == 1 and cluster.cancel() == 1 and cluster.pending == 0
        assert cluster.wait() == []
        cluster.submit(0, operator.truediv, 1, 0)
        with pytest.raises(ZeroDivisionError):
            cluster.wait()
        cluster.reset()
        assert cluster.pending == 0 and cluster.round == 0 and delays.resets == 1
        assert cluster.now < 0.05


def test_executor_cluster_processes():
    delays = FixedDelays([0.0, 20.0])
    with ProcessPoolExecutor(2) as pool:
        cluster = ExecutorCluster(pool, 2, delays=delays, time_scale=0.01, seed=0)
        cluster.submit(1, operator.add, 1, 2)
        cluster.submit(0, operator.add, 10, 20)
        got = cluster.wait()
    assert [(c.worker, c.result) for c in got] == [(0, 30), (1, 3)]


def test_executor_without_delays_runs_immediately():
    with ThreadPoolExecutor(2) as pool:
        cluster = ExecutorCluster(pool, 2)
        t = time.perf_counter()
        cluster.submit(0, sum, [1, 2, 3])
        np.testing.assert_array_equal(cluster.round_delays, [0.0, 0.0])
        assert cluster.wait()[0].result == 6
        assert time.perf_counter() - t < 1.0


def test_every_cluster_is_a_cluster_and_so_is_any_object_with_its_methods():
    """lwpd.cluster.Cluster is the one written interface: the package's clusters derive from
    it, an object with its REQUIRED methods counts as one, and what lacks them is named."""
    from concurrent.futures import ThreadPoolExecutor

    from lwpd.cluster import Cluster, ExecutorCluster, SimulatedCluster

    class Recorded:  # a user's own cluster, not derived from Cluster
        n_workers, now = 2, 0.0

        def submit(self, worker, fn, *args, work=1.0, floats=0.0, **kwargs):
            return 0

        def as_completed(self, deadline=None, k=None, errors="raise"):
            return iter(())

        def cancel(self, task_ids=None):
            return 0

        def new_round(self):
            return None

    with ThreadPoolExecutor(1) as pool:
        assert isinstance(ExecutorCluster(pool, 2), Cluster)
    assert isinstance(SimulatedCluster(2), Cluster) and isinstance(Recorded(), Cluster)
    assert not isinstance(object(), Cluster) and Cluster.missing(Recorded()) == []
    assert Cluster.missing(object()) == list(Cluster.REQUIRED)

    class PerInstance(Recorded):  # n_workers and now set by __init__, as clusters often do
        def __init__(self):
            self.n_workers, self.now = 3, 0.0

    class Placeholders:  # the names, but nothing callable
        submit = as_completed = cancel = new_round = n_workers = now = None

    assert isinstance(PerInstance(), Cluster) and Cluster.missing(PerInstance()) == []
    assert not isinstance(Placeholders(), Cluster)
    with pytest.raises(TypeError, match="abstract"):
        Cluster()
