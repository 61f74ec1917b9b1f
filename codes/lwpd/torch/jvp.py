"""Forward-mode directional derivatives of a torch loss (``torch.func.jvp``)."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable

import torch
from torch.func import functional_call, jvp, vmap

from lwpd import _config
from lwpd._validation import check_int
from lwpd.codebook import Codebook
from lwpd.torch.partitions import ParameterPartition, named_parameters_of



def _dense_chunks(directions: Any, dim: int, chunk: int | None, like: torch.Tensor) -> tuple[int, Iterable[torch.Tensor]]:
    """``(number of directions, iterator of dense (c, dim) chunks)`` in ``like``'s dtype/device."""
    if isinstance(directions, Codebook):
        if directions.dim != dim:
            raise ValueError(f"directions (a Codebook) must have dimension {dim} (the number of model parameters), got {directions.dim}")
        n_dirs = len(directions)
        csr = directions.to_scipy()
        step = chunk or max(1, _config.TORCH_JVP_CHUNK_ELEMENTS // dim)
        # Only a chunk of rows is ever dense (the codebook itself stays sparse).
        gen = (torch.as_tensor(csr[i : i + step].toarray(), dtype=like.dtype, device=like.device) for i in range(0, n_dirs, step))
        return n_dirs, gen
    if not isinstance(directions, torch.Tensor):
        raise TypeError(f"directions must be a lwpd.Codebook or a torch.Tensor, got {type(directions).__name__}")
    if directions.ndim not in (1, 2) or directions.shape[-1] != dim:
        raise ValueError(
            f"directions must have shape ({dim},) or (N, {dim}) (the number of model parameters "
            f"along the last axis), got shape {tuple(directions.shape)}"
        )
    rows = directions.reshape(-1, dim).to(dtype=like.dtype, device=like.device)
    step = chunk or max(1, _config.TORCH_JVP_CHUNK_ELEMENTS // dim)
    return rows.shape[0], (rows[i : i + step] for i in range(0, rows.shape[0], step))


def directional_derivatives(
    model: torch.nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    inputs: Any,
    targets: Any,
    directions: Codebook | torch.Tensor,
    chunk_size: int | None = None,
    *,
    partition: ParameterPartition | None = None,
    layout: ParameterPartition | None = None,
) -> torch.Tensor:
    """Directional derivatives ``<grad L(theta), v_j>`` by forward-mode AD, without backprop.

    ``L(theta) = loss_fn(model(inputs), targets)``. Each derivative is one
    ``torch.func.jvp`` of ``torch.func.functional_call``, vectorised over directions with
    ``torch.func.vmap`` in chunks.

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated as is (use ``model.eval()`` for dropout / batch-norm models: every
        direction sees the same random draws, and batch statistics must not be updated).
    loss_fn : callable
        ``loss_fn(outputs, targets) -> scalar tensor``.
    inputs : torch.Tensor or tuple
        Model input (a tuple is unpacked as positional arguments).
    targets : Any
        Passed to ``loss_fn``.
    directions : Codebook or torch.Tensor
        ``(N, n)`` directions (or one of shape ``(n,)``) over the flat parameter vector.
        A codebook's sparse rows are made dense one chunk at a time.
    chunk_size : int, optional
        Directions per vmapped jvp; by default as many as fit in
        ``lwpd._config.TORCH_JVP_CHUNK_ELEMENTS`` dense entries.
    partition : ParameterPartition, optional
        The directions are in this partition's block order (as codebooks built for a
        non-contiguous partition are) rather than flat order.
    layout : ParameterPartition, optional
        Deprecated name of ``partition``.

    Returns
    -------
    torch.Tensor
        Shape ``(N,)`` (``()`` for one 1-D direction), in the parameters' dtype.

    Raises
    ------
    ValueError
        A direction of the wrong length, a model without parameters, or a bad chunk size.

    Examples
    --------
    >>> import torch
    >>> from lwpd import identity_codebook
    >>> from lwpd.torch import directional_derivatives, flatten_grads
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 1).double()
    >>> x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    >>> d = directional_derivatives(model, torch.nn.functional.mse_loss, x, y, identity_codebook(4))
    >>> torch.nn.functional.mse_loss(model(x), y).backward()
    >>> torch.allclose(d, flatten_grads(model))
    True
    """
    if layout is not None:
        if partition is not None:
            raise TypeError("give partition only (layout is its deprecated name)")
        warnings.warn("directional_derivatives(layout=) is now partition=", DeprecationWarning, stacklevel=2)
        partition = layout
    named = named_parameters_of(model)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    if partition is not None and not isinstance(partition, ParameterPartition):
        raise TypeError(f"partition must be a ParameterPartition or None, got {type(partition).__name__}")
    params = {n: p.detach() for n, p in named}
    like = named[0][1]
    dim = sum(p.numel() for p in params.values())
    if partition is not None and partition.dim != dim:
        raise ValueError(f"partition covers {partition.dim} coordinates but the model has {dim} parameters")
    n_dirs, chunks = _dense_chunks(directions, dim, chunk_size, like)
    buffers = dict(model.named_buffers())
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    sizes = [p.numel() for p in params.values()]

    def loss_at(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(functional_call(model, (p, buffers), args), targets)

    def derivative(v: torch.Tensor) -> torch.Tensor:
        tangents = {n: t.view_as(params[n]) for n, t in zip(params, torch.split(v, sizes))}
        return jvp(loss_at, (params,), (tangents,))[1]

    with torch.no_grad():  # one plain evaluation: the loss must be a scalar
        probe = loss_at(params)
    if not isinstance(probe, torch.Tensor) or probe.numel() != 1:
        shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise ValueError(f"loss_fn must return a scalar (e.g. reduction='mean'), got {shape}")
    batched = vmap(derivative, randomness="same")
    out = []
    for rows in chunks:
        if partition is not None:
            rows = partition.from_blocks(rows)
        out.append(batched(rows))
    result = torch.cat(out) if out else like.new_zeros(0)
    if isinstance(directions, torch.Tensor) and directions.ndim == 1:
        return result.reshape(())
    return result.reshape(n_dirs)
