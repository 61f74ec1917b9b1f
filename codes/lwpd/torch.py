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
    import torch
    from torch.func import functional_call, jvp, vmap
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        'lwpd.torch needs PyTorch, which is an optional extra: pip install "lwpd[torch]"'
    ) from exc

import copy
import inspect
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

from lwpd import _config
from lwpd._validation import as_rng, check_choice, check_int, check_real
from lwpd.codebook import Codebook, Partition

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

_SCHEMES = ("tensor", "layer", "neuron")
_POLICIES = ("deadline", "fastest", "all")
_HOOK_REGISTRIES = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


# ============================================================================ partitions
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


def _named_parameters(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = list(model.named_parameters())
    if not named:
        raise ValueError(f"model has no parameters ({type(model).__name__}); there is nothing to partition or differentiate")
    return named


def _module_groups(model: torch.nn.Module, named: list[tuple[str, Any]]) -> tuple[list[list[int]], list[tuple[int, int | None]]]:
    """``(layers, neurons)`` as indices into ``named``: the parameters each module owns
    directly, and its ``(weight, bias)`` pair when it has a weight (bias ``None`` when absent
    or not of shape ``(weight.shape[0],)``)."""
    where = {id(p): i for i, (_, p) in enumerate(named)}
    layers, pairs = [], []
    for module in model.modules():
        own = [where[id(p)] for p in module.parameters(recurse=False) if id(p) in where]
        if own:
            layers.append(own)
        w, b = module._parameters.get("weight"), module._parameters.get("bias")
        if w is not None and id(w) in where and w.ndim >= 1:
            ok = b is not None and id(b) in where and tuple(b.shape) == (w.shape[0],)
            pairs.append((where[id(w)], where[id(b)] if ok else None))
    return layers, pairs


def _sequence_groups(shapes: Sequence[torch.Size]) -> tuple[list[list[int]], list[tuple[int, int | None]]]:
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


def _build_partition(
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


def _group_blocks_by_size(layout: ParameterPartition) -> ParameterPartition:
    """The same blocks, reordered so that blocks of equal size are adjacent, the most common
    size first (private). The default codebook then repeats one base pattern over that
    leading run (a tiled codebook: faster to encode, and its blocks with the same received
    set share one factorisation when decoded)."""
    sizes = layout.partition.sizes
    values, counts = np.unique(sizes, return_counts=True)
    common = values[np.argmax(counts)]
    order = np.lexsort((np.arange(sizes.size), sizes, sizes != common))  # stable within a size
    if np.array_equal(order, np.arange(sizes.size)):
        return layout
    offsets = layout.partition.offsets
    flat = np.arange(layout.dim) if layout.permutation is None else layout.permutation
    permutation = np.concatenate([flat[offsets[i] : offsets[i + 1]] for i in order]).astype(np.int64)
    return ParameterPartition(
        Partition.from_sizes(sizes[order]),
        permutation,
        tuple(layout.block_names[i] for i in order),
        layout.names,
        layout.shapes,
    )


def _check_max_block(max_block: Any) -> int | None:
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
    check_choice("scheme", scheme, _SCHEMES)
    max_block = _check_max_block(max_block)
    named = _named_parameters(model)
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    return _build_partition(names, shapes, _module_groups(model, named), scheme, max_block)


# ============================================================================ gradients
def _params_of(model_or_params: Any) -> list[torch.Tensor]:
    if isinstance(model_or_params, torch.nn.Module):
        return [p for _, p in _named_parameters(model_or_params)]
    params = list(model_or_params)
    if not params:
        raise ValueError("there are no parameters")
    return params


def _flatten(params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if len(grads) == 1:
        return grads[0].reshape(-1)  # a view when the gradient is contiguous
    return torch.cat([g.reshape(-1) for g in grads])


def _assign(params: Sequence[torch.Tensor], vector: torch.Tensor, skip_missing: bool = False) -> None:
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
    return _flatten(_params_of(model))


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
    _assign(params, _check_vector("vector", vector, dim, params[0]))


# ============================================================================ jvp
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
    layout : ParameterPartition, optional
        The directions are in this partition's block order (as codebooks built for a
        non-contiguous partition are) rather than flat order.

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
    named = _named_parameters(model)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    if layout is not None and not isinstance(layout, ParameterPartition):
        raise TypeError(f"layout must be a ParameterPartition or None, got {type(layout).__name__}")
    params = {n: p.detach() for n, p in named}
    like = named[0][1]
    dim = sum(p.numel() for p in params.values())
    if layout is not None and layout.dim != dim:
        raise ValueError(f"layout covers {layout.dim} coordinates but the model has {dim} parameters")
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
        if layout is not None:
            rows = layout.from_blocks(rows)
        out.append(batched(rows))
    result = torch.cat(out) if out else like.new_zeros(0)
    if isinstance(directions, torch.Tensor) and directions.ndim == 1:
        return result.reshape(())
    return result.reshape(n_dirs)


# ============================================================================ coding
def _block_base(size: int, max_weight: int, redundancy: float) -> Codebook:
    """Compressed projective pattern for a block of ``size`` coordinates."""
    from lwpd import compress, projective_codebook

    base = projective_codebook(size, q=3, max_weight=max_weight)
    keep = int(min(len(base), max(size, round(redundancy * size))))
    return base if keep == len(base) else compress(base, keep, criterion="logdet")


def _default_codebook(partition: Partition, max_weight: int = 2, redundancy: float | None = None) -> Codebook:
    """The default codebook of the torch adapters: per block, a projective base PG(b-1, 3) of
    weight <= ``max_weight``, compressed to ``round(redundancy * b)`` codewords (private).
    """
    from lwpd import block_codebook

    redundancy = _config.TORCH_REDUNDANCY if redundancy is None else redundancy
    cache: dict[int, Codebook] = {}

    def base(size: int) -> Codebook:
        if size not in cache:
            cache[size] = _block_base(size, max_weight, redundancy)
        return cache[size]

    return block_codebook(base, partition)


class _PatternRun(NamedTuple):
    """A run of consecutive blocks with the same size and base pattern (private), and its
    cache of projectors per received set (``ranks[s] < 0``: set ``s`` not computed yet)."""

    first: int  # first coordinate (block order)
    first_block: int
    n_blocks: int
    size: int
    rows: int  # codewords per block
    base: np.ndarray  # (rows, size): the pattern
    layout: Any  # the pattern packed for lwpd._kernels.cpu.pattern_operators
    projectors: np.ndarray  # (2**rows, size, size)
    ranks: np.ndarray  # (2**rows,)


def _pattern_runs(codebook: Codebook, rows: np.ndarray) -> list[_PatternRun] | None:
    """The runs of equal blocks of a codebook built by :func:`_default_codebook` (one pattern
    per block size, every block's codewords contiguous and in the pattern's order; ``rows``:
    codewords per block), or ``None`` when the runs are too many or their blocks have too
    many codewords (``_config.TORCH_PATTERN_MAX_RUNS``, ``TORCH_PATTERN_MAX_ROWS``)."""
    from lwpd import block_codebook
    from lwpd.decoders import _layout

    sizes = codebook.blocks.sizes
    starts = np.flatnonzero(np.r_[True, (sizes[1:] != sizes[:-1]) | (rows[1:] != rows[:-1])])
    if starts.size > _config.TORCH_PATTERN_MAX_RUNS or rows.max() > _config.TORCH_PATTERN_MAX_ROWS:
        return None
    ends = np.r_[starts[1:], sizes.size]
    first_codeword = np.r_[0, np.cumsum(rows)]
    offsets = codebook.blocks.offsets
    csr = codebook.to_scipy()
    runs = []
    for a, z in zip(starts, ends):
        b, m, c0, o = int(sizes[a]), int(rows[a]), int(first_codeword[a]), int(offsets[a])
        base = csr[c0 : c0 + m].toarray()[:, o : o + b].astype(_config.DECODER_DTYPE)
        pattern = block_codebook(Codebook.from_dense(base), Partition.uniform(b, b))
        runs.append(_PatternRun(o, int(a), int(z - a), b, m, base, _layout(pattern),
                                np.zeros((1 << m, b, b), dtype=_config.DECODER_DTYPE), np.full(1 << m, -1, dtype=np.int64)))
    return runs


def _device_backend(tensor: torch.Tensor) -> str:
    return "cuda" if tensor.is_cuda else "cpu"


def _encode(codebook: Codebook, g: torch.Tensor) -> torch.Tensor:
    """``V g`` for a flat gradient tensor; on CUDA through lwpd's kernels, in place."""
    if g.is_cuda:
        return torch.as_tensor(codebook.encode(g.contiguous(), backend="cuda"), device=g.device)
    return torch.from_numpy(codebook.encode(g.detach().contiguous().numpy()))


def _decode(codebook: Codebook, decoder: Any, indices: torch.Tensor, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reset ``decoder``, fold in the arrivals, return the estimate in ``like``'s dtype/device."""
    decoder.reset()
    if indices.numel():
        if like.is_cuda:
            decoder.update(indices, values.to(torch.float64))
        else:
            decoder.update(indices.numpy(), values.numpy())
    est = torch.as_tensor(decoder.estimate(), device=like.device)
    return est.to(like.dtype)


@dataclass(frozen=True)
class StepStats:
    """What one coded step received and recovered.

    Attributes
    ----------
    received : int
        Codewords whose directional derivatives arrived in time.
    n_codewords : int
        Codewords dealt to the workers.
    recovered_fraction : float
        Dimension of the received codewords' span over the number of coordinates.
    relative_error : float or None
        ``||g_hat - g|| / ||g||`` (``None`` unless ``exact_grad_stats``; 0 for ``g = 0``).
    time : float
        Virtual time the step waited (seconds of the delay model).
    """

    received: int
    n_codewords: int
    recovered_fraction: float
    relative_error: float | None
    time: float


class CodedOptimizer(torch.optim.Optimizer):
    """Wrap a torch optimizer so every step uses an LWPD-decoded gradient under stragglers.

    On :meth:`step` the parameters' gradient ``g`` (of the wrapped optimizer's parameters,
    in ``param_groups`` order) is encoded per block, ``r_j = <g, v_j>``; the codewords are
    dealt round-robin per block to ``n_workers`` simulated workers (as the LWPD scheme does);
    the delay model decides whose results arrive under ``policy`` (the groups of codewords
    go to the workers in a fresh random order every step, so a persistently slow worker does
    not erase the same codewords every step); the projection decoder's
    estimate ``g_hat = pinv(V_S) r_S`` -- the projection of ``g`` onto the received span,
    always a descent direction -- replaces ``.grad``; then the wrapped optimizer steps.
    The codewords are dealt into groups once, at construction (re-dealing every step would
    sort all codewords each step); which worker computes which group, and the delays, are
    drawn afresh every step. Parameters whose ``.grad``
    is ``None`` count as zero and keep ``None``. If nothing arrives, the gradient is zero
    (a momentum optimizer still moves).

    The decoded gradient is ``P_S g``, the projection of ``g`` onto the span of the received
    codewords, block by block. With the default codebook every run of equal blocks repeats one
    pattern, so a block's projector depends only on which of its codewords arrived: the
    optimizer computes it once per received set (pivoted Cholesky, the decoder's rank rule),
    caches it, and applies it to the block of ``g``. That is what encoding ``r_S = V_S g`` and
    decoding ``pinv(V_S) r_S`` gives, at a few multiply-adds per parameter (tested against the
    encode-and-decode path to 1e-12). With a codebook of your own, the step encodes the arrived
    codewords and decodes them with a :class:`~lwpd.ProjectionDecoder`, skipping the blocks
    whose codewords all arrived and span them (they decode to the gradient itself). Either
    way, with no stragglers a step costs almost nothing beyond the wrapped optimizer's (see
    ``benchmarks/bench_torch.py``). In a deployment the workers would compute ``r_S`` and the
    master decode it; :class:`~lwpd.ProjectionDecoder` is that decoder, and
    ``benchmarks/bench_kernels.py`` times it. :attr:`last_received` lists the codewords that
    arrived.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Any optimizer (SGD with momentum, Adam, ...); its ``param_groups`` and ``state``
        are exposed unchanged.
    codebook : Codebook, optional
        Codewords over the flat parameter vector (in block order of the partition when it
        has a permutation). By default, per block of the partition, a projective base
        PG(b-1, 3) with weight <= ``max_weight``, compressed to ``redundancy * b``
        codewords (criterion ``"logdet"``).
    partition : {"neuron", "layer", "tensor"} or ParameterPartition, default "neuron"
        Blocks of the flat vector. A scheme name partitions the optimizer's parameters
        (with ``model``, by its modules; without, a weight of two or more dimensions followed
        by a matching 1-D tensor is taken as weight and bias), splitting blocks above
        ``max_block`` in halves; with the default codebook, blocks of equal size are then
        placed next to each other, the most common size first, so that one base pattern
        repeats over most blocks (faster coding; :attr:`layout` records the order). A
        :class:`ParameterPartition` from :func:`partition_parameters` must cover the
        optimizer's parameters in order and is used as given.
    max_weight : int, default 2
        Largest Hamming weight of a default codeword.
    stragglers : DelayModel, optional
        A delay model from :mod:`lwpd.stragglers` (e.g. ``Bernoulli(0.2)``: each worker
        fails with probability 0.2 each step). ``None``: every worker answers.
    policy : {"deadline", "fastest", "all"}, default "deadline"
        ``"deadline"``: fold in what arrived by ``deadline`` (default: 1.25 times the median
        worker's finishing time); ``"fastest"``: the first ``wait_for`` fraction of the
        tasks; ``"all"``: every task that ever finishes.
    seed : int or numpy.random.Generator, optional
        Seeds the dealing of codewords and the delays.
    exact_grad_stats : bool, default True
        Record ``||g_hat - g|| / ||g||`` in :attr:`last_stats`.
    model : torch.nn.Module, optional
        Keyword only. The model, to partition by its modules.
    n_workers : int, default 10
        Keyword only. Simulated workers.
    chunks : int, default 1
        Keyword only. Tasks per worker (run one after another), so a slow worker still
        contributes what it finished by the deadline.
    max_block : int, default 4
        Keyword only. Largest block when ``partition`` is a scheme name.
    redundancy : float, default 2.0
        Keyword only. Default codewords per coordinate of a block.
    deadline : float, optional
        Keyword only. Fixed deadline (virtual seconds) of the ``"deadline"`` policy.
    wait_for : float, default 0.8
        Keyword only. Fraction of tasks the ``"fastest"`` policy waits for.
    cluster : SimulatedCluster or ExecutorCluster, optional
        Keyword only. Take the arrivals from a :mod:`lwpd.cluster` cluster instead of a
        delay model: every step submits one task per chunk (its work: the chunk's total
        codeword weight) to the worker holding it and folds in the chunks that complete
        under ``policy``; the cluster's own delay model decides, and ``last_stats.time`` is
        the cluster time the step took. Its ``n_workers`` replaces ``n_workers``; give no
        ``stragglers`` with it, and a ``deadline`` with ``policy="deadline"``.

    Examples
    --------
    >>> import torch
    >>> from lwpd.stragglers import Bernoulli
    >>> from lwpd.torch import CodedOptimizer
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), stragglers=Bernoulli(0.2),
    ...                      seed=0, n_workers=4)
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> opt.step()
    >>> s = opt.last_stats
    >>> s.n_codewords, 0 < s.received <= s.n_codewords, 0 <= s.relative_error <= 1
    (20, True, True)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        codebook: Codebook | None = None,
        partition: str | ParameterPartition = "neuron",
        max_weight: int = 2,
        stragglers: Any = None,
        policy: str = "deadline",
        seed: Any = None,
        exact_grad_stats: bool = True,
        *,
        model: torch.nn.Module | None = None,
        n_workers: int = 10,
        chunks: int = 1,
        max_block: int = _config.TORCH_MAX_BLOCK,
        redundancy: float = _config.TORCH_REDUNDANCY,
        deadline: float | None = None,
        wait_for: float = 0.8,
        cluster: Any = None,
    ) -> None:
        # Deliberately no Optimizer.__init__: the state lives in the wrapped optimizer.
        # Subclassing keeps isinstance checks (LR schedulers) working.
        from lwpd.cluster._common import check_delay_model
        from lwpd.decoders import ProjectionDecoder
        from lwpd.stragglers import NoDelay

        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        closure = inspect.signature(optimizer.step).parameters.get("closure")
        if closure is not None and closure.default is inspect.Parameter.empty:
            # LBFGS and the like re-evaluate the closure inside step(): the gradient they use
            # would not be the coded one
            raise TypeError(
                f"optimizer must not need a closure in step() ({type(optimizer).__name__} re-evaluates the "
                "gradient itself, bypassing the coded gradient); use a first-order optimizer such as SGD or Adam"
            )
        self.optimizer = optimizer
        self.policy = check_choice("policy", policy, _POLICIES)
        self.max_weight = check_int("max_weight", max_weight, minimum=1)
        self.n_workers = check_int("n_workers", n_workers, minimum=1)
        self.chunks = check_int("chunks", chunks, minimum=1)
        self.deadline = None if deadline is None else check_real("deadline", deadline, positive=True)
        self.cluster = cluster
        if cluster is not None:
            missing = [a for a in ("submit", "as_completed", "cancel", "new_round", "n_workers", "now") if not hasattr(cluster, a)]
            if missing:
                raise TypeError(f"cluster must be a lwpd.cluster cluster (SimulatedCluster, ExecutorCluster); "
                                f"{type(cluster).__name__} lacks {', '.join(missing)}")
            if stragglers is not None:
                raise ValueError("give stragglers or cluster, not both: a cluster brings its own delay model")
            if self.policy == "deadline" and self.deadline is None:
                raise ValueError("policy='deadline' with a cluster needs deadline= (cluster time per step)")
            self.n_workers = check_int("cluster.n_workers", cluster.n_workers, minimum=1)
        self.wait_for = check_real("wait_for", wait_for, positive=True)
        if self.wait_for > 1:
            raise ValueError(f"wait_for must be a fraction in (0, 1], got {self.wait_for}")
        redundancy = check_real("redundancy", redundancy, positive=True)
        self.exact_grad_stats = bool(exact_grad_stats)
        self.stragglers = NoDelay() if stragglers is None else check_delay_model(stragglers)
        self._rng = as_rng("seed", seed)
        # The hook registries Optimizer.__init__ would create (OrderedDicts: torch keeps weak
        # references to them), and the step wrapper that runs the step hooks.
        for name in _HOOK_REGISTRIES:
            setattr(self, name, OrderedDict())
        self._patch_step_function()

        params = self._params()
        if isinstance(partition, ParameterPartition):
            shapes = tuple(p.shape for p in params)
            if partition.shapes != shapes:
                raise ValueError(
                    "partition (a ParameterPartition) must cover the optimizer's parameters in order: "
                    f"it has shapes {[tuple(s) for s in partition.shapes]}, the optimizer {[tuple(s) for s in shapes]}"
                )
            self.layout = partition
        else:
            check_choice("partition", partition, _SCHEMES)
            self.layout = self._partition(params, partition, model, _check_max_block(max_block))
            if codebook is None:
                self.layout = _group_blocks_by_size(self.layout)
        default_codebook = codebook is None
        if codebook is None:
            codebook = _default_codebook(self.layout.partition, self.max_weight, redundancy)
        elif not isinstance(codebook, Codebook):
            raise TypeError(f"codebook must be a lwpd.Codebook or None, got {type(codebook).__name__}")
        elif codebook.dim != self.layout.dim:
            raise ValueError(f"codebook must have dimension {self.layout.dim} (the optimizer's parameters), got {codebook.dim}")
        if len(codebook) < self.n_workers * self.chunks:
            raise ValueError(f"the codebook has {len(codebook)} codewords, fewer than n_workers * chunks ({self.n_workers * self.chunks})")
        self.codebook = codebook
        device = params[0].device
        self._decoder = ProjectionDecoder(codebook, backend=_device_backend(params[0]))
        self._device = device
        self._deal(self._rng)
        self._prepare_shortcut()
        rows = np.bincount(codebook.block_of, minlength=codebook.blocks.n_blocks)  # codewords per block
        self._runs = _pattern_runs(codebook, rows) if default_codebook and self._spans is not None else None
        if self._runs is not None:
            # int32 indices: the pattern path streams them once a step, so their width is its cost
            index = np.int32 if max(len(codebook), self.layout.dim) < 2**31 else np.int64
            perm = self.layout.permutation
            self._positions = np.arange(self.layout.dim, dtype=index) if perm is None else np.asarray(perm, dtype=index)
            self._full_masks = (np.int64(1) << rows) - 1  # every codeword of the block arrived
            self._block_of32 = codebook.block_of.astype(index)
            self._row_of = (np.arange(len(codebook)) - np.repeat(np.r_[0, np.cumsum(rows)[:-1]], rows)).astype(np.int8)
        self.last_stats: StepStats | None = None
        self._last_arrived = np.zeros(0, dtype=np.int64)  # chunks that arrived in the last step

    def _prepare_shortcut(self) -> None:
        """What the exact shortcut of :meth:`step` needs: per block, whether all its codewords
        together span it (then a block whose codewords all arrived decodes to the gradient
        itself, and neither encoding nor decoding it is needed), and the blocks each chunk
        touches."""
        cb = self.codebook
        self._block_of = cb.block_of
        self._block_sizes = cb.blocks.sizes
        if self._decoder.backend != "cpu":
            self._spans = None  # the shortcut is a host-side computation
            return
        self._decoder.update(np.arange(len(cb)), np.zeros(len(cb)))
        self._spans = self._decoder.block_ranks == self._block_sizes
        self._decoder.reset()

    def _deal(self, rng: np.random.Generator) -> None:
        """Deal the codewords into one group (of ``chunks`` chunks) per worker.

        Dealt once: re-dealing every step would sort all codewords every step. Instead each
        step hands the groups to the workers in a fresh random order (:meth:`_arrivals`), so
        a worker that is slow every step does not erase the same codewords every step.
        """
        from lwpd.schemes._lwpd import deal_codewords

        self._dealt_with = copy.deepcopy(rng.bit_generator.state)
        _, dealt = deal_codewords(self.codebook.block_of, self.n_workers, self.chunks, rng)
        weights = self.codebook.weights
        self._chunk_indices = [torch.as_tensor(c, device=self._device) for parts in dealt for c in parts]
        chunks = [c for parts in dealt for c in parts]
        block_of = self.codebook.block_of
        self._chunk_blocks = [np.unique(block_of[c]) for c in chunks]  # blocks each chunk touches
        self._chunk_sizes = np.array([c.size for c in chunks], dtype=np.int64)
        self._chunk_codewords = chunks
        # Work of a group's chunks, cumulated: a worker runs its chunks one after another.
        self._chunk_work = np.array([np.cumsum([weights[c].sum() for c in parts]) for parts in dealt], dtype=np.float64)

    # ----------------------------------------------------------------- torch plumbing
    def _params(self) -> list[torch.Tensor]:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if not params:
            raise ValueError("the optimizer has no parameters")
        return params

    def _partition(self, params: list[torch.Tensor], scheme: str, model: Any, max_block: int | None) -> ParameterPartition:
        if model is None:
            names = [f"param{i}" for i in range(len(params))]
            return _build_partition(names, [p.shape for p in params], _sequence_groups([p.shape for p in params]), scheme, max_block)
        named = _named_parameters(model)
        if [id(p) for _, p in named] != [id(p) for p in params]:
            raise ValueError("model must have exactly the optimizer's parameters, in the same order")
        return _build_partition([n for n, _ in named], [p.shape for p in params], _module_groups(model, named), scheme, max_block)

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The wrapped optimizer's parameter groups."""
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The wrapped optimizer's state."""
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The wrapped optimizer's defaults."""
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients (the wrapped optimizer's ``zero_grad``)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Refused: the partition and the codebook cover the parameters given at construction,
        and growing them would re-deal every worker's codewords mid-training.

        Raises
        ------
        TypeError
            Always; add the group to the wrapped optimizer and build a new ``CodedOptimizer``
            around it instead.
        """
        raise TypeError("CodedOptimizer codes the parameters it was built with; to add param_group, add it to the "
                        "wrapped optimizer and build a new CodedOptimizer around that optimizer")

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict plus the coding state: the random generator's
        state when the codewords were dealt and now, and the last stats. (Registered
        state-dict hooks run as for any optimizer.)"""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        # Plain containers only, so torch.load(weights_only=True) accepts the checkpoint.
        stats = None if self.last_stats is None else asdict(self.last_stats)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "lwpd": {"dealt_with": self._dealt_with, "rng": self._rng.bit_generator.state, "last_stats": stats},
        }
        for hook in self._optimizer_state_dict_post_hooks.values():
            state = hook(self, state) or state
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (a bare wrapped-optimizer state dict is accepted too).

        The codewords are dealt again as they were in the saved run, so a run resumes
        exactly even when this optimizer was built with another seed.
        """
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = hook(self, state_dict) or state_dict
        if "lwpd" not in state_dict:
            self.optimizer.load_state_dict(state_dict)
        else:
            self.optimizer.load_state_dict(state_dict["optimizer"])
            saved = state_dict["lwpd"]
            if saved["dealt_with"] != self._dealt_with:
                dealing = np.random.default_rng()
                dealing.bit_generator.state = saved["dealt_with"]
                self._deal(dealing)
            self._rng.bit_generator.state = saved["rng"]
            stats = saved["last_stats"]
            self.last_stats = None if stats is None else StepStats(**stats)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer pickles only defaults/state/param_groups; everything here lives
        # in the instance (the wrapped optimizer pickles itself)
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"CodedOptimizer({type(self.optimizer).__name__}, n_codewords={len(self.codebook)}, "
            f"n_blocks={self.layout.partition.n_blocks}, n_workers={self.n_workers}, policy={self.policy!r}, "
            f"stragglers={self.stragglers!r})"
        )

    # ----------------------------------------------------------------- coding
    def _arrivals(self) -> tuple[np.ndarray, float]:
        """Indices of the chunks that arrive this step, and the virtual time waited."""
        if self.cluster is not None:
            return self._cluster_arrivals()
        delays = self.stragglers.sample(self.n_workers, self._rng)
        # group k is computed by worker holder[k] this step (a fresh random assignment)
        holder = self._rng.permutation(self.n_workers)
        finish = delays[holder][:, None] * self._chunk_work  # inf * 0 cannot occur: work > 0
        flat = finish.reshape(-1)
        if self.policy == "all":
            arrived = np.isfinite(flat)
        elif self.policy == "fastest":
            k = math.ceil(self.wait_for * flat.size)
            arrived = np.zeros(flat.size, dtype=bool)
            arrived[np.argsort(flat, kind="stable")[:k]] = True
            arrived &= np.isfinite(flat)
        else:
            limit = self.deadline
            if limit is None:
                limit = _config.TORCH_DEADLINE_FACTOR * float(np.median(finish[:, -1]))
            arrived = (flat <= limit) & np.isfinite(flat)  # a failed worker never arrives
        done = flat[arrived]
        waited = float(done.max()) if done.size else 0.0
        return np.flatnonzero(arrived), waited

    def _cluster_arrivals(self) -> tuple[np.ndarray, float]:
        """The chunks that complete on ``self.cluster`` this step, and the cluster time it took."""
        cluster = self.cluster
        cluster.new_round()
        start = cluster.now
        holder = self._rng.permutation(self.n_workers)
        work = np.diff(self._chunk_work, axis=1, prepend=0.0)  # per chunk; the cluster queues a worker's tasks
        for k in range(self.n_workers):
            for c in range(self.chunks):
                cluster.submit(int(holder[k]), _finished_chunk, k * self.chunks + c, work=float(work[k, c]))
        if self.policy == "deadline":
            stream = cluster.as_completed(deadline=start + self.deadline)
        elif self.policy == "fastest":
            stream = cluster.as_completed(k=math.ceil(self.wait_for * work.size))
        else:
            stream = cluster.as_completed()
        arrived = np.sort(np.fromiter((done.result for done in stream), dtype=np.int64))
        cluster.cancel()
        return arrived, float(cluster.now - start)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Code and decode the gradient, write it into ``.grad``, then step the wrapped optimizer.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (run with gradients enabled).

        Returns
        -------
        The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        self._check_grads(params)
        arrived, waited = self._arrivals()
        shortcut = self._spans is not None and _config.TORCH_EXACT_SHORTCUT
        missing = np.setdiff1d(np.arange(len(self._chunk_indices)), arrived)
        if shortcut and missing.size == 0 and self._spans.all():
            # Every codeword arrived and every block's codewords span it: the decoded gradient
            # is the gradient itself, already in .grad. Nothing to encode, decode or assign.
            self._last_arrived = arrived
            self.last_stats = StepStats(len(self.codebook), len(self.codebook), 1.0,
                                        0.0 if self.exact_grad_stats else None, waited)
            self.optimizer.step()
            return loss
        g = _flatten(params)  # flat order; the pattern path reorders inside its kernel
        if shortcut and self._runs is not None and _config.TORCH_PATTERN_PROJECTION:
            g_hat, recovered = self._project_by_patterns(g, missing)
            received = int(self._chunk_sizes[arrived].sum())
        else:
            g = self.layout.to_blocks(g)
            if arrived.size:
                idx = torch.cat([self._chunk_indices[c] for c in arrived])
            else:
                idx = torch.zeros(0, dtype=torch.int64)
            received = int(idx.numel())
            if shortcut:
                g_hat, recovered = self._decode_with_shortcut(g, idx.numpy(), missing)
            else:
                values = _encode(self.codebook, g)[idx] if idx.numel() else torch.zeros(0)
                g_hat = _decode(self.codebook, self._decoder, idx, values, g)
                recovered = self._decoder.recovered_fraction()
            g, g_hat = self.layout.from_blocks(g), self.layout.from_blocks(g_hat)
        error = None
        if self.exact_grad_stats:
            norm = float(torch.linalg.vector_norm(g))
            error = float(torch.linalg.vector_norm(g_hat - g)) / norm if norm > 0 else 0.0
        _assign(params, g_hat, skip_missing=True)
        self._last_arrived = arrived
        self.last_stats = StepStats(received, len(self.codebook), recovered, error, waited)
        self.optimizer.step()
        return loss


    @property
    def last_received(self) -> np.ndarray:
        """Codeword indices whose results arrived in the last step (sorted)."""
        if not self._last_arrived.size:
            return np.zeros(0, dtype=np.int64)
        return np.sort(torch.cat([self._chunk_indices[c] for c in self._last_arrived]).numpy())

    def _check_grads(self, params: list[torch.Tensor]) -> None:
        """Refuse integer and non-finite gradients (one sum per tensor: a sum is finite when
        every entry is, barring overflow, which the exact check then settles)."""
        for name, p in zip(self.layout.names, params):
            if p.grad is None:
                continue
            if p.grad.dtype not in (torch.float16, torch.float32, torch.float64):
                raise TypeError(f"CodedOptimizer codes float16, float32 and float64 gradients, got {p.grad.dtype} "
                                f"(in {name})")
            if not math.isfinite(float(p.grad.sum())) and not bool(torch.isfinite(p.grad).all()):
                bad = [n for n, q in zip(self.layout.names, params) if q.grad is not None and not bool(torch.isfinite(q.grad).all())]
                raise ValueError(f"the gradient has NaN or inf entries (in {', '.join(bad)}); nothing was stepped")

    def _project_by_patterns(self, g: torch.Tensor, missing: np.ndarray) -> tuple[torch.Tensor, float]:
        """The projection of ``g`` (flat order, as is the result) onto the codewords of every
        chunk but the ``missing`` ones, run by run of equal blocks:
        ``g_hat[block] = Q_S g[block]`` with ``Q_S = A_S^+ A_S`` the projector of the block's
        received set ``S`` (the same pivoted-Cholesky rank decisions as the decoder), computed
        once per set and cached. Decoding the exact results ``V_S g`` gives ``A_S^+ V_S^T V_S g``,
        the same vector, so nothing is encoded or decoded. Returns ``(g_hat, recovered fraction)``."""
        from lwpd._kernels import cpu

        g_np = g.detach().numpy()  # flat order: positions[p] is block-order coordinate p's place
        g_hat = np.empty_like(g_np)
        masks = self._full_masks.copy()
        if missing.size:
            lost = np.concatenate([self._chunk_codewords[c] for c in missing])
            cpu.clear_pattern_bits(lost, self._block_of32, self._row_of, masks)
        rank = 0
        for run in self._runs:
            run_masks = masks[run.first_block : run.first_block + run.n_blocks]
            seen = np.bincount(run_masks, minlength=1 << run.rows)
            present = np.flatnonzero(seen)
            new = present[run.ranks[present] < 0]
            if new.size:
                P, ranks = cpu.pattern_operators(new, run.layout.ints, run.layout.bounds, run.layout.floats,
                                                 _config.RANK_RTOL)
                run.projectors[new] = P @ run.base
                run.ranks[new] = ranks
            cpu.project_by_patterns(run.first, run.size, run_masks, run.projectors, self._positions, g_np, g_hat,
                                    work=run.n_blocks * run.size**2)
            rank += int(seen[present] @ run.ranks[present])
        return torch.from_numpy(g_hat), rank / g_np.size

    def _decode_with_shortcut(self, g: torch.Tensor, idx: np.ndarray, missing: np.ndarray) -> tuple[torch.Tensor, float]:
        """The projection of ``g`` onto the arrived codewords, exactly as the general path
        computes it, with a shortcut: a block untouched by the ``missing`` chunks and spanned
        by its codewords is the gradient itself (no encoding, no decoding); the other blocks
        encode only their arrived codewords and decode as usual. Returns ``(g_hat, recovered
        fraction)``."""
        whole = self._spans.copy()
        for c in missing:
            whole[self._chunk_blocks[c]] = False
        if whole.mean() < _config.TORCH_SHORTCUT_MIN_BLOCKS:
            whole[:] = False  # too few to repay filtering the arrivals: decode every block
        decoder = self._decoder
        decoder.reset()
        g_np = g.detach().numpy()
        rest = idx[~whole[self._block_of[idx]]] if whole.any() else idx
        if rest.size:
            if rest.size * _config.TORCH_SUBSET_ENCODE_FRACTION < len(self.codebook):
                slot, coords, weights = self.codebook._csr().selected_entries(rest)
                values = np.bincount(slot, weights=weights * g_np[coords].astype(np.float64), minlength=rest.size)
            else:  # most codewords: the encoding kernel over all of them, then a gather, is cheaper
                values = _encode(self.codebook, g).numpy()[rest]
            decoder.update(rest, values)
        g_hat = np.asarray(decoder.estimate(), dtype=g_np.dtype)  # zero outside the decoded blocks
        if whole.any():
            coords_whole = np.repeat(whole, self._block_sizes)
            g_hat[coords_whole] = g_np[coords_whole]
        recovered = (float(self._block_sizes[whole].sum()) + decoder.rank) / g_np.size
        return torch.from_numpy(g_hat), recovered


def _finished_chunk(index: int) -> int:
    """A simulated worker's task: report which chunk it finished (the master encodes the
    chunk's values from the gradient it already holds). Module level, so process pools can
    pickle it."""
    return index


# ============================================================================ DDP hook
class LWPDHookState:
    """State of :func:`lwpd_comm_hook`: a codebook per gradient bucket, and error feedback.

    Each step, every block of ``block_size`` coordinates of a bucket sends
    ``codewords_per_block`` directional derivatives instead of its coordinates, the same
    codewords on every rank. The all-reduced derivatives decode to the projection of the
    averaged gradient onto their span; with error feedback each rank adds the part its own
    gradient lost to the next step's gradient (as PowerSGD does). Which codewords:

    ``codewords="cyclic"`` (default)
        A fixed basis of each block, the projective base PG(b-1, 3) (weight <= ``max_weight``)
        compressed to ``b`` codewords by log-det (well conditioned, spanning the block), sent
        ``codewords_per_block`` at a time in turn: every direction of the block is sent every
        ``ceil(b / codewords_per_block)`` steps, and with ``codewords_per_block >= block_size``
        every block is recovered whole at every step (``b`` floats per ``b`` coordinates:
        the exact averaged gradient, 100% of each bucket).
    ``codewords="random"``
        ``codewords_per_block`` codewords of the whole base drawn afresh each step from a
        generator seeded with ``(seed, bucket, step)``: random directions, so some of the
        block's span is not recovered even at ``codewords_per_block = block_size`` (about 20%
        on average for b = 8), and at least ``len(base)`` codewords are needed to send all.

    Parameters
    ----------
    process_group : ProcessGroup, optional
        Default: the default group.
    block_size : int, default 8
    codewords_per_block : int, default 4
        Derivatives sent per block (of ``block_size`` coordinates): the compression ratio
        is ``codewords_per_block / block_size``.
    max_weight : int, default 2
    error_feedback : bool, default True
    seed : int, default 0
        Must be equal on all ranks.
    codewords : {"cyclic", "random"}, default "cyclic"
        How each step's codewords are chosen (above).

    Attributes
    ----------
    last_stats : dict
        Per bucket index: ``{"sent": values all-reduced, "numel": bucket size,
        "recovered": fraction of the bucket's dimensions the sent codewords span,
        "relative_error": ||local residual|| / ||local gradient||}`` (the residual error
        feedback keeps: ``nan`` without error feedback, 0 when the codewords span the whole
        bucket).

    Examples
    --------
    >>> from lwpd.torch import LWPDHookState
    >>> LWPDHookState(block_size=4, codewords_per_block=2)
    LWPDHookState(block_size=4, codewords_per_block=2, max_weight=2, error_feedback=True, codewords='cyclic')
    """

    def __init__(
        self,
        process_group: Any = None,
        block_size: int = 8,
        codewords_per_block: int = 4,
        max_weight: int = 2,
        error_feedback: bool = True,
        seed: int = 0,
        codewords: str = "cyclic",
    ) -> None:
        from lwpd._validation import check_choice

        self.process_group = process_group
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.codewords_per_block = check_int("codewords_per_block", codewords_per_block, minimum=1)
        self.max_weight = check_int("max_weight", max_weight, minimum=1)
        self.error_feedback = bool(error_feedback)
        self.seed = check_int("seed", seed, minimum=0)
        self.codewords = check_choice("codewords", codewords, ("cyclic", "random"))
        self._bases: dict[int, Codebook] = {}
        self._cyclic: dict[tuple[int, int], tuple[Codebook, Any]] = {}  # (numel, phase) -> (codebook, decoder)
        self.steps: dict[int, int] = {}
        self.errors: dict[int, torch.Tensor] = {}
        self.last_stats: dict[int, dict[str, float]] = {}

    def _base(self, size: int) -> Codebook:
        """The base of a block of ``size`` coordinates: the projective base, or (cyclic) its
        log-det compression to a basis of the block."""
        from lwpd import compress, projective_codebook

        base = self._bases.get(size)
        if base is None:
            base = projective_codebook(size, q=3, max_weight=self.max_weight)
            if self.codewords == "cyclic" and len(base) > size:
                base = compress(base, size, criterion="logdet")
            self._bases[size] = base
        return base

    def codebook(self, bucket_index: int, numel: int) -> Codebook:
        """This step's codebook for a bucket of ``numel`` entries (advances the bucket's step)."""
        return self._codebook_and_maps(bucket_index, numel)[0]

    def _codebook_and_maps(self, bucket_index: int, numel: int) -> tuple[Codebook, "_TiledCode"]:
        """This step's codebook and its encode and decode maps: cyclic codebooks repeat with a
        period of ``ceil(b / c)`` steps, so they are built once per phase."""
        step = self.steps.get(bucket_index, 0)
        self.steps[bucket_index] = step + 1
        if self.codewords == "cyclic":
            period = max(1, -(-self.block_size // self.codewords_per_block))
            key = (numel, step % period)
            cached = self._cyclic.get(key)
            if cached is None:
                cached = self._cyclic[key] = self._build(numel, step, None)
            return cached
        return self._build(numel, step, np.random.default_rng([self.seed, bucket_index, step]))

    def _build(self, numel: int, step: int, rng: np.random.Generator | None) -> tuple[Codebook, "_TiledCode"]:
        from lwpd import Partition, block_codebook

        patterns: dict[int, Codebook] = {}

        def pattern(size: int) -> Codebook:
            # The same codewords on every rank; a short last block gets its own smaller base.
            if size not in patterns:
                base = self._base(size)
                c = self.codewords_per_block
                if c >= len(base):
                    patterns[size] = base
                elif self.codewords == "cyclic":
                    patterns[size] = base.subset(np.sort((step * c + np.arange(c)) % len(base)))
                else:
                    patterns[size] = base.subset(np.sort(rng.choice(len(base), c, replace=False)))
            return patterns[size]

        partition = Partition.uniform(numel, min(self.block_size, numel))
        codebook = block_codebook(pattern, partition)
        return codebook, _TiledCode(partition, pattern)

    def __repr__(self) -> str:
        return (
            f"LWPDHookState(block_size={self.block_size}, codewords_per_block={self.codewords_per_block}, "
            f"max_weight={self.max_weight}, error_feedback={self.error_feedback}, codewords={self.codewords!r})"
        )


class _TiledCode:
    """A hook codebook (one pattern tiled over equal blocks, a shorter last block with its
    own) as two dense maps per block size: encode ``E`` (codewords x coordinates) and decode
    ``D`` (coordinates x codewords), so a bucket is encoded and decoded in a few reshaped
    matrix products in its own dtype and on its own device, with no pass per block.

    ``D`` is the general decoder's own map (:class:`lwpd.decoders.ProjectionDecoder` with
    every codeword received -- the hook all-reduces them all), read one unit vector at a
    time: the projection onto the codewords' span, with the decoder's rank decisions.
    """

    def __init__(self, partition: Any, pattern: Callable[[int], Codebook]) -> None:
        sizes = partition.sizes
        self.block = int(sizes[0])
        self.full = int(np.count_nonzero(sizes == self.block))  # leading blocks of the tile size
        self.tail = int(partition.dim - self.full * self.block)  # the shorter last block, if any
        self._maps = {size: self._block_maps(pattern(size)) for size in {self.block, self.tail} if size}
        ranks = self.full * self._maps[self.block][2] + (self._maps[self.tail][2] if self.tail else 0)
        self.recovered = ranks / partition.dim  # fraction of the bucket the codewords span
        self._on: dict[tuple, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}  # (device, dtype) -> torch maps

    @staticmethod
    def _block_maps(pattern: Codebook) -> tuple[np.ndarray, np.ndarray, int]:
        from lwpd.decoders import ProjectionDecoder

        decoder, every = ProjectionDecoder(pattern), np.arange(len(pattern))
        decode = np.empty((pattern.dim, len(pattern)))
        for j in every:
            decoder.reset()
            decoder.update(every, (every == j).astype(float))
            decode[:, j] = decoder.estimate()
        return pattern.to_dense(), decode, int(decoder.block_ranks.sum())

    def _torch_maps(self, like: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        key = (like.device, like.dtype)
        if key not in self._on:
            self._on[key] = {size: (torch.as_tensor(E.T, dtype=like.dtype, device=like.device),
                                    torch.as_tensor(D.T, dtype=like.dtype, device=like.device))
                             for size, (E, D, _) in self._maps.items()}
        return self._on[key]

    def _apply(self, x: torch.Tensor, which: int, rows_in: int) -> torch.Tensor:
        """``x`` (flat, blocks of ``rows_in`` entries) through map ``which`` (0 encode, 1 decode)."""
        maps = self._torch_maps(x)
        head = self.full * rows_in
        out = (x[:head].reshape(self.full, rows_in) @ maps[self.block][which]).reshape(-1)
        if self.tail:
            out = torch.cat([out, x[head:] @ maps[self.tail][which]])
        return out

    def encode(self, g: torch.Tensor) -> torch.Tensor:
        """Every codeword's directional derivative of the flat ``g``, in codebook order."""
        return self._apply(g, 0, self.block)

    def decode(self, values: torch.Tensor) -> torch.Tensor:
        """The projection whose derivatives are ``values`` (every codeword's, in codebook order)."""
        return self._apply(values, 1, self._maps[self.block][0].shape[0])


def lwpd_comm_hook(state: LWPDHookState, bucket: Any) -> torch.futures.Future:
    """DDP communication hook: all-reduce LWPD directional derivatives instead of gradients.

    Register with ``ddp_model.register_comm_hook(LWPDHookState(...), lwpd_comm_hook)``. Each
    rank encodes its bucket gradient (plus its error-feedback residual) with the bucket's
    codebook of this step, the derivatives are averaged over ranks with one all-reduce, and
    every rank decodes the same estimate: the projection of the averaged gradient onto the
    codewords' span. Codes are linear, so decoding the average equals averaging the decodes.

    Parameters
    ----------
    state : LWPDHookState
    bucket : torch.distributed.GradBucket

    Returns
    -------
    torch.futures.Future
        Resolves to the decoded bucket tensor.

    Examples
    --------
    >>> from lwpd.torch import LWPDHookState, lwpd_comm_hook
    >>> callable(lwpd_comm_hook), LWPDHookState().codewords_per_block
    (True, 4)
    """
    import torch.distributed as dist

    if not isinstance(state, LWPDHookState):
        raise TypeError(f"state must be a LWPDHookState, got {type(state).__name__}")
    grad = bucket.buffer()
    index = bucket.index()
    _, code = state._codebook_and_maps(index, grad.numel())
    world = dist.get_world_size(state.process_group)
    target = grad
    if state.error_feedback:
        error = state.errors.get(index)
        if error is not None and error.shape == grad.shape:  # DDP may rebuild buckets once
            target = grad + error
    values = code.encode(target)
    residual, relative_error = None, float("nan")
    if code.recovered == 1.0:
        # the codewords span the whole bucket: the decode is the identity up to rounding, and
        # there is no error to feed back (no decode for it: the exact mode costs two products)
        state.errors.pop(index, None)
        relative_error = 0.0
    elif state.error_feedback:
        residual = target - code.decode(values)
        state.errors[index] = residual
        norm = float(torch.linalg.vector_norm(target))
        relative_error = float(torch.linalg.vector_norm(residual)) / norm if norm > 0 else 0.0
    state.last_stats[index] = {"sent": float(values.numel()), "numel": float(grad.numel()),
                               "relative_error": relative_error, "recovered": code.recovered}
    values = values.div_(world)
    future = dist.all_reduce(values, group=state.process_group, async_op=True).get_future()

    def finish(fut: torch.futures.Future) -> torch.Tensor:
        grad.copy_(code.decode(fut.value()[0]))
        return grad

    return future.then(finish)


# DDP checks the hook's annotations against the real classes; string annotations (from the
# ``__future__`` import above) would fail that check.
if torch.distributed.is_available():
    lwpd_comm_hook.__annotations__ = {
        "state": LWPDHookState,
        "bucket": torch.distributed.GradBucket,
        "return": torch.futures.Future[torch.Tensor],
    }
