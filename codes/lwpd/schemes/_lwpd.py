"""The LWPD scheme: workers return directional derivatives along projective codewords."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from lwpd import _config, _defaults
from lwpd._validation import check_bool, check_choice, check_fraction, check_int, check_real
from lwpd.codebook import Partition
from lwpd.constructions import block_codebook, identity_codebook, projective_block_base
from lwpd.cost import chunk_supports, derivative_ops, moment_derivative_ops, moment_setup_ops
from lwpd.schemes._base import RowMemory, Scheme, Task, curvature_shares, result_pair

LAYOUTS = ("sharded", "full", "moments")


def codeword_chunk(problem: Any, theta: np.ndarray, codebook: Any, indices: np.ndarray, rows: Any = None,
                    scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of a worker's codewords: ``(indices, scale <grad f_rows(theta), v_j>)``, so the
    master knows which codewords a result answers whichever chunk arrives first."""
    return indices, scale * problem.directional_derivatives(theta, codebook, indices, rows=rows)


def _moment_chunk(moments: Any, theta: np.ndarray, codebook: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A chunk from precomputed moments ``(A, b)`` (gradient ``A theta - b``): one row of ``A``
    per touched coordinate, never the data."""
    if moments is None:
        raise RuntimeError("the moments are not formed yet: run the scheme's setup_tasks first (lwpd.train does)")
    A, b = moments
    slot, coords, vals = codebook.internals.csr().selected_entries(indices)
    touched, inverse = np.unique(coords, return_inverse=True)
    g = A[touched] @ theta - b[touched]
    return indices, np.bincount(slot, weights=vals * g[inverse.reshape(-1)], minlength=indices.size)


def joint_chunks(fn: Any, arg_lists: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Several chunks of one worker in one call of ``fn`` (:func:`codeword_chunk` or
    :func:`_moment_chunk`; every argument but the codewords is the worker's, the same for
    all): the codewords of all evaluated at once, the values split back per chunk."""
    parts = [args[_CHUNK_INDICES] for args in arg_lists]
    merged = list(arg_lists[0])
    merged[_CHUNK_INDICES] = np.concatenate(parts)
    _, values = fn(*merged)
    ends = np.cumsum([part.size for part in parts]).tolist()
    return [(part, values[end - part.size:end]) for part, end in zip(parts, ends)]


def _split_evenly(values: np.ndarray, sections: int) -> list[np.ndarray]:
    """``np.array_split(values, sections)`` (the first ``len % sections`` parts one longer),
    by slicing: a tenth of its cost, paid for every worker at every step."""
    size, extra = divmod(values.size, sections)
    bounds = [i * size + min(i, extra) for i in range(sections + 1)]
    return [values[bounds[i]:bounds[i + 1]] for i in range(sections)]


_CHUNK_INDICES = 3  # where the chunk's codewords sit in the arguments of codeword_chunk and _moment_chunk


def _shard_moments(problem: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A worker's setup task: the moments of its shard (:meth:`LeastSquares.moments`)."""
    return problem.moments(rows)


def _shared_codewords(n_codewords: int, n_workers: int, share: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Which codewords each shard answers: every codeword goes to ``c = max(1, round(share *
    n_workers))`` consecutive shards from a random start, the starts spread evenly, so every
    shard answers about ``share`` of the codebook."""
    copies = max(1, round(share * n_workers))
    if copies >= n_workers:
        return [np.arange(n_codewords) for _ in range(n_workers)]
    start = np.empty(n_codewords, dtype=np.int64)
    start[rng.permutation(n_codewords)] = (np.arange(n_codewords) + rng.integers(n_workers)) % n_workers
    owners = (start[:, None] + np.arange(copies)) % n_workers  # (n_codewords, copies)
    return [np.flatnonzero((owners == w).any(axis=1)) for w in range(n_workers)]


def deal_codewords(
    block_of: np.ndarray, n_workers: int, chunks: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Deal codewords to workers: ``(codewords of each worker, its chunks)`` (private helper,
    shared by the LWPD scheme and the torch optimizer).

    Each block's codewords go to distinct workers (round-robin over the blocks in turn), so
    one straggler costs every block at most a codeword or so. A chunk is a random slice of
    its worker's codewords (sorted indices), so every chunk spans the blocks.
    """
    order = np.lexsort((rng.random(len(block_of)), block_of))
    owner = np.empty(len(order), dtype=np.int64)
    owner[order] = (np.arange(len(order)) + rng.integers(n_workers)) % n_workers
    # A stable sort by owner groups each worker's codewords in increasing index order.
    by_owner = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[by_owner], np.arange(n_workers + 1))
    worker_codewords = [by_owner[bounds[w] : bounds[w + 1]] for w in range(n_workers)]
    return worker_codewords, [
        [np.sort(chunk) for chunk in np.array_split(rng.permutation(part), chunks)] for part in worker_codewords
    ]


class LWPD(Scheme):
    """Lightweight projective derivative codes: tasks are codewords, grouped per worker.

    Each worker returns directional derivatives ``<grad, v_j>`` for its codewords (computed
    without forming the gradient) in ``chunks`` results a step; every result is folded into
    a :class:`~lwpd.ProjectionDecoder` (or peeling decoder) the moment it arrives, so an
    estimate exists from the first result on and a slow worker's finished chunks count.
    Where the workers' data comes from is the ``layout``:

    ``"sharded"`` (default)
        Worker ``w`` holds its shard ``S_w`` of the samples (about ``m / N`` rows), computes
        its forward pass once a step and returns ``c_w <grad f_{S_w}, v_j>`` (``c_w = N |S_w|
        / m``) for the codewords it answers -- by default the whole codebook, dealt into
        chunks in a fresh random order every step. The decoder stacks every received
        (shard, codeword) value as one row, so it returns the least-squares fit ``pinv(V_R)
        r_R`` over the received multiset ``R``; for an orthonormal codebook (the default) that
        is, per coordinate, the mean over the shards that answered it. **Recovery rule:** when
        every shard has answered the same spanning set of each block's codewords (every task
        arrived), the estimate is exactly the gradient ``sum_w (|S_w| / m) grad f_{S_w}``;
        otherwise it is that weighted fit: ignore-stragglers at the granularity of codewords
        instead of workers, unbiased when which shards answer does not depend on their data
        (a persistently slow worker biases it towards the fast workers' data, as it does
        ignore-stragglers). Compute: half
        a unit of forward pass plus the touched coordinates' share of the other half, about
        one unit a step with every codeword answered (:mod:`lwpd.cost`); a worker sends one
        float per codeword, ``share * len(codebook)`` a step.
    ``"full"``
        Every worker reads all ``m`` rows; the codebook is dealt over the workers (each
        codeword to one worker, each block's codewords to distinct workers). The decoder
        returns the projection of the exact gradient onto the received codewords. Honest
        cost: a worker's forward pass over all rows alone is ``N / 2`` units a step.
    ``"moments"`` (:class:`~lwpd.problems.LeastSquares` only)
        Moment encoding: before the first step each worker forms the moments of its shard
        (``X~_w^T X~_w``, ``X~_w^T y_w``), once, charged as setup (:meth:`setup_tasks`); the
        master sums them into ``A``, ``b`` with gradient ``A theta - b``. Each step the
        codebook is dealt over the workers as in ``"full"`` and a codeword costs one row of
        ``A`` per touched coordinate (``O(weight x n_params)``, never the rows). The setup is
        ``(n + 3) / 4`` units per worker, so it pays when a run needs more than about
        ``n / 4`` steps. The decoder
        returns the projection of the exact gradient onto the received codewords; with the
        peeling decoder this is the iterative decoding of LDPC moment encoding (Maity,
        Rawat, Mazumdar, ISIT 2019).

    Parameters
    ----------
    codebook : Codebook, optional
        The codebook (dimension ``n_params``). By default the projective base ``PG(b-1, q)``
        of weight ``<= max_weight`` over blocks of ``b = block_size`` coordinates,
        compressed to ``redundancy * b`` codewords per block, tiled over the parameters.
    layout : {"sharded", "full", "moments"}, default "sharded"
        Where the workers' data comes from (above).
    block_size : int, default 8
        Coordinates per block of the default codebook.
    q : int, default 3
        Field size of the projective base.
    max_weight : int, default 2
        Largest Hamming weight of a base codeword.
    redundancy : float or None, default 1.0
        Keep ``round(redundancy * block_size)`` codewords per block, chosen by ``compress``;
        1.0 keeps one per coordinate (the unit vectors: an equal-work configuration with
        ``layout="sharded"``). ``None`` keeps the whole projective base (``block_size**2``
        codewords for q = 3, weight <= 2).
    compress : {"coherence", "frame_potential", "mutual_information", "logdet"}, optional
        Compression criterion used with ``redundancy`` (default ``"logdet"``).
    decoder : {"projection", "peeling", "robust"}, default "projection"
        ``"robust"`` (layouts ``"full"`` and ``"moments"``): a
        :class:`~lwpd.robust.RobustDecoder`, which locates and excludes up to
        ``max_errors`` corrupted values per block (Byzantine workers) when a block receives
        more codewords than its dimension (``redundancy > 1``); results it excluded count
        in ``History.excluded``. It protects every step's results; the one-off setup of
        ``layout="moments"`` is trusted (a worker lying about its shard's moments corrupts
        the code itself, undetectably), so against Byzantine workers prefer ``"full"``.
        Every result of a step must be computed at the same parameters (``policy="async"``
        needs ``max_staleness=0``).
    wait_for : float, default 0.75
        Fraction of the tasks (chunks) a step waits for when it waits "until ready".
    chunks : int, optional
        Results per worker and step: a worker's codewords are split into ``chunks`` tasks
        run one after another, each folded in the moment it finishes (the forward pass is
        charged to the first). Default 4; a worker with fewer codewords sends one result per
        codeword.
    reassign : bool, default True
        Deal the codewords (and chunk orders) afresh every step, so a persistently slow
        worker does not erase the same directions every step.
    max_errors : int, default 1
        With ``decoder="robust"``: corrupted values per block to correct at most.
    unverified : {"drop", "use"}, default "drop"
        With ``decoder="robust"``: a block that received too few codewords beyond its rank to
        detect ``max_errors`` corrupted values (e.g. exactly its rank) is left out of the step
        (``"drop"``, like a failed block) or decoded unchecked (``"use"``); either way it is
        counted in ``History.unverified`` (:class:`~lwpd.robust.RobustDecoder`).
    memory : bool, default False
        Keep the latest value of every (shard, codeword) across steps -- of every codeword
        with ``layout="full"`` or ``"moments"`` -- and decode each step from the freshest
        value of every row: fresh where it arrived this step, the last one received
        otherwise, leaving out values older than ``max_age`` steps. A slow worker's
        unfinished chunks are not cancelled at the end of a step: they run on and are folded
        in when they arrive (:func:`lwpd.train`, which also chooses the step size for the
        staleness). With every task arriving it is the exact gradient; with persistent
        stragglers on non-i.i.d. shards it removes the bias of decoding only what arrived:
        the incremental aggregated gradient at the granularity of (shard, codeword). It costs
        the master ``n_workers * len(codebook)`` stored values (sharded layout). Not with
        ``decoder="robust"`` (stale values would look like lies).
    max_age : int, default 20
        With ``memory=True``: the oldest value (steps since its task was dispatched) a step
        may use; a task whose result would be older is cancelled and its worker freed.
    share : float, default 1.0
        With ``layout="sharded"``: the fraction of the codebook each shard answers per step
        (each codeword by ``max(1, round(share * N))`` shards: the effective share is that
        number over ``N``; needs ``reassign=True``). Below 1 the gradient is compressed:
        fewer floats and less derivative work, a noisier estimate.

    Examples
    --------
    >>> from lwpd.schemes import LWPD
    >>> LWPD()
    LWPD(layout='sharded', block_size=8, q=3, max_weight=2, redundancy=1.0, compress='logdet', decoder='projection', wait_for=0.75, chunks=None, reassign=True, share=1.0)
    """

    name = "lwpd"

    @property
    def consistent_results(self) -> bool:
        """True with ``decoder="robust"``: a step's results must all be computed at the same
        parameters (values at different parameters look like corrupted ones)."""
        return self.decoder == "robust"

    def __init__(
        self,
        codebook: Any = None,
        layout: str = "sharded",
        block_size: int = 8,
        q: int = 3,
        max_weight: int = 2,
        redundancy: float | None = 1.0,
        compress: str | None = None,
        decoder: str = "projection",
        wait_for: float = _defaults.WAIT_FOR,
        chunks: int | None = None,
        reassign: bool = True,
        share: float = 1.0,
        max_errors: int = 1,
        memory: bool = False,
        max_age: int = _defaults.MEMORY_MAX_AGE,
        unverified: str = "drop",
    ) -> None:

        from lwpd.codebook import Codebook

        if codebook is not None and not isinstance(codebook, Codebook):
            raise TypeError(f"codebook must be a lwpd.Codebook or None, got {type(codebook).__name__}")
        self.codebook = codebook
        self.layout = check_choice("layout", layout, LAYOUTS)
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.q = check_int("q", q, minimum=2)
        self.max_weight = check_int("max_weight", max_weight, minimum=1)
        self.redundancy = None if redundancy is None else check_real("redundancy", redundancy, positive=True)
        if compress is not None:
            check_choice("compress", compress, ("coherence", "frame_potential", "mutual_information", "logdet"))
            if redundancy is None:
                raise ValueError("compress needs redundancy (how many codewords per coordinate to keep)")
        self.compress = compress or ("logdet" if redundancy is not None else None)
        self.decoder = check_choice("decoder", decoder, ("projection", "peeling", "robust"))
        self.max_errors = check_int("max_errors", max_errors, minimum=0)
        from lwpd.robust import UNVERIFIED

        self.unverified = check_choice("unverified", unverified, UNVERIFIED)
        if self.unverified != "drop" and self.decoder != "robust":
            raise ValueError(f"unverified={self.unverified!r} applies to decoder='robust' only")
        self.wait_for = check_fraction("wait_for", wait_for)
        self.chunks = None if chunks is None else check_int("chunks", chunks, minimum=1)
        self.reassign = check_bool("reassign", reassign)
        share = check_fraction("share", share)
        if share != 1.0 and self.layout != "sharded":
            raise ValueError(f"share applies to layout='sharded' only (each codeword is answered once with layout={self.layout!r})")
        if share != 1.0 and not self.reassign:
            raise ValueError("share < 1 needs reassign=True: a fixed partial share would answer each codeword from the "
                             "same shards every step, a biased estimate")
        self.share = share
        self.memory = check_bool("memory", memory)
        self.max_age = check_int("max_age", max_age, minimum=0)
        if self.memory:
            self.name = "lwpd-memory"
        if self.memory and self.decoder == "robust":
            raise ValueError("memory=True cannot be used with decoder='robust': values kept from earlier steps "
                             "differ from this step's as corrupted values do; use the projection or peeling decoder")
        if self.decoder != "projection" and self.layout == "sharded":
            raise ValueError(f"decoder={self.decoder!r} needs layout='full' or 'moments': with layout='sharded' the "
                             "shards' values of one codeword differ, and only the projection decoder pools them")

    def _build_codebook(self) -> Any:

        n = self.problem.n_params
        size = min(self.block_size, n)
        keep = None if self.redundancy is None else max(1, round(self.redundancy * size))
        base = projective_block_base(size, q=self.q, max_weight=self.max_weight, keep=keep, criterion=self.compress)
        return block_codebook(base, Partition.uniform(n, size))

    def _bind(self, rng: np.random.Generator) -> None:
        from lwpd.decoders import PeelingDecoder, ProjectionDecoder
        from lwpd.problems import LeastSquares

        n = self.problem.n_params
        if self.layout == "moments" and not isinstance(self.problem, LeastSquares):
            raise TypeError(f"layout='moments' applies to LeastSquares problems only, got {type(self.problem).__name__}")
        if self.codebook is not None and self.codebook.dim != n:
            raise ValueError(f"codebook must have dimension {n} (the problem's n_params), got {self.codebook.dim}")
        self.codebook_ = self.codebook if self.codebook is not None else self._build_codebook()
        if self.layout != "sharded" and len(self.codebook_) < self.n_workers:
            raise ValueError(f"the codebook has {len(self.codebook_)} codewords, fewer than n_workers ({self.n_workers}): "
                             f"with layout={self.layout!r} each worker needs a codeword (layout='sharded' does not)")
        self._check_share()
        self._rng = rng
        self._shards = self.shards_
        sizes = np.array([rows.size for rows in self._shards], dtype=float)
        self._scale = sizes * self.n_workers / self.problem.n_samples  # sum_w (|S_w|/m) g_w = mean_w c_w g_w
        self._moments = None
        self._moment_parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._chunks_ = 4 if self.chunks is None else self.chunks
        self._deal()
        self._folded = []
        if self.decoder == "robust":
            from lwpd.robust import RobustDecoder

            self._decoder = RobustDecoder(self.codebook_, max_errors=self.max_errors, unverified=self.unverified)
            self._check_radius()
            # The size of the terms a value sums, for the decoder's rounding allowance:
            # ||grad f(theta)|| <= L ||theta|| + ||grad f(0)||, times the largest codeword L1 norm.
            csr = self.codebook_.internals.csr()
            widest = float(np.abs(csr.data).max()) * float(self.codebook_.weights.max()) if csr.data.size else 0.0
            self._term_scale = (self.problem.lipschitz(), float(np.linalg.norm(self.problem.gradient(np.zeros(n)))),
                                widest)
        else:
            self._decoder = (ProjectionDecoder if self.decoder == "projection" else PeelingDecoder)(self.codebook_)
        if self.memory:
            groups = self.n_workers if self.layout == "sharded" else 1
            self._memory = RowMemory(groups, len(self.codebook_), "the latest value of every (shard, codeword)")
            # each row's weight in the step rule: its shard's curvature share (one group of all rows: 1)
            self._curvature = curvature_shares(self.problem, self._shards) if groups > 1 else np.ones(1)
            self._step = -1
            self._staleness = (0.0, 0.0)

    def _check_share(self) -> None:
        """Every worker must answer something: each codeword goes to ``max(1, round(share *
        n_workers))`` shards (:func:`_shared_codewords`)."""
        answers = max(1, round(self.share * self.n_workers)) * len(self.codebook_)
        if answers < self.n_workers:
            raise ValueError(f"share={self.share} gives {answers} answers (codewords x max(1, round(share * n_workers))), "
                             f"fewer than n_workers ({self.n_workers}): some worker would answer nothing; raise share")

    def _check_radius(self) -> None:
        """Warn when one worker holds more codewords of a block than the robust decoder
        corrects: a single Byzantine worker would then make every such block fail."""
        import warnings

        from lwpd.robust import block_code_limits

        detects = block_code_limits(self.codebook_, max_errors=self.max_errors)[1]
        blind = np.flatnonzero(detects < self.max_errors)
        if blind.size and self.unverified == "drop":
            warnings.warn(f"{blind.size} block(s) ({blind[:10].tolist()}{'...' if blind.size > 10 else ''}) cannot "
                          f"detect max_errors={self.max_errors} corrupted values even when every codeword arrives, so "
                          "they will be left out of every step (History.unverified): raise the redundancy, choose a "
                          "block_size that divides the parameters, or pass unverified='use'", UserWarning, stacklevel=4)
        per_block = np.bincount(self.codebook_.block_of)
        most = int(math.ceil(per_block.max() / self.n_workers))
        if most > self.max_errors:
            warnings.warn(f"each block's {int(per_block.max())} codewords are dealt over {self.n_workers} workers, so "
                          f"one worker holds up to {most} codewords of a block: a single Byzantine worker makes up to "
                          f"{most} corrupted values per block, more than max_errors={self.max_errors} corrects. Raise "
                          f"max_errors (and the redundancy) or use more workers", UserWarning, stacklevel=4)

    def _worker_shares(self) -> list[np.ndarray]:
        """The codewords each worker answers this step (before splitting into chunks)."""
        if self.layout == "sharded":
            return _shared_codewords(len(self.codebook_), self.n_workers, self.share, self._rng)
        return deal_codewords(self.codebook_.block_of, self.n_workers, 1, self._rng)[0]

    def _deal(self) -> None:
        """Assign the codewords to workers, split each worker's share into chunks, and
        charge every chunk by :mod:`lwpd.cost`."""
        shares = self._worker_shares()
        # At most `chunks` per worker, one per codeword for a worker with fewer: a worker dealt
        # more codewords than the rest (codewords do not divide evenly) sends its first early,
        # so no codeword rides on the slowest task every step.
        parts = [[np.sort(c) for c in _split_evenly(self._rng.permutation(share), min(self._chunks_, share.size))]
                 for share in shares]
        self._worker_codewords = shares
        n, m = self.problem.n_params, self.problem.n_samples
        # every chunk charged in one vectorised pass (a thousand workers deal thousands of chunks a step)
        flat = [chunk for chunks in parts for chunk in chunks]
        per_worker = np.array([len(chunks) for chunks in parts], dtype=np.int64)
        worker_of = np.repeat(np.arange(len(parts)), per_worker)
        first_of_worker = np.arange(len(flat)) == np.repeat(np.cumsum(per_worker) - per_worker, per_worker)
        touched, weight = chunk_supports(self.codebook_, flat)
        if self.layout == "moments":
            ops = alone = moment_derivative_ops(n, touched, weight)
        else:
            rows = np.array([shard.size for shard in self._shards])[worker_of] if self.layout == "sharded" else m
            ops = derivative_ops(rows, n, touched, weight, forward=first_of_worker)
            alone = derivative_ops(rows, n, touched, weight)  # re-run on its own (async): its own forward pass
        ops = np.broadcast_to(self._units(ops), len(flat)).tolist()
        alone = np.broadcast_to(self._units(alone), len(flat)).tolist()
        charged = list(zip(flat, ops, alone))
        ends = np.cumsum(per_worker).tolist()
        self._chunks = [charged[end - count:end] for end, count in zip(ends, per_worker.tolist())]
        self._n_tasks = len(flat)  # read by ready() after every arrival

    def setup_tasks(self) -> list[Task]:
        """With ``layout="moments"``: each worker forms its shard's moments, once. Charged
        :func:`lwpd.cost.moment_setup_ops`, and the moments travel twice (to the master, and
        the sums back to every worker): ``2 (n (n + 1) / 2 + n)`` floats."""
        if self.layout != "moments":
            return []
        n = self.problem.n_params
        floats = 2 * (n * (n + 1) / 2 + n)
        return [Task(w, _shard_moments, (self.problem, rows), self._units(moment_setup_ops(rows.size, n)), floats=floats,
                     key=("setup", w)) for w, rows in enumerate(self._shards)]

    def fold_setup(self, worker: int, result: Any) -> None:
        if self.layout != "moments":
            return super().fold_setup(worker, result)
        self._moment_parts.setdefault(int(worker), result)
        if len(self._moment_parts) == self.n_workers:
            M = sum(part[0] for part in self._moment_parts.values())
            c = sum(part[1] for part in self._moment_parts.values())
            m, p = self.problem.n_samples, self.problem
            A = M / m
            penalised = np.ones(p.n_params, dtype=bool)
            if p.fit_intercept:
                penalised[p.n_features] = False
            A[np.diag_indices(p.n_params)] += p.alpha * penalised
            b = c / m
            A.flags.writeable = b.flags.writeable = False  # shared data from now on (a Dask cluster scatters it once)
            self._moments = (A, b)

    def tasks(self, theta: np.ndarray) -> list[Task]:
        if self.decoder == "robust":
            lipschitz, slope0, widest = self._term_scale
            terms = lipschitz * float(np.linalg.norm(theta)) + slope0
            self._decoder.atol = _config.ROBUST_ROUNDING_ULPS * np.finfo(float).eps * terms * widest
        out = []
        fn = _moment_chunk if self.layout == "moments" else codeword_chunk
        for worker, chunks in enumerate(self._chunks):
            joint = functools.partial(joint_chunks, fn)  # one per worker: its chunks may be computed together
            for c, (indices, work, rerun_work) in enumerate(chunks):
                if self.layout == "moments":
                    args = (self._moments, theta, self.codebook_, indices)
                elif self.layout == "sharded":
                    args = (self.problem, theta, self.codebook_, indices, self._shards[worker], float(self._scale[worker]))
                else:
                    args = (self.problem, theta, self.codebook_, indices)
                out.append(Task(worker, fn, args, work, floats=float(indices.size), key=(worker, c),
                                rerun_work=rerun_work, joint=joint))
        return out

    def begin(self) -> None:
        if self.reassign:
            self._deal()
        if self.memory:
            self._step += 1  # the memory is kept: the decoder is rebuilt from it by estimate()
        else:
            self._decoder.reset()
        self._folded: list[np.ndarray] = []  # the codewords of each result folded in this step

    def fold(self, worker: int, result: Any, age: int = 0) -> None:
        indices, values = result_pair(result, len(self.codebook_))
        if self.memory:
            group = int(worker) if self.layout == "sharded" else 0
            self._memory.store(group, indices, values, self._step - int(age))
        else:
            self._decoder.update(indices, values)
        self._folded.append(indices)

    def excluded(self) -> int:
        """Results of this step the robust decoder left out, in part or whole: a value located
        as corrupted, or a value of a block that failed (more corrupted values than it corrects)."""
        if self.decoder != "robust":
            return 0
        report = self._decoder.report
        if not report.rejected.size and not report.failed_blocks.size:
            return 0
        block_of = self.codebook_.block_of
        return sum(bool(np.isin(indices, report.rejected).any() or np.isin(block_of[indices], report.failed_blocks).any())
                   for indices in self._folded)

    def unverified_blocks(self) -> int:
        """Blocks of the last estimate the robust decoder could not verify (too few spare
        codewords to detect ``max_errors`` corrupted values): left out, or with
        ``unverified="use"`` taken unchecked."""
        return int(self._decoder.report.unverified_blocks.size) if self.decoder == "robust" else 0

    @property
    def report(self) -> Any:
        """With ``decoder="robust"``: the :class:`~lwpd.robust.RobustReport` of the last estimate."""
        if self.decoder != "robust":
            raise AttributeError("report exists with decoder='robust' only")
        return self._decoder.report

    def estimate(self) -> np.ndarray | None:
        if self.memory:
            self._decode_memory()
        return self._decoder.estimate() if self._decoder.n_received else None

    def _decode_memory(self) -> None:
        """Fill the decoder with the freshest usable value of every (shard, codeword) row and
        note the rows' ages: per codeword ``sum_g c_g age_g`` over its rows (``c_g`` the
        shard's curvature share), the worst codeword's being the staleness the step rule reads."""
        usable = self._memory.usable(self._step, self.max_age)
        groups, codewords = np.nonzero(usable)
        self._decoder.reset()
        if not codewords.size:
            self._staleness = (0.0, 0.0)
            return
        self._decoder.update(codewords, self._memory.values[groups, codewords])
        ages = self._memory.ages(self._step)[groups, codewords].astype(float)
        weighted = np.bincount(codewords, weights=self._curvature[groups] * ages, minlength=usable.shape[1])
        self._staleness = (float(weighted.max()), float(ages.max()))

    def staleness(self) -> tuple[float, float]:
        """With ``memory=True``: ``(staleness, oldest)`` of the last estimate in steps -- the
        largest over codewords of ``sum_g c_g age_g`` over the codeword's rows (``c_g`` the
        shard's curvature share), and the oldest row."""
        return self._staleness if self.memory else (0.0, 0.0)

    def ready(self, received: int) -> bool:
        return received >= math.ceil(self.wait_for * self._n_tasks)

    @property
    def exact_when_complete(self) -> bool:  # type: ignore[override]
        """Without memory or robust decoding, with the default codebook (which spans every
        block) and, for the sharded layout, ``share=1``."""
        return (not self.memory and self.decoder != "robust" and self.codebook is None
                and (self.layout != "sharded" or self.share >= 1.0))

    def exact(self) -> bool:
        """Without memory or robust decoding: the received codewords span every block, and --
        with ``layout="sharded"`` -- every task arrived with every shard answering the whole
        codebook (the recovery rule in the class notes)."""
        if self.memory or self.decoder == "robust" or not self._decoder.n_received:
            return False
        if self.layout == "sharded" and (len(self._folded) < self._n_tasks
                                         or max(1, round(self.share * self.n_workers)) < self.n_workers):
            return False
        return self._decoder.recovered_fraction() >= 1.0

    def recovered_fraction(self) -> float:
        """Fraction of the gradient's dimensions the results of this step span (or peel)."""
        return self._decoder.recovered_fraction()

    def __repr__(self) -> str:
        if self.codebook is not None:
            return f"LWPD(codebook={self.codebook!r}, layout={self.layout!r}, decoder={self.decoder!r})"
        return (
            f"LWPD(layout={self.layout!r}, block_size={self.block_size}, q={self.q}, max_weight={self.max_weight}, "
            f"redundancy={self.redundancy}, compress={self.compress!r}, decoder={self.decoder!r}, "
            f"wait_for={self.wait_for}, chunks={self.chunks}, reassign={self.reassign}, share={self.share}"
            + (f", max_errors={self.max_errors}" if self.decoder == "robust" else "")
            + (f", unverified={self.unverified!r}" if self.unverified != "drop" else "")
            + (f", memory=True, max_age={self.max_age})" if self.memory else ")")
        )


class RandomK(LWPD):
    """Random-k sparsified ignore-stragglers, streamed: the baseline at the floats of
    ``LWPD(share=...)``.

    Every step each worker picks ``k = round(share * n_params)`` coordinates uniformly at
    random, independently of the other workers, computes the partial derivatives of its
    shard's gradient at those coordinates and streams them in ``chunks`` results, each
    folded in as it arrives; the master takes, per coordinate, the mean over the shards
    that answered it (coordinates nobody answered stay 0), and steps once ``wait_for`` of the
    chunks are in. It sends ``k`` floats per worker and step, as ``LWPD(share=share)`` does,
    and is charged the same way (:mod:`lwpd.cost`: the forward pass over the shard and the
    chosen coordinates only, the cheapest honest price for random-k). The one difference
    from ``LWPD(share=...)`` with its default codebook (the unit vectors) is the allocation:
    LWPD has every coordinate answered by exactly ``round(share * N)`` shards, random-k by a
    binomial number of them, possibly none.

    Parameters
    ----------
    share : float, default 0.5
        Fraction of the coordinates each worker sends per step, in ``(0, 1]``.
    wait_for : float, default 0.75
        Fraction of the chunks a step waits for when it waits "until ready".
    chunks : int, optional
        Results per worker and step (default 4; a worker with fewer coordinates sends one per coordinate).

    Examples
    --------
    >>> from lwpd.schemes import RandomK
    >>> RandomK(share=0.25).name
    'randk'
    """

    name = "randk"

    def __init__(self, share: float = 0.5, wait_for: float = _defaults.WAIT_FOR, chunks: int | None = None) -> None:
        super().__init__(redundancy=1.0, wait_for=wait_for, chunks=chunks, share=share)

    def _build_codebook(self) -> Any:

        n = self.problem.n_params
        size = min(self.block_size, n)
        return block_codebook(identity_codebook(size), Partition.uniform(n, size))

    def _check_share(self) -> None:
        """Nothing to check: every worker answers at least one coordinate (``_worker_shares``)."""

    exact_when_complete = False  # type: ignore[assignment]

    def exact(self) -> bool:
        """Never: a coordinate's value is the mean over the shards that drew it, not over all."""
        return False

    def _worker_shares(self) -> list[np.ndarray]:
        n = len(self.codebook_)
        k = max(1, round(self.share * n))
        return [np.sort(self._rng.choice(n, size=k, replace=False)) for _ in range(self.n_workers)]

    def __repr__(self) -> str:
        return f"RandomK(share={self.share}, wait_for={self.wait_for}, chunks={self.chunks})"
