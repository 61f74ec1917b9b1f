"""Clusters that run worker tasks: simulated (virtual clock) or real (any executor).

Every cluster has one interface, :class:`Cluster` (the base class of the three here; any
object with its :attr:`Cluster.REQUIRED` methods counts as one), so a scheme or a training
loop is written once:

- ``submit(worker, fn, *args, work=1.0, **kwargs)`` hands a task to a logical worker and
  returns its task id;
- ``new_round()`` draws fresh per-worker delays from the delay model (called
  automatically on the first submit);
- ``as_completed(deadline=None, k=None)`` yields :class:`Completion` records in completion
  order, stopping at a deadline (on the cluster clock) or after ``k`` completions;
- ``cancel(task_ids=None)`` drops outstanding tasks; ``pending``, ``now``, ``n_workers``;
  ``reset()`` starts over.

A *delay model* is any object with ``sample(n_workers, rng) -> ndarray`` (float64, shape
``(n_workers,)``, seconds per unit of work, ``np.inf`` for a worker that never returns) and
``reset()``; :mod:`lwpd.stragglers` provides the standard ones. A *fault model* (``faults=``,
e.g. :class:`lwpd.robust.Byzantine`) corrupts some workers' results as they are delivered.

:func:`dask_cluster` runs the same interface on Dask -- a ``LocalCluster`` on one machine,
or any running scheduler -- with the data placed on the workers once.
"""

from lwpd.cluster._common import Cluster, Completion
from lwpd.cluster._dask import DaskCluster, dask_cluster
from lwpd.cluster._executor import ExecutorCluster
from lwpd.cluster._simulated import SimulatedCluster

__all__ = ["Cluster", "Completion", "DaskCluster", "ExecutorCluster", "SimulatedCluster", "dask_cluster"]
