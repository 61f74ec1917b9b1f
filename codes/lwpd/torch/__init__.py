"""PyTorch adapters: parameter partitions, forward-mode directional derivatives, a coded
optimizer and a DDP communication hook.

``import lwpd`` never imports torch; this module needs it (``pip install "lwpd[torch]"``).

Coordinates
-----------
Everything here works on the *flat parameter vector*: the parameters (``model.parameters()``,
or an optimizer's ``param_groups`` in order) flattened and concatenated. A
:class:`lwpd.Partition` holds *contiguous* blocks, so a partition whose blocks are not
contiguous in the flat vector (a neuron is a row of a weight matrix plus one entry of the
bias, which lives in another tensor) is represented by a :class:`ParameterPartition`: a
``permutation`` that reorders the flat vector into *block order* (block after block), and a
contiguous ``Partition`` over that block-ordered vector. Codebooks built for a
``ParameterPartition`` live in block order; :meth:`ParameterPartition.to_blocks` and
:meth:`ParameterPartition.from_blocks` convert.

Examples
--------
>>> import torch
>>> from lwpd.torch import partition_parameters
>>> model = torch.nn.Linear(3, 2)            # weight (2, 3), bias (2,)
>>> pp = partition_parameters(model, "neuron")
>>> pp.partition.sizes.tolist(), pp.permutation.tolist()
([4, 4], [0, 1, 2, 6, 3, 4, 5, 7])
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        'lwpd.torch needs PyTorch, which is an optional extra: pip install "lwpd[torch]"'
    ) from exc

from lwpd.torch.ddp_comm_hooks import LWPDHookState, lwpd_comm_hook
from lwpd.torch.jvp import directional_derivatives
from lwpd.torch.optimizer import CodedOptimizer, StepStats
from lwpd.torch.partitions import ParameterPartition, assign_grads, flatten_grads, partition_parameters

__all__ = [
    "CodedOptimizer",
    "LWPDHookState",
    "ParameterPartition",
    "StepStats",
    "assign_grads",
    "directional_derivatives",
    "flatten_grads",
    "lwpd_comm_hook",
    "partition_parameters",
]
