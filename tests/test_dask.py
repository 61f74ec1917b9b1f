"""The Dask cluster: data scattered once, tasks carrying parameters only, the same training as
the simulated cluster, clear errors (the tests start and stop their own LocalCluster)."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from lwpd import train
from lwpd.cluster import DaskCluster, SimulatedCluster, dask_cluster
from lwpd.problems import LeastSquares, Logistic
from lwpd.schemes import LWPD, GradientCoding, Uncoded

pytestmark = pytest.mark.slow


def least_squares(m, n=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n))
    return LeastSquares(X, X @ rng.standard_normal(n), fit_intercept=False)


class SubmitSpy:
    """Records the pickled size of the arguments of every task handed to the client."""

    def __init__(self, client, monkeypatch):
        self.sizes = []
        submit = client.submit

        def spy(fn, *args, **kwargs):
            self.sizes.append(len(pickle.dumps(args)))
            return submit(fn, *args, **kwargs)

        monkeypatch.setattr(client, "submit", spy)


@pytest.mark.parametrize("layout", ["sharded", "full", "moments"])
def test_a_task_carries_parameters_not_data(dask, monkeypatch, layout):
    """Bytes sent per task stay O(n_params) when the data grows 20x: the problem, the shards,
    the codebook and the moments are scattered to the workers once."""
    spy = SubmitSpy(dask.client, monkeypatch)
    per_task = {}
    for m in (400, 8000):
        dask.reset()
        spy.sizes.clear()
        train(least_squares(m), LWPD(layout=layout, block_size=4), dask, deadline=30.0, max_steps=3, progress=False,
              seed=0)
        per_task[m] = max(spy.sizes)
        assert dask.shared >= 2  # at least the problem and the codebook
    n_params = 12
    assert per_task[8000] == per_task[400]  # independent of the number of samples
    assert per_task[8000] < 8 * n_params * 8 + 2048  # a parameter vector, indices and a few keys
    assert per_task[8000] < least_squares(8000).X.nbytes / 100


@pytest.mark.parametrize("scheme", [LWPD(block_size=4), LWPD(layout="moments", block_size=4), Uncoded(),
                                    GradientCoding(s=1)], ids=["lwpd", "lwpd-moments", "uncoded", "gc"])
def test_dask_training_matches_the_simulated_cluster(dask, scheme):
    """With every task arriving (no delays, a generous deadline) each step is the exact
    gradient on both clusters, so the parameters agree to rounding."""
    problem = least_squares(300)
    on_dask = train(problem, scheme, dask, deadline=30.0, max_steps=15, progress=False, seed=3)
    simulated = train(problem, scheme, SimulatedCluster(2, seed=0), deadline=30.0, max_steps=15, progress=False, seed=3)
    assert on_dask.received == simulated.received == on_dask.dispatched
    np.testing.assert_allclose(on_dask.theta, simulated.theta, rtol=1e-9, atol=1e-12)


def test_logistic_on_dask_with_injected_delays(dask):
    from lwpd.stragglers import ShiftedExponential

    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 6))
    problem = Logistic(X, (X @ rng.standard_normal(6) > 0).astype(float), alpha=1e-2)
    cluster = DaskCluster(dask.client, n_workers=4, delays=ShiftedExponential(1.0, 2.0), time_scale=0.01, seed=0)
    h = train(problem, LWPD(block_size=4), cluster, deadline=0.3, max_steps=15, progress=False, seed=0)
    assert h.loss[-1] < 0.9 * problem.loss(np.zeros(problem.n_params))
    assert all(d == r + f + j + x for d, r, f, j, x in zip(h.dispatched, h.received, h.failed, h.rejected, h.dropped))
    assert h.time[-1] >= 15 * 0.01  # every step waited for (scaled) delays of at least one unit


def test_scattered_data_is_released_on_reset(dask):
    train(least_squares(200), Uncoded(), dask, deadline=30.0, max_steps=2, progress=False, seed=0)
    assert dask.shared > 0
    dask.reset()
    assert dask.shared == 0 and dask.pending == 0 and dask.now < 1.0


def test_shared_data_lost_on_the_workers_is_scattered_again(dask):
    """Data the scheduler no longer has (here released behind the cluster's back, as when every
    worker holding it died) is scattered again by the next task that uses it: no task fails."""
    prob = least_squares(200)
    train(prob, Uncoded(), dask, deadline=30.0, max_steps=2, progress=False, seed=0)
    futures = [future for _, future in dask._shared.values()]
    assert futures
    dask.client.cancel(futures)
    deadline = time.monotonic() + 10
    while any(f.status == "finished" for f in futures) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(f.status == "finished" for f in futures)
    h = train(prob, Uncoded(), dask, deadline=30.0, max_steps=3, progress=False, seed=0)
    assert len(h) == 3 and sum(h.failed) == 0 and sum(h.received) == sum(h.dispatched)


def test_unreachable_address_fails_fast_naming_it():
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"tcp://127\.0\.0\.1:1'.* within 1 s"):
        with dask_cluster("tcp://127.0.0.1:1", timeout=1.0):
            pass
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"address": 8786}, TypeError, "address must be a scheduler address"),
    ({"address": "tcp://127.0.0.1:1", "memory_limit": "1GB"}, TypeError, "apply only with address=None"),
    ({"n_workers": 0}, ValueError, "n_workers"),
    ({"timeout": -1}, ValueError, "timeout"),
])
def test_dask_cluster_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        with dask_cluster(**kwargs):
            pass


def test_dask_cluster_needs_a_client():
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        DaskCluster(object())


def test_connecting_to_a_running_scheduler(dask):
    """The address form: the same code on a scheduler someone else started (left running)."""
    address = dask.client.scheduler.address
    with dask_cluster(address, n_workers=3) as cluster:
        assert cluster.n_workers == 3 and cluster.client.scheduler.address == address
        h = train(least_squares(200), LWPD(block_size=4), cluster, deadline=30.0, max_steps=5, progress=False, seed=0)
        assert h.received == h.dispatched
    assert dask.client.run(lambda: 1)  # the scheduler and its workers are still up


def test_tls_scheduler_with_security(tmp_path, capsys):
    """A LocalCluster started on tls://127.0.0.1 with self-signed certificates (made here):
    dask_cluster reaches it with security=, the CLI with the --tls-* files; without credentials
    the connection is refused."""
    import logging
    import warnings

    from distributed import LocalCluster
    from distributed.security import Security

    from lwpd.cli import main

    security = Security.temporary()
    with warnings.catch_warnings():  # the health-check port, as dask_cluster does: not the test's concern
        warnings.filterwarnings("ignore", message="Port 8787 is already in use", category=UserWarning)
        local = LocalCluster(n_workers=1, processes=True, security=security, protocol="tls://", host="127.0.0.1",
                             dashboard_address=None, silence_logs=logging.ERROR)
    with local:
        address = local.scheduler_address
        assert address.startswith("tls://")
        with dask_cluster(address, n_workers=2, security=security) as cluster:
            h = train(least_squares(200), LWPD(block_size=4), cluster, deadline=30.0, max_steps=3, progress=False,
                      seed=0)
            assert h.received == h.dispatched
        with pytest.raises((ConnectionError, TypeError, OSError)):
            with dask_cluster(address, n_workers=2, timeout=3.0):
                pass
        files = {}
        for flag, pem in (("--tls-ca-file", security.tls_ca_file), ("--tls-cert", security.tls_client_cert),
                          ("--tls-key", security.tls_client_key)):
            files[flag] = tmp_path / (flag.strip("-") + ".pem")
            files[flag].write_text(pem)
        argv = ["run", "--dataset", "wine", "--schemes", "uncoded", "--workers", "2", "--max-steps", "2", "--quiet",
                "--backend", "dask", "--dask-address", address, "--out", str(tmp_path / "out"),
                *[str(part) for pair in files.items() for part in pair]]
        assert main(argv) == 0
    assert main(["run", "--tls-cert", "x.pem", "--quiet", "--max-steps", "2", "--out", str(tmp_path)]) == 2
    assert "TLS needs --tls-ca-file, --tls-cert and --tls-key together" in capsys.readouterr().err
    with pytest.raises(TypeError, match="security must be a distributed.security.Security"):
        with dask_cluster(security="tls"):
            pass
