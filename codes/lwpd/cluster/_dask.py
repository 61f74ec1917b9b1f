"""Clusters over Dask: a ``distributed.Client`` on a laptop's LocalCluster or a real scheduler."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import numbers
import types
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from lwpd import _config
from lwpd._validation import check_int, check_real
from lwpd.cluster._executor import ExecutorCluster, run_task

#: Values that always travel with a task (small by nature).
_INLINE = (type(None), bool, numbers.Number, str, bytes, np.generic)


def _identity(value: Any) -> Any:
    """What makes shared data the same data: an array's buffer, layout and type (so a fresh
    view of the same rows is not scattered again), any other object's identity. The cache
    holds the object, so neither can be freed and reused while it is scattered."""
    if isinstance(value, np.ndarray):
        return ("array", value.__array_interface__["data"][0], value.shape, value.strides, value.dtype.str)
    return ("object", id(value))


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # an optional extra
        raise ImportError("the Dask cluster needs dask.distributed: pip install 'lwpd[dask]' "
                          "(or 'dask[distributed]')") from exc
    return distributed


async def _settle(future: Any, twin: cf.Future) -> None:
    """On the client's event loop: pass a Dask future's outcome to its ``concurrent.futures``
    twin (errors, a KilledWorker and a cancellation included); a twin the master cancelled
    meanwhile is left alone."""
    try:
        result = await future._result()  # as distributed's own ClientExecutor waits
    except BaseException as exc:  # the task's error, or its cancellation
        outcome = (twin.set_exception, exc)
    else:
        outcome = (twin.set_result, result)
    with contextlib.suppress(cf.InvalidStateError):  # cancelled by the master: nobody waits for it
        outcome[0](outcome[1])


class DaskCluster(ExecutorCluster):
    """The cluster interface over a ``distributed.Client``, with data placed on the workers once.

    A Dask-backed :class:`~lwpd.cluster.ExecutorCluster`: the timing model (injected
    per-worker delays, sequential logical workers, communication priced by ``cost``),
    cancellation and fault handling are the executor cluster's. Two things differ:

    - **Data stays on the workers.** Every task argument that is shared data rather than a
      parameter -- any object other than a number, a string or a writeable array (the
      problem with its samples, the codebook, the moments), and every read-only array of at
      least :data:`lwpd._config.DASK_SCATTER_MIN_BYTES` bytes (the shards' row indices) -- is
      scattered to all Dask workers the first time a task uses it (``broadcast=True``, so a
      worker that dies takes no data with it) and tasks refer to it by key from then on; if
      the scheduler nevertheless loses it, the next task that uses it scatters it again. A
      task therefore carries the parameters, codeword indices and scalars only: O(n_params)
      bytes, whatever the size of the data. Objects are recognised by identity (arrays by
      their buffer), so mutate shared data only between :meth:`reset` calls (which forget
      what was scattered); the :data:`lwpd._config.DASK_SHARED_ENTRIES` most recently used
      objects stay scattered, older ones are released.
    - **Logical workers are pinned.** Logical worker ``w`` runs on Dask worker ``w mod D``
      (sorted by address, refreshed every round), with ``allow_other_workers=True``: when a
      Dask worker dies, the scheduler re-runs its tasks on the others (a task that kills
      ``distributed.scheduler.allowed-failures`` workers comes back as a failed task, a
      :class:`Completion` carrying ``KilledWorker``).

    Injected delays sleep until a modelled finish time on the shared clock
    (``time.time()``), exact on one machine and as good as the clock synchronisation (NTP)
    across machines; on a real cluster with natural stragglers, pass ``delays=None``. A
    sleeping task holds a Dask worker thread, so give each worker process as many threads as
    tasks it holds at once (e.g. ``dask_cluster(threads_per_worker=16)``) or injected sleeps
    queue behind one another. A
    task that never returns holds its Dask worker thread until it does (threads cannot be
    interrupted); cancelling it only discards its result.

    Parameters
    ----------
    client : distributed.Client
        A connected client; the cluster does not close it (see :func:`dask_cluster`).
    n_workers : int, optional
        Number of logical workers; default the number of Dask workers.
    delays, time_scale, seed, cost, faults
        As for :class:`~lwpd.cluster.ExecutorCluster`.

    Examples
    --------
    >>> from lwpd.cluster import dask_cluster
    >>> with dask_cluster(n_workers=2) as cluster:  # doctest: +SKIP
    ...     ids = [cluster.submit(w, pow, 3, w) for w in range(2)]
    ...     sorted(c.result for c in cluster.as_completed())
    [1, 3]
    """

    def __init__(self, client: Any, n_workers: int | None = None, delays: Any = None, time_scale: float = 1.0,
                 seed: Any = None, cost: Any = None, faults: Any = None):
        distributed = _require_distributed()
        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        self._client = client
        self._shared: dict[Any, tuple[Any, Any]] = {}  # identity -> (object, its future on the workers)
        self._addresses = self._worker_addresses()
        if n_workers is None:
            n_workers = len(self._addresses)
        super().__init__(client, check_int("n_workers", n_workers, minimum=1), delays=delays,
                         time_scale=time_scale, seed=seed, cost=cost, faults=faults)

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` the tasks go through."""
        return self._client

    @property
    def shared(self) -> int:
        """Number of objects scattered to the workers so far."""
        return len(self._shared)

    def _worker_addresses(self) -> list[str]:
        # Asked of the scheduler directly: Client.scheduler_info returns a cache that a
        # periodic refresh may have replaced by one without the workers.
        client = self._client
        addresses = sorted(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
        if not addresses:
            raise RuntimeError(f"the Dask scheduler at {self._client.scheduler.address} has no workers")
        return addresses

    def new_round(self) -> np.ndarray:
        """Start a round (fresh delays, as :meth:`ExecutorCluster.new_round`) and re-read the
        Dask workers, so logical workers follow workers that left or joined."""
        self._addresses = self._worker_addresses()
        return super().new_round()

    def _ship(self, value: Any) -> Any:
        """``value`` as a task should carry it: shared data replaced by its future."""
        if isinstance(value, _INLINE):
            return value
        if isinstance(value, tuple):
            return tuple(self._ship(v) for v in value)
        if isinstance(value, list):
            return [self._ship(v) for v in value]
        if isinstance(value, dict):
            return {k: self._ship(v) for k, v in value.items()}
        if isinstance(value, np.ndarray) and (value.flags.writeable or value.nbytes < _config.DASK_SCATTER_MIN_BYTES):
            return value  # parameters and indices: they change from task to task
        if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
            return value  # functions travel by name
        key = _identity(value)
        entry = self._shared.pop(key, None)
        if entry is not None and entry[1].status != "finished":
            # its data is gone from the workers (lost with the workers that held it, or
            # released): tasks referring to the old key would fail forever, so scatter it again
            self._forget([entry[1]])
            entry = None
        if entry is None:
            if len(self._shared) >= _config.DASK_SHARED_ENTRIES:  # release the least recently used
                _, oldest = self._shared.pop(next(iter(self._shared)))
                self._forget([oldest])
            entry = (value, self._client.scatter(value, broadcast=True, hash=False))
        self._shared[key] = entry  # most recently used last
        return entry[1]

    def _dispatch(self, worker: int, fn: Callable[..., Any], finish_at: float, args: tuple, kwargs: dict) -> cf.Future:
        address = self._addresses[worker % len(self._addresses)]
        future = self._client.submit(run_task, fn, finish_at, worker, self._ship(args), self._ship(kwargs), pure=False,
                                     workers=[address], allow_other_workers=True)
        # A concurrent.futures twin, settled on the client's event loop (no extra thread, no
        # round trip), so the executor cluster's waiting applies unchanged.
        twin: cf.Future = cf.Future()
        twin.dask_future = future  # type: ignore[attr-defined]
        self._client.loop.add_callback(_settle, future, twin)
        return twin

    def _cancel_futures(self, futures: list) -> None:
        for twin in futures:
            twin.cancel()
        if futures:
            self._client.cancel([twin.dask_future for twin in futures])  # one message for all

    def reset(self) -> None:
        """As :meth:`ExecutorCluster.reset`, and forget (release) the data scattered so far."""
        super().reset()
        self._release()

    def _release(self) -> None:
        futures = [future for _, future in self._shared.values()]
        self._shared.clear()
        self._forget(futures)

    def _forget(self, futures: list) -> None:
        """Release scattered data on the workers."""
        if futures:
            with contextlib.suppress(Exception):  # a closed client has released them already
                self._client.cancel(futures)

    def close(self) -> None:
        """Cancel every outstanding task and release the scattered data (the client stays open)."""
        self.cancel()
        self._release()

    def __repr__(self) -> str:
        return (f"DaskCluster({self._client.scheduler.address!r}, dask_workers={len(self._addresses)}, "
                f"n_workers={self._n_workers}, time_scale={self._time_scale:g}, pending={self.pending})")


@contextlib.contextmanager
def dask_cluster(address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1, *,
                 timeout: float | None = None, delays: Any = None, time_scale: float = 1.0, seed: Any = None,
                 cost: Any = None, faults: Any = None, security: Any = None, **kwargs: Any) -> Iterator[DaskCluster]:
    """A :class:`DaskCluster` for the duration of a ``with`` block, on a laptop or a real cluster.

    Parameters
    ----------
    address : str, optional
        ``None`` (default) starts a ``distributed.LocalCluster`` of ``n_workers`` worker
        processes (loopback only, dashboard off) and closes it on exit. An address
        (``"tcp://host:8786"``) connects to a running scheduler instead, so the same script
        runs on a laptop and on a cluster; the scheduler and its workers are left running.
    n_workers : int, default 2
        With ``address=None``: Dask worker processes to start. Either way, the number of
        logical workers (pinned round-robin to the Dask workers).
    threads_per_worker : int, default 1
        Threads per started worker process. One keeps a logical worker's real computation
        sequential, as the timing model assumes. With injected ``delays``, a sleeping task
        holds its thread, so give each process as many threads as tasks it holds at once
        (the README's example: 16), or the sleeps queue behind one another.
    timeout : float, optional
        Seconds to wait for the scheduler to answer (and, with ``address=None``, for the
        workers to start); default :data:`lwpd._config.DASK_CONNECT_TIMEOUT`. An unreachable
        address raises ``ConnectionError`` naming it once this has passed.
    delays, time_scale, seed, cost, faults
        Passed to :class:`DaskCluster` (injected delays, communication prices, faults).
    security : distributed.security.Security, optional
        TLS credentials: for a ``"tls://host:port"`` scheduler, the client's certificate, key
        and CA (``Security(tls_ca_file=..., tls_client_cert=..., tls_client_key=...,
        require_encryption=True)``); with ``address=None``, the LocalCluster is started on
        ``tls://127.0.0.1`` with these credentials (``Security.temporary()`` makes
        self-signed ones; it needs the ``cryptography`` package).
    **kwargs
        Passed to ``distributed.LocalCluster`` (e.g. ``memory_limit``); only with
        ``address=None``.

    Yields
    ------
    DaskCluster

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import train
    >>> from lwpd.cluster import dask_cluster
    >>> from lwpd.problems import LeastSquares
    >>> from lwpd.schemes import LWPD
    >>> X = np.random.default_rng(0).standard_normal((200, 7)); y = X @ np.arange(7.0)
    >>> with dask_cluster(n_workers=2) as cluster:  # doctest: +SKIP
    ...     h = train(LeastSquares(X, y), LWPD(block_size=4), cluster, deadline=5.0,
    ...               max_steps=50, progress=False, seed=0)
    """
    distributed = _require_distributed()
    n_workers = check_int("n_workers", n_workers, minimum=1)
    threads_per_worker = check_int("threads_per_worker", threads_per_worker, minimum=1)
    timeout = _config.DASK_CONNECT_TIMEOUT if timeout is None else check_real("timeout", timeout, positive=True)
    from distributed.security import Security

    if security is not None and not isinstance(security, Security):
        raise TypeError(f"security must be a distributed.security.Security or None, got {type(security).__name__}")
    if "security" in kwargs or "protocol" in kwargs:
        raise TypeError("pass TLS credentials as security=, not as a LocalCluster option")
    local = None
    if address is None:
        kwargs.setdefault("silence_logs", logging.ERROR)
        if security is not None:
            kwargs.update(security=security, protocol="tls://")
        with warnings.catch_warnings():
            # With the dashboard off the scheduler still serves health checks, on 8787 or a free
            # port when another cluster holds it; that choice is not the user's concern.
            warnings.filterwarnings("ignore", message="Port 8787 is already in use", category=UserWarning)
            local = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                             processes=True, dashboard_address=None, host="127.0.0.1", **kwargs)
        target = local
    else:
        if not isinstance(address, str):
            raise TypeError(f"address must be a scheduler address such as 'tcp://host:8786' or None, got "
                            f"{type(address).__name__}")
        if kwargs:
            raise TypeError(f"LocalCluster options {sorted(kwargs)} apply only with address=None (a cluster lwpd starts)")
        target = address
    try:
        try:
            client = distributed.Client(target, timeout=timeout, **({"security": security} if security else {}))
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"could not reach the Dask scheduler at {address!r} within {timeout:g} s: {exc}") from exc
        try:
            if local is not None:
                client.wait_for_workers(n_workers, timeout=timeout)
            cluster = DaskCluster(client, n_workers=n_workers, delays=delays, time_scale=time_scale, seed=seed,
                                  cost=cost, faults=faults)
            try:
                yield cluster
            finally:
                cluster.close()
        finally:
            client.close()
    finally:
        if local is not None:
            local.close()
