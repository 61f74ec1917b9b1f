"""Schemes that split a gradient step into worker tasks and decode whatever arrives.

All share one interface (:class:`Scheme`): ``bind`` to a problem and a number of workers,
then per step ``begin``, ``tasks(theta)``, ``fold(worker, result)`` as results arrive, and
``estimate()``. Compared on the same problem, cluster and seed by :func:`lwpd.train`.
"""

from lwpd.schemes._base import MalformedResult, Scheme, Task
from lwpd.schemes._data_parallel import IgnoreStragglers, Replication, RobustAggregation, Uncoded
from lwpd.schemes._gradient_coding import GradientCoding
from lwpd.schemes._lcc import LCC
from lwpd.schemes._lwpd import LWPD, RandomK
from lwpd.schemes._partial_gc import PartialGradientCoding
from lwpd.schemes._replicated import ReplicatedLWPD

__all__ = ["GradientCoding", "IgnoreStragglers", "LCC", "LWPD", "MalformedResult", "PartialGradientCoding", "RandomK", "ReplicatedLWPD", "Replication", "RobustAggregation", "Scheme", "Task", "Uncoded"]
