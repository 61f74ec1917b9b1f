"""Parameter partitions of a torch model, and its flat gradient vector."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from lwpd._validation import check_choice, check_int
from lwpd.codebook import Partition

PARTITION_SCHEMES = ("tensor", "layer", "neuron")


class ParameterPartition(NamedTuple):
    """Blocks of a model's flat parameter vector, and the way back to parameter names.

    Attributes
    ----------
    partition : Partition
        Contiguous blocks over the *block-ordered* vector ``flat[permutation]``.
    permutation : numpy.ndarray or None
        ``blocked = flat[permutation]``: the flat coordinate at each block-ordered position;
        ``None`` when the blocks are already contiguous in the flat vector (identity).
    block_names : tuple of tuple of str
        For each block, the names of the parameters its coordinates belong to.
    names : tuple of str
        Parameter names in flat order.
    shapes : tuple of torch.Size
        Parameter shapes in flat order.
    """

    partition: Partition
    permutation: np.ndarray | None
    block_names: tuple[tuple[str, ...], ...]
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @property
    def dim(self) -> int:
        """Length of the flat parameter vector."""
        return self.partition.dim

    def to_blocks(self, flat: torch.Tensor) -> torch.Tensor:
        """Reorder a flat-order vector (or rows of a matrix) into block order.

        Returns ``flat`` itself when the permutation is the identity.
        """
        if self.permutation is None:
            return flat
        return flat[..., torch.as_tensor(self.permutation, device=flat.device)]

    def from_blocks(self, blocked: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_blocks`: a block-order vector (or rows) back in flat order."""
        if self.permutation is None:
            return blocked
        out = torch.empty_like(blocked)
        out[..., torch.as_tensor(self.permutation, device=blocked.device)] = blocked
        return out


def named_parameters_of(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = list(model.named_parameters())
    if not named:
        raise ValueError(f"model has no parameters ({type(model).__name__}); there is nothing to partition or differentiate")
    return named


def module_groups(model: torch.nn.Module, named: list[tuple[str, Any]]) -> tuple[list[list[int]], list[tuple[int, int | None]]]:
    """``(layers, neurons)`` as indices into ``named``: the parameters each module owns
    directly, and its ``(weight, bias)`` pair when it has a weight (bias ``None`` when absent
    or not of shape ``(weight.shape[0],)``)."""
    where = {id(p): i for i, (_, p) in enumerate(named)}
    layers, pairs = [], []
    for module in model.modules():
        own = [where[id(p)] for p in module.parameters(recurse=False) if id(p) in where]
        if own:
            layers.append(own)
        direct = dict(module.named_parameters(recurse=False))
        w, b = direct.get("weight"), direct.get("bias")
        if w is not None and id(w) in where and w.ndim >= 1:
            ok = b is not None and id(b) in where and tuple(b.shape) == (w.shape[0],)
            pairs.append((where[id(w)], where[id(b)] if ok else None))
    return layers, pairs


def sequence_groups(shapes: Sequence[torch.Size]) -> tuple[list[list[int]], list[tuple[int, int | None]]]:
    """The same structure guessed from a bare parameter list (no modules known): a tensor of
    two or more dimensions followed by a 1-D tensor of length ``shape[0]`` is a
    ``(weight, bias)`` pair -- the order in which ``nn.Linear`` and ``nn.ConvNd`` register them."""
    layers, pairs, i = [], [], 0
    while i < len(shapes):
        s = shapes[i]
        if len(s) >= 2 and i + 1 < len(shapes) and tuple(shapes[i + 1]) == (s[0],):
            layers.append([i, i + 1])
            pairs.append((i, i + 1))
            i += 2
        else:
            layers.append([i])
            if len(s) >= 2:
                pairs.append((i, None))
            i += 1
    return layers, pairs


def _halve(block: np.ndarray, max_block: int | None) -> list[np.ndarray]:
    """Split a block recursively into halves (the first half takes the odd coordinate)."""
    if max_block is None or block.size <= max_block:
        return [block]
    half = (block.size + 1) // 2
    return _halve(block[:half], max_block) + _halve(block[half:], max_block)


def build_partition(
    names: Sequence[str],
    shapes: Sequence[torch.Size],
    groups: tuple[list[list[int]], list[tuple[int, int | None]]],
    scheme: str,
    max_block: int | None,
) -> ParameterPartition:
    sizes = np.array([math.prod(s) for s in shapes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    span = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(sizes))]
    layers, pairs = groups
    claimed: set[int] = set()
    blocks: list[np.ndarray] = []
    if scheme == "layer":
        for own in layers:
            own = [i for i in own if i not in claimed]
            if own:
                blocks.append(np.concatenate([span[i] for i in own]))
                claimed.update(own)
    elif scheme == "neuron":
        for w, b in pairs:
            if w in claimed or (b is not None and b in claimed):
                continue
            rows = span[w].reshape(shapes[w][0], -1)  # a neuron / output channel per row
            if b is not None:
                rows = np.concatenate([rows, span[b][:, None]], axis=1)
                claimed.add(b)
            claimed.add(w)
            blocks.extend(rows)
    # Everything not claimed above (and every tensor under "tensor") is its own block.
    blocks.extend(span[i] for i in range(len(sizes)) if i not in claimed and sizes[i])
    blocks.sort(key=lambda blk: int(blk[0]))  # block order follows the flat order
    blocks = [piece for blk in blocks for piece in _halve(blk, max_block)]
    permutation = np.concatenate(blocks).astype(np.int64)
    lengths = np.array([blk.size for blk in blocks], dtype=np.int64)
    # (block, parameter) pairs of every coordinate, deduplicated in one pass (sorted).
    owner = np.searchsorted(offsets, permutation, side="right") - 1
    pairs = np.unique(np.repeat(np.arange(lengths.size), lengths) * len(names) + owner)
    cuts = np.searchsorted(pairs // len(names), np.arange(lengths.size + 1))
    block_names = tuple(tuple(names[i] for i in pairs[a:b] % len(names)) for a, b in zip(cuts[:-1], cuts[1:]))
    identity = bool(np.array_equal(permutation, np.arange(permutation.size)))
    return ParameterPartition(
        Partition.from_sizes(lengths),
        None if identity else permutation,
        block_names,
        tuple(names),
        tuple(torch.Size(s) for s in shapes),
    )


def group_blocks_by_size(parts: ParameterPartition) -> ParameterPartition:
    """The same blocks, reordered so that blocks of equal size are adjacent, the most common
    size first (private). The default codebook then repeats one base pattern over that
    leading run (a tiled codebook: faster to encode, and its blocks with the same received
    set share one factorisation when decoded)."""
    sizes = parts.partition.sizes
    values, counts = np.unique(sizes, return_counts=True)
    common = values[np.argmax(counts)]
    order = np.lexsort((np.arange(sizes.size), sizes, sizes != common))  # stable within a size
    if np.array_equal(order, np.arange(sizes.size)):
        return parts
    offsets = parts.partition.offsets
    flat = np.arange(parts.dim) if parts.permutation is None else parts.permutation
    permutation = np.concatenate([flat[offsets[i] : offsets[i + 1]] for i in order]).astype(np.int64)
    return ParameterPartition(
        Partition.from_sizes(sizes[order]),
        permutation,
        tuple(parts.block_names[i] for i in order),
        parts.names,
        parts.shapes,
    )


def check_max_block(max_block: Any) -> int | None:
    return None if max_block is None else check_int("max_block", max_block, minimum=1)


def partition_parameters(model: torch.nn.Module, scheme: str = "tensor", max_block: int | None = None) -> ParameterPartition:
    """Partition a model's flat parameter vector into coordinate blocks.

    Parameters
    ----------
    model : torch.nn.Module
        The flat vector is ``model.parameters()`` flattened and concatenated, in that order.
    scheme : {"tensor", "layer", "neuron"}, default "tensor"
        ``"tensor"``: one block per parameter tensor. ``"layer"``: one block per module,
        holding the parameters it owns directly (weight and bias of a ``Linear``).
        ``"neuron"``: one block per neuron -- a row of a weight (an output unit of
        ``Linear``, an output channel of ``ConvNd``: ``weight[i]``) together with
        ``bias[i]``; parameters of no such module are one block per tensor.
    max_block : int, optional
        Split blocks larger than this recursively into halves until they fit.

    Returns
    -------
    ParameterPartition
        A contiguous :class:`lwpd.Partition` over the block-ordered vector, the permutation
        from flat order to block order (``None`` if the identity), and the parameter names
        of each block. Blocks are ordered by their first flat coordinate.

    Raises
    ------
    ValueError
        ``scheme`` is not one of the above, or the model has no parameters.

    Examples
    --------
    >>> import torch
    >>> from lwpd.torch import partition_parameters
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> partition_parameters(model, "layer").partition.sizes.tolist()
    [15, 8]
    >>> pp = partition_parameters(model, "neuron")
    >>> pp.partition.sizes.tolist(), pp.block_names[0]
    ([5, 5, 5, 4, 4], ('0.weight', '0.bias'))
    >>> partition_parameters(model, "tensor", max_block=4).partition.sizes.tolist()
    [3, 3, 3, 3, 3, 3, 3, 2]
    """
    check_choice("scheme", scheme, PARTITION_SCHEMES)
    max_block = check_max_block(max_block)
    named = named_parameters_of(model)
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    return build_partition(names, shapes, module_groups(model, named), scheme, max_block)


# ============================================================================ gradients
def _params_of(model_or_params: Any) -> list[torch.Tensor]:
    if isinstance(model_or_params, torch.nn.Module):
        return [p for _, p in named_parameters_of(model_or_params)]
    params = list(model_or_params)
    if not params:
        raise ValueError("there are no parameters")
    return params


def flatten(params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if len(grads) == 1:
        return grads[0].reshape(-1)  # a view when the gradient is contiguous
    return torch.cat([g.reshape(-1) for g in grads])


def assign(params: Sequence[torch.Tensor], vector: torch.Tensor, skip_missing: bool = False) -> None:
    offset = 0
    for p in params:
        piece = vector[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.grad is not None:
            p.grad.copy_(piece)  # in place: keeps the tensor optimizers and hooks hold
        elif not skip_missing:
            p.grad = piece.to(p.dtype)  # a view of ``vector`` (no copy) when dtypes match


def _check_vector(name: str, vector: Any, dim: int, like: torch.Tensor) -> torch.Tensor:
    vec = torch.as_tensor(vector, device=like.device)
    if not (vec.is_floating_point()):
        raise TypeError(f"{name} must be a floating tensor, got dtype {vec.dtype}")
    if vec.ndim != 1 or vec.shape[0] != dim:
        raise ValueError(f"{name} must be 1-D of length {dim} (the number of model parameters), got shape {tuple(vec.shape)}")
    return vec


def flatten_grads(model: torch.nn.Module) -> torch.Tensor:
    """The model's gradient as one flat vector, in ``model.parameters()`` order.

    Parameters without a gradient contribute zeros. A single-parameter model gets a view of
    its ``.grad`` (no copy); otherwise the gradients are concatenated into a new tensor.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    torch.Tensor
        1-D, of length the number of parameters.

    Examples
    --------
    >>> import torch
    >>> from lwpd.torch import flatten_grads
    >>> model = torch.nn.Linear(2, 1)
    >>> model(torch.ones(1, 2)).sum().backward()
    >>> flatten_grads(model).tolist()
    [1.0, 1.0, 1.0]
    """
    return flatten(_params_of(model))


def assign_grads(model: torch.nn.Module, vector: Any) -> None:
    """Write a flat vector into the parameters' ``.grad`` (the inverse of :func:`flatten_grads`).

    An existing ``.grad`` is overwritten in place; a missing one becomes a view of
    ``vector`` (no copy when the dtypes agree), so ``vector`` must not be modified afterwards.

    Parameters
    ----------
    model : torch.nn.Module
    vector : torch.Tensor or array_like
        1-D, of length the number of parameters.

    Raises
    ------
    ValueError
        ``vector`` has the wrong length or is not 1-D.

    Examples
    --------
    >>> import torch
    >>> from lwpd.torch import assign_grads
    >>> model = torch.nn.Linear(2, 1)
    >>> assign_grads(model, torch.tensor([1.0, 2.0, 3.0]))
    >>> model.weight.grad.tolist(), model.bias.grad.tolist()
    ([[1.0, 2.0]], [3.0])
    """
    params = _params_of(model)
    dim = sum(p.numel() for p in params)
    assign(params, _check_vector("vector", vector, dim, params[0]))
