"""A DDP communication hook that all-reduces LWPD directional derivatives."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from lwpd._validation import check_int
from lwpd.codebook import Codebook, Partition
from lwpd.constructions import block_codebook, projective_block_base



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

        base = self._bases.get(size)
        if base is None:
            base = projective_block_base(size, q=3, max_weight=self.max_weight,
                                         keep=size if self.codewords == "cyclic" else None)
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
    time: the projection onto the codewords' span, with the decoder's rank decisions. Where
    the codewords are unit vectors (the log-det compressed base of a whole block is the
    identity; weight-1 codes select coordinates) ``E`` selects coordinates and ``D`` puts them
    back (``D = E^T`` exactly), and both run as an index gather and scatter instead of
    products.
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

    def _torch_maps(self, like: torch.Tensor) -> dict[int, tuple[Any, Any]]:
        """Per block size, the encode and decode maps on ``like``'s device in its dtype: the
        transposed matrices, for a selection the selected columns (an index tensor), for the
        identity ``None``."""
        key = (like.device, like.dtype)
        if key not in self._on:
            maps = {}
            for size, (E, D, _) in self._maps.items():
                columns = _selected_columns(E, D)
                if columns is not None and np.array_equal(columns, np.arange(size)):
                    maps[size] = (None, None)  # the identity: nothing to compute
                elif columns is not None:
                    index = torch.as_tensor(columns, device=like.device)
                    maps[size] = (index, index)
                else:
                    maps[size] = (torch.as_tensor(E.T, dtype=like.dtype, device=like.device),
                                  torch.as_tensor(D.T, dtype=like.dtype, device=like.device))
            self._on[key] = maps
        return self._on[key]

    def _apply(self, x: torch.Tensor, which: int, rows_in: int) -> torch.Tensor:
        """``x`` (flat, blocks of ``rows_in`` entries) through map ``which`` (0 encode, 1 decode)."""
        maps = self._torch_maps(x)
        head = self.full * rows_in
        out = _through(x[:head].reshape(self.full, rows_in), maps[self.block][which], which, self.block).reshape(-1)
        if self.tail:
            out = torch.cat([out, _through(x[head:].reshape(1, -1), maps[self.tail][which], which, self.tail).reshape(-1)])
        return out

    def encode(self, g: torch.Tensor) -> torch.Tensor:
        """Every codeword's directional derivative of the flat ``g``, in codebook order."""
        return self._apply(g, 0, self.block)

    def decode(self, values: torch.Tensor) -> torch.Tensor:
        """The projection whose derivatives are ``values`` (every codeword's, in codebook order)."""
        return self._apply(values, 1, self._maps[self.block][0].shape[0])


def _selected_columns(E: np.ndarray, D: np.ndarray) -> np.ndarray | None:
    """The coordinates ``E`` selects, when its rows are distinct unit vectors and ``D = E^T``
    exactly; else ``None``."""
    if E.size == 0 or not (np.count_nonzero(E, axis=1) == 1).all() or not (E.max(axis=1) == 1.0).all():
        return None
    columns = E.argmax(axis=1)
    if np.unique(columns).size != columns.size or not np.array_equal(D, E.T):
        return None
    return columns


def _through(rows: torch.Tensor, operator: torch.Tensor | None, which: int, block: int) -> torch.Tensor:
    """Blocks (one per row) through a map: a product with a matrix, for a selection a gather
    of its columns (encode) or a scatter into them (decode), for ``None`` (the identity) a copy."""
    if operator is None:
        return rows.clone()
    if operator.is_floating_point():
        return rows @ operator
    if which == 0:
        return rows.index_select(1, operator)
    return rows.new_zeros((rows.shape[0], block)).index_copy_(1, operator, rows)


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
