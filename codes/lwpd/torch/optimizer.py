"""CodedOptimizer: any torch optimizer, stepped on the decoded projection of the gradient."""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numba
import numpy as np
import torch

from lwpd import _config, _defaults
from lwpd.cluster._common import Cluster
from lwpd._validation import as_rng, check_choice, check_fraction, check_int, check_real
from lwpd.codebook import Codebook
from lwpd.torch._patterns import _PatternRun, _default_codebook, _pattern_runs
from lwpd.torch.partitions import (PARTITION_SCHEMES, ParameterPartition, assign, build_partition, check_max_block,
                                   flatten, group_blocks_by_size, module_groups, named_parameters_of,
                                   sequence_groups)

#: The policies, named as :func:`lwpd.train` names them ("all": first_k with every task).
_POLICIES = ("deadline", "first_k", "all")
_HOOK_REGISTRIES = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


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
        Time the step waited, in the units of :mod:`lwpd.cost`: a worker computes its
        codewords' directional derivatives in time ``delay * work``, where a worker holding
        an average share of the codewords (by total weight) does one unit of work, as an
        uncoded worker's shard gradient is one unit in :mod:`lwpd.cost` (the directional
        derivatives are taken to cost in proportion to their codewords' weight). Without
        stragglers (``delay = 1``) a step that waits for every worker takes about 1.
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
        repeats over most blocks (faster coding; :attr:`parameter_partition` records the order). A
        :class:`ParameterPartition` from :func:`partition_parameters` must cover the
        optimizer's parameters in order and is used as given.
    max_weight : int, default 2
        Largest Hamming weight of a default codeword.
    stragglers : DelayModel, optional
        A delay model from :mod:`lwpd.stragglers` (e.g. ``Bernoulli(0.2)``: each worker
        fails with probability 0.2 each step). ``None``: every worker answers.
    policy : {"deadline", "first_k", "all"}, default "deadline"
        ``"deadline"``: fold in what arrived by ``deadline`` (default: 1.25 times the median
        worker's finishing time); ``"first_k"``: the first ``wait_for`` fraction of the
        tasks (the name :func:`lwpd.train` gives it; ``"fastest"``, its former name here, is
        still taken, with a ``DeprecationWarning``); ``"all"``: every task that ever finishes.
    seed : int or numpy.random.Generator, optional
        Seeds the dealing of codewords and the delays.
    exact_grad_stats : bool, default True
        Record ``||g_hat - g|| / ||g||`` in :attr:`last_stats`.
    model : torch.nn.Module, optional
        Keyword only. The model, to partition by its modules.
    n_workers : int, default 16
        Keyword only. Simulated workers.
    chunks : int, default 1
        Keyword only. Tasks per worker (run one after another), so a slow worker still
        contributes what it finished by the deadline.
    max_block : int, default 4
        Keyword only. Largest block when ``partition`` is a scheme name.
    redundancy : float, default 2.0
        Keyword only. Default codewords per coordinate of a block.
    deadline : float, optional
        Keyword only. Fixed deadline of the ``"deadline"`` policy, in the time units of
        :class:`StepStats` (a worker with no delay finishes its share in about 1).
    wait_for : float, default 0.75
        Keyword only. Fraction of tasks the ``"first_k"`` policy waits for.
    cluster : SimulatedCluster or ExecutorCluster, optional
        Keyword only. Take the arrivals from a :mod:`lwpd.cluster` cluster instead of a
        delay model: every step submits one task per chunk (its work: the chunk's share of
        its worker's unit, by codeword weight; see :class:`StepStats`) to the worker holding
        it and folds in the chunks that complete under ``policy``; the cluster's own delay model decides, and ``last_stats.time`` is
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
        n_workers: int = _defaults.WORKERS,
        chunks: int = 1,
        max_block: int = _defaults.TORCH_MAX_BLOCK,
        redundancy: float = _defaults.TORCH_REDUNDANCY,
        deadline: float | None = None,
        wait_for: float = _defaults.WAIT_FOR,
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
        if policy == "fastest":
            warnings.warn("CodedOptimizer's policy 'fastest' is now 'first_k', as lwpd.train names it",
                          DeprecationWarning, stacklevel=2)
            policy = "first_k"
        self.policy = check_choice("policy", policy, _POLICIES)
        self.max_weight = check_int("max_weight", max_weight, minimum=1)
        self.n_workers = check_int("n_workers", n_workers, minimum=1)
        self.chunks = check_int("chunks", chunks, minimum=1)
        self.deadline = None if deadline is None else check_real("deadline", deadline, positive=True)
        self.cluster = cluster
        if cluster is not None:
            missing = Cluster.missing(cluster)
            if missing:
                raise TypeError(f"cluster must be a lwpd.cluster.Cluster (SimulatedCluster, ExecutorCluster, DaskCluster, "
                                f"or an object with its methods); {type(cluster).__name__} lacks {', '.join(missing)}")
            if stragglers is not None:
                raise ValueError("give stragglers or cluster, not both: a cluster brings its own delay model")
            if self.policy == "deadline" and self.deadline is None:
                raise ValueError("policy='deadline' with a cluster needs deadline= (cluster time per step)")
            self.n_workers = check_int("cluster.n_workers", cluster.n_workers, minimum=1)
        self.wait_for = check_fraction("wait_for", wait_for)
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
            self.parameter_partition = partition
        else:
            check_choice("partition", partition, PARTITION_SCHEMES)
            self.parameter_partition = self._partition(params, partition, model, check_max_block(max_block))
            if codebook is None:
                self.parameter_partition = group_blocks_by_size(self.parameter_partition)
        default_codebook = codebook is None
        if codebook is None:
            codebook = _default_codebook(self.parameter_partition.partition, self.max_weight, redundancy)
        elif not isinstance(codebook, Codebook):
            raise TypeError(f"codebook must be a lwpd.Codebook or None, got {type(codebook).__name__}")
        elif codebook.dim != self.parameter_partition.dim:
            raise ValueError(f"codebook must have dimension {self.parameter_partition.dim} (the optimizer's parameters), got {codebook.dim}")
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
        # codewords every block may lose and stay spanned (-1: some block is never spanned)
        self._tolerance = (-1 if self._spans is None or not self._spans.all()
                           else min(run.tolerance for run in self._runs) if self._runs is not None else 0)
        if self._runs is not None:
            # int32 indices: the pattern path streams them once a step, so their width is its cost
            index = np.int32 if max(len(codebook), self.parameter_partition.dim) < 2**31 else np.int64
            perm = self.parameter_partition.permutation
            self._positions = np.arange(self.parameter_partition.dim, dtype=index) if perm is None else np.asarray(perm, dtype=index)
            # bit r of block b's mask: its r-th codeword arrived (TORCH_PATTERN_MAX_ROWS <= 16 bits)
            self._full_masks = ((np.int64(1) << rows) - 1).astype(np.uint16)
            self._first_codeword = np.r_[0, np.cumsum(rows)[:-1]]  # of each block (codewords are grouped by block)
            self._run_first = np.array([run.first_block for run in self._runs], dtype=np.int64)
            self._run_end = self._run_first + [run.n_blocks for run in self._runs]
            self._run_offset = np.r_[0, np.cumsum([1 << run.rows for run in self._runs])]  # each run's sets in one count array
            self._param_offsets = np.r_[0, np.cumsum([p.numel() for p in params])]  # flat place of each tensor
            self._locate_chunks()
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
        held, dealt = deal_codewords(self.codebook.block_of, self.n_workers, self.chunks, rng)
        # the most codewords of one block each group holds (its codewords are sorted, so a
        # block's are adjacent): losing groups G loses a block at most the sum over G of these
        blocks = self.codebook.block_of[np.concatenate(held)]
        group = np.repeat(np.arange(self.n_workers), [h.size for h in held])
        starts = np.flatnonzero(np.r_[True, (blocks[1:] != blocks[:-1]) | (group[1:] != group[:-1])])
        self._group_multiplicity = np.zeros(self.n_workers, dtype=np.int64)
        np.maximum.at(self._group_multiplicity, group[starts], np.diff(np.r_[starts, blocks.size]))
        weights = self.codebook.weights
        # every chunk's codewords in one array (chunk c: _chunk_flat[_chunk_starts[c] : _chunk_starts[c + 1]]);
        # the per-chunk arrays are views of it (and the CPU index tensors share their memory)
        self._chunk_sizes = np.array([c.size for parts in dealt for c in parts], dtype=np.int64)
        self._chunk_starts = np.r_[0, np.cumsum(self._chunk_sizes)]
        self._chunk_flat = np.concatenate([c for parts in dealt for c in parts])
        chunks = np.split(self._chunk_flat, self._chunk_starts[1:-1])
        self._chunk_indices = [torch.as_tensor(c, device=self._device) for c in chunks]
        self._chunk_blocks = [np.unique(self.codebook.block_of[c]) for c in chunks]  # blocks each chunk touches
        # Work of a group's chunks, cumulated (a worker runs its chunks one after another), in
        # lwpd.cost's units: a group of average total codeword weight is one unit, as an
        # uncoded worker's shard gradient is one unit there
        work = np.array([np.cumsum([weights[c].sum() for c in parts]) for parts in dealt], dtype=np.float64)
        self._chunk_work = work / work[:, -1].mean()

    def _locate_chunks(self) -> None:
        """Each dealt codeword's block and row within its block, in chunk order: what the
        received-set kernel reads (in order) for the lost chunks."""
        block = self.codebook.block_of[self._chunk_flat]
        self._chunk_block = block.astype(self._positions.dtype)
        self._chunk_row = (self._chunk_flat - self._first_codeword[block]).astype(np.int8)

    @property
    def layout(self) -> ParameterPartition:
        """Deprecated name of :attr:`parameter_partition` (``layout`` means the LWPD data
        layout elsewhere in lwpd)."""
        warnings.warn("CodedOptimizer.layout is now CodedOptimizer.parameter_partition", DeprecationWarning, stacklevel=2)
        return self.parameter_partition

    # ----------------------------------------------------------------- torch plumbing
    def _params(self) -> list[torch.Tensor]:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if not params:
            raise ValueError("the optimizer has no parameters")
        return params

    def _partition(self, params: list[torch.Tensor], scheme: str, model: Any, max_block: int | None) -> ParameterPartition:
        if model is None:
            names = [f"param{i}" for i in range(len(params))]
            return build_partition(names, [p.shape for p in params], sequence_groups([p.shape for p in params]), scheme, max_block)
        named = named_parameters_of(model)
        if [id(p) for _, p in named] != [id(p) for p in params]:
            raise ValueError("model must have exactly the optimizer's parameters, in the same order")
        return build_partition([n for n, _ in named], [p.shape for p in params], module_groups(model, named), scheme, max_block)

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
                if self._runs is not None:
                    self._locate_chunks()
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
            f"n_blocks={self.parameter_partition.partition.n_blocks}, n_workers={self.n_workers}, policy={self.policy!r}, "
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
        elif self.policy == "first_k":
            k = math.ceil(self.wait_for * flat.size)
            arrived = np.zeros(flat.size, dtype=bool)
            arrived[np.argsort(flat, kind="stable")[:k]] = True
            arrived &= np.isfinite(flat)
        else:
            limit = self.deadline
            if limit is None:
                limit = _defaults.TORCH_DEADLINE_FACTOR * float(np.median(finish[:, -1]))
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
        elif self.policy == "first_k":
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
        norms = self._check_grads(params)
        arrived, waited = self._arrivals()
        shortcut = self._spans is not None and _config.TORCH_EXACT_SHORTCUT
        lost_chunk = np.ones(len(self._chunk_indices), dtype=bool)
        lost_chunk[arrived] = False
        missing = np.flatnonzero(lost_chunk)
        lost = int(self._group_multiplicity[np.unique(missing // self.chunks)].sum()) if missing.size else 0
        if shortcut and lost <= self._tolerance:
            # No block lost more codewords than any loss it survives (every codeword arrived, or
            # few groups were lost): the decoded gradient is the gradient itself, already in
            # .grad. Nothing to encode, decode or assign.
            received = int(self._chunk_sizes[arrived].sum())
            return self._finish(loss, arrived, StepStats(received, len(self.codebook), 1.0,
                                                         0.0 if self.exact_grad_stats else None, waited))
        patterns = shortcut and self._runs is not None and _config.TORCH_PATTERN_PROJECTION
        if patterns:
            masks, counts, rank = self._received_patterns(missing)
            received, recovered = int(self._chunk_sizes[arrived].sum()), rank / self.parameter_partition.dim
            runs = self._runs_to_project(params, counts)
            if runs is not None:  # only a few blocks' received codewords do not span them
                error = self._project_in_place(params, runs, masks, norms)
                return self._finish(loss, arrived, StepStats(received, len(self.codebook), recovered, error, waited))
        g = flatten(params)  # flat order; the pattern path reorders inside its kernel
        if patterns:
            g_hat = self._project_by_patterns(g, masks)
        else:
            g = self.parameter_partition.to_blocks(g)
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
            g, g_hat = self.parameter_partition.from_blocks(g), self.parameter_partition.from_blocks(g_hat)
        error = None
        if self.exact_grad_stats:  # in float64: a finite float32 gradient's norm may overflow float32
            error = _relative(float(torch.linalg.vector_norm(g_hat - g, dtype=torch.float64)), norms)
        assign(params, g_hat, skip_missing=True)
        return self._finish(loss, arrived, StepStats(received, len(self.codebook), recovered, error, waited))

    def _finish(self, loss: Any, arrived: np.ndarray, stats: StepStats) -> Any:
        """Record the step and step the wrapped optimizer on the ``.grad`` now decoded."""
        self._last_arrived = arrived
        self.last_stats = stats
        self.optimizer.step()
        return loss

    @property
    def last_received(self) -> np.ndarray:
        """Codeword indices whose results arrived in the last step (sorted)."""
        if not self._last_arrived.size:
            return np.zeros(0, dtype=np.int64)
        return np.sort(torch.cat([self._chunk_indices[c] for c in self._last_arrived]).numpy())

    def _check_grads(self, params: list[torch.Tensor]) -> list[float]:
        """Refuse integer and non-finite gradients; return each gradient's norm (0 where a
        parameter has none). One norm per tensor: it is finite when every entry is, barring
        overflow, which the exact check then settles (and the norm is taken in float64)."""
        norms = []
        for name, p in zip(self.parameter_partition.names, params):
            if p.grad is None:
                norms.append(0.0)
                continue
            if p.grad.dtype not in (torch.float16, torch.float32, torch.float64):
                raise TypeError(f"CodedOptimizer codes float16, float32 and float64 gradients, got {p.grad.dtype} "
                                f"(in {name})")
            norm = float(torch.linalg.vector_norm(p.grad, dtype=torch.float32 if p.grad.dtype == torch.float16 else None))
            if not math.isfinite(norm):
                if not bool(torch.isfinite(p.grad).all()):
                    bad = [n for n, q in zip(self.parameter_partition.names, params) if q.grad is not None and not bool(torch.isfinite(q.grad).all())]
                    raise ValueError(f"the gradient has NaN or inf entries (in {', '.join(bad)}); nothing was stepped")
                norm = float(torch.linalg.vector_norm(p.grad, dtype=torch.float64))
            norms.append(norm)
        return norms

    def _received_patterns(self, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Each block's received set as a bit mask (bit ``r``: its ``r``-th codeword arrived),
        with every chunk but the ``missing`` ones arrived; how many blocks of each run have
        each set (run ``r``'s sets at ``_run_offset[r]`` on); the rank of all received
        codewords (every set's projector ``Q_S = A_S^+ A_S`` and rank are the run's, computed
        with it by the decoder's pivoted-Cholesky rank decisions)."""
        from lwpd._kernels import cpu

        n_parts = numba.get_num_threads()
        masks, counts = cpu.received_sets(self._full_masks, missing, self._chunk_starts, self._chunk_block, self._chunk_row,
                                          self._run_first, self._run_end, self._run_offset, int(self._run_offset[-1]),
                                          n_parts, work=self._full_masks.size)
        rank = 0
        for r, run in enumerate(self._runs):
            seen = counts[self._run_offset[r] : self._run_offset[r + 1]]
            rank += int(seen @ run.ranks)
        return masks, counts, rank

    def _project_by_patterns(self, g: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
        """``g_hat[block] = Q_S g[block]`` for every block (``g`` and the result in flat order;
        ``Q_S``: the projector of the block's received set, from :meth:`_received_patterns`).
        Decoding the exact results ``V_S g`` gives ``A_S^+ V_S^T V_S g``, the same vector, so
        nothing is encoded or decoded."""
        from lwpd._kernels import cpu

        g_np = g.detach().numpy()  # flat order: positions[p] is block-order coordinate p's place
        if g_np.dtype == np.float16:
            g_np = g_np.astype(np.float32)  # Numba has no float16 arithmetic
        g_hat = np.empty_like(g_np)
        for run in self._runs:
            # a received set that spans its block projects onto the whole block: a copy, no product
            cpu.project_by_patterns(run.first, run.size, masks[run.first_block : run.first_block + run.n_blocks],
                                    run.projectors, run.ranks == run.size, self._positions, g_np, g_hat,
                                    work=run.n_blocks * run.size**2)
        return torch.from_numpy(g_hat).to(g.dtype)

    def _runs_to_project(self, params: list[torch.Tensor], counts: np.ndarray) -> list[_PatternRun] | None:
        """The runs with blocks whose received codewords do not span them (every other
        block's projector is the identity; the counts say which runs have any, so the others
        cost no pass). ``None`` -- the flat kernel runs -- when more than
        ``_config.TORCH_IN_PLACE_MAX_FRACTION`` of the coordinates are in such blocks, or the
        gradients cannot be written in place: more than ``TORCH_IN_PLACE_MAX_TENSORS`` (the
        kernel is compiled per tuple length), one missing, non-contiguous, tracked by autograd
        (NumPy writes bypass its version counter) or listed twice, not all float32 or float64."""
        grads = [p.grad for p in params]
        if (len(grads) > _config.TORCH_IN_PLACE_MAX_TENSORS or any(g is None or not g.is_contiguous() or g.requires_grad
                                                                    or g.dtype != grads[0].dtype for g in grads)
                or grads[0].dtype not in (torch.float32, torch.float64) or len({g.data_ptr() for g in grads}) < len(grads)):
            return None
        short, coordinates = [], 0
        for r, run in enumerate(self._runs):
            not_spanning = int(counts[self._run_offset[r] : self._run_offset[r + 1]] @ (run.ranks < run.size))
            if not_spanning:
                short.append(run)
                coordinates += not_spanning * run.size
        if coordinates > _config.TORCH_IN_PLACE_MAX_FRACTION * self.parameter_partition.dim:
            return None
        return short

    def _project_in_place(self, params: list[torch.Tensor], runs: list[_PatternRun], masks: np.ndarray,
                          norms: list[float]) -> float | None:
        """``g[block] = Q_S g[block]`` in the parameters' own ``.grad`` tensors for the blocks of
        ``runs`` (:meth:`_runs_to_project`) whose received set ``S`` does not span them: no flat
        copy of the gradient is made or written back. Returns the relative error (``None``
        unless ``exact_grad_stats``; ``norms``: each gradient's norm)."""
        from lwpd._kernels import cpu

        views = tuple(p.grad.detach().view(-1).numpy() for p in params)
        n_parts = numba.get_num_threads()
        squared_change = 0.0
        for run in runs:
            run_masks = masks[run.first_block : run.first_block + run.n_blocks]
            squared_change += cpu.project_in_place(views, self._param_offsets, self._positions, run.first, run.size,
                                                   run_masks, run.ranks == run.size, run.projectors, n_parts,
                                                   work=run.n_blocks * run.size**2)
        return _relative(math.sqrt(squared_change), norms) if self.exact_grad_stats else None

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
                slot, coords, weights = self.codebook.internals.csr().selected_entries(rest)
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


def _relative(change: float, norms: list[float]) -> float:
    """``change / ||g||`` from the norms of the gradient's tensors (0 for ``g = 0``)."""
    norm = math.hypot(*norms)  # no overflow of the squares
    return change / norm if norm > 0 else 0.0


def _finished_chunk(index: int) -> int:
    """A simulated worker's task: report which chunk it finished (the master encodes the
    chunk's values from the gradient it already holds). Module level, so process pools can
    pickle it."""
    return index
