"""Numeric and kernel policy for lwpd, kept in one place.

Every kernel and every public function reads its flags, tolerances and thresholds from here,
so a change of policy (for example a stricter rank tolerance) is made once. The defaults a
user sees in signatures (workers, ``wait_for``, the adapters' settings) are in
:mod:`lwpd._defaults`.
"""

from __future__ import annotations

import numpy as np

#: LLVM fast-math flags for the Numba kernels. ``nnan`` and ``ninf`` are deliberately
#: absent: kernels must propagate NaN and inf faithfully, never assume them away.
FASTMATH: frozenset[str] = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: Compile the Numba kernels to the on-disk cache so later processes skip compilation.
CACHE: bool = True

#: Kernels run threaded only when their work (elements, outputs, or block-solve flops)
#: reaches this; below it the serial build is faster than starting the thread pool.
PARALLEL_MIN_WORK: int = 1 << 16

#: A batch of arrivals is folded into a decoder's per-codeword counts and sums by threads
#: (each owning a range of codewords) only when there are at least this many codewords and
#: ``PARALLEL_MIN_WORK`` arrivals: below it the 10-byte-per-codeword state sits in cache and
#: the serial scatter is faster (measured 0.65x threaded at 400,000 codewords, 1.1x at 1.6
#: million, 1.5x at 8 million, 2 threads, random arrival order).
SCATTER_PARALLEL_MIN_CODEWORDS: int = 1 << 21

#: Tiled encode: the dense per-block product (``b * m`` multiply-adds, contiguous and
#: vectorised) beats the padded sparse gather (``W * m``) when
#: ``block_size * itemsize <= DENSE_TILE_BYTES_PER_WEIGHT * W``. Measured on AMD EPYC with
#: projective bases: dense wins for b <= 8 (float64) and b <= 16 (float32) at W = 2.
DENSE_TILE_BYTES_PER_WEIGHT: int = 32

#: Floating dtypes that ``Codebook.encode`` keeps as given; anything else is cast to
#: :data:`DEFAULT_DTYPE`.
FLOAT_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_DTYPE: np.dtype = np.dtype(np.float64)

# ---------------------------------------------------------------------------- training
#: ``lwpd.train(acceleration="lbfgs")``: curvature pairs kept (scipy's L-BFGS-B default, ``maxcor``).
LBFGS_MEMORY: int = 10
#: ... the sufficient-decrease constant of its backtracking line search (Armijo's ``c1``) ...
ARMIJO_C1: float = 1e-4
#: ... the loss evaluations a step's search may make before it takes a plain gradient step ...
LINE_SEARCH_MAX_TRIALS: int = 20
#: ... and the rounding of the loss, in units of ``eps * |loss|``, below which a predicted
#: decrease cannot be told from noise (the trial is then accepted if its loss is no higher
#: than that rounding allows).
LINE_SEARCH_ROUNDING_ULPS: float = 100.0

# ---------------------------------------------------------------------------- problems
#: Largest side of the Gram matrix formed explicitly by :meth:`lipschitz`; beyond it the
#: spectral norm is found by Lanczos iteration (``scipy.sparse.linalg.eigsh``).
EXACT_GRAM_LIMIT: int = 2048

#: Relative safety margin applied to an iterative (Lanczos) estimate of ``||[X 1]||_2^2``,
#: which converges to the top eigenvalue from below.
LANCZOS_MARGIN: float = 1e-6

#: Decoder state (information matrices, sums of received values) is always float64.
DECODER_DTYPE: np.dtype = np.dtype(np.float64)

#: Arrivals per codeword (projection decoder, CPU): uint16 -- 10 bytes of state per codeword
#: with its float64 sum, not 16 (the whole weight-2 base over 10^7 coordinates is 8 x 10^7
#: codewords). A codeword may arrive up to 65,535 times between two resets; an arrival past
#: that is refused with OverflowError, the whole batch unchanged (the kernels check each
#: count before adding to it and undo a batch's counts, which are exact integers).
DECODER_COUNT_DTYPE: np.dtype = np.dtype(np.uint16)

#: Numerical rank of a block's information matrix ``A = V_S^T V_S`` (projection decoder):
#: pivoted Cholesky stops when the largest remaining Schur-complement diagonal is at most
#: ``RANK_RTOL`` times the largest diagonal of ``A`` -- roughly, directions whose singular
#: value relative to the largest is below ``sqrt(RANK_RTOL)`` (1e-6) count as unrecovered.
RANK_RTOL: float = 1e-12

#: Peeling: a codeword coefficient below this magnitude is treated as a structural zero.
PEEL_ZERO: float = 1e-300

#: Largest block (coordinates) the projection decoder accepts: its per-block information
#: matrix has ``b**2`` entries and each solve costs ``O(b**3)``.
MAX_DECODE_BLOCK: int = 4096

#: Tiled blocks that received the same set of base rows share one factorisation
#: (``lwpd._kernels.cpu.pattern_operators``) when the base pattern has at most this many
#: rows (the received sets are looked up in a table of ``2**rows`` entries) ...
PATTERN_MAX_ROWS: int = 16
#: ... and a solve covers at least this many blocks (below it, per-block solves are as fast)
PATTERN_MIN_BLOCKS: int = 256
#: ... and the sets repeat: each distinct set costs one factorisation per base row, so the
#: shared path runs when ``blocks >= PATTERN_MIN_SHARING * sets * rows``.
PATTERN_MIN_SHARING: float = 1.0

#: Tiled blocks assemble their information matrix densely, ``A = V^T diag(k) V`` over all
#: the tile's base rows (vectorised, branch-free), instead of scattering each received row's
#: ``w**2`` products into ``A`` (repeated ``+=`` on the same entries forms a dependency chain),
#: when ``m * b * (b + 3) / 2 <= DENSE_ASSEMBLY_RATIO * sum_r w_r**2`` for a tile of ``m`` rows
#: of weights ``w_r`` on ``b`` coordinates. Measured on the 64-row weight-2 base on blocks of 8:
#: a dense multiply-add costs about 1/25 of a scattered update.
DENSE_ASSEMBLY_RATIO: float = 16.0

#: Two codewords are proportional (the same projective point) when their normalised
#: correlation is within this of +-1.
PROPORTIONAL_ATOL: float = 1e-12

#: ``compress`` searches exhaustively (exact optimum) when the number of candidate subsets
#: is at most this; beyond it, greedy selection improved by swaps.
EXHAUSTIVE_LIMIT: int = 100_000

#: ``compress`` keeps an ``N x N`` table of pair costs; larger candidate sets are refused
#: with advice to compress the base codebook before tiling it.
COMPRESS_MAX_CANDIDATES: int = 8192

#: Two criterion values closer than this (absolute + relative) are a tie, broken by lower
#: total Hamming weight and then by lexicographic order of the codeword indices.
TIE_ATOL: float = 1e-12
TIE_RTOL: float = 1e-9

#: Local search after greedy selection: at most this many improving swaps, and this many
#: seeded random restarts of the swap search.
MAX_SWAPS: int = 10_000
COMPRESS_RESTARTS: int = 4

#: CUDA launches: threads per block, and a cap on blocks per grid (kernels are grid-stride,
#: so any grid covers any problem size).
CUDA_THREADS_PER_BLOCK: int = 256
CUDA_MAX_BLOCKS: int = 65_535

#: Shared-memory capacity (entries) for the base pattern of the uniform-block encode path,
#: ``W * m`` (padded weight times codewords per block); larger patterns use the CSR kernel.
CUDA_SHARED_PATTERN: int = 2048

#: Largest block the CUDA decoders accept: each thread block keeps its block's
#: information matrix in shared memory, sized at compile time.
CUDA_MAX_DECODE_BLOCK: int = 32

#: ``directional_derivatives`` densifies directions in chunks of at most this many entries
#: (``chunk_size * n_params``), bounding the memory of the vmapped jvp.
TORCH_JVP_CHUNK_ELEMENTS: int = 1 << 22

#: Schemes with memory (``memory=True``): the largest table of kept values (groups x rows,
#: e.g. workers x codewords), 12 bytes each; above it the scheme refuses memory.
MEMORY_MAX_ENTRIES: int = 1 << 26

#: Training: rounds a scheme's one-off setup tasks (e.g. moment encoding) are dispatched
#: again, to workers that failed, before ``lwpd.train`` gives up.
SETUP_MAX_ROUNDS: int = 100

#: Training with ``policy="async"`` gives up (RuntimeError) after this many times the number
#: of tasks of results in a row that could not be folded in (failed, rejected or too stale):
#: every worker is failing, and re-dispatching would loop forever.
ASYNC_MAX_UNFOLDED: int = 10

#: Training with ``policy="async"``: a task outstanding for more than this many times the
#: median duration of the results so far is taken as lost (a failed or hung worker): it is
#: cancelled, counted as dropped and dispatched again, so its worker is never held for good.
ASYNC_LOST_AFTER: float = 10.0

#: Seconds between redraws of a training progress bar written to a file or a pipe (not a
#: terminal or a notebook), where every redraw is a new line of the log.
PROGRESS_LOG_INTERVAL: float = 5.0

#: Training with ``policy="async"`` stops (with a warning) once nothing outstanding could
#: finish in this many fresh rounds of delays in a row: every worker keeps failing.
ASYNC_MAX_DEAD_ROUNDS: int = 100

#: Problems: directional derivatives touching more than this fraction of the features
#: compute (and cache, per row set and parameters) the product with all columns instead of
#: gathering the touched ones -- gathering a tenth of the columns of a C-ordered or CSR
#: matrix already reads most of it. A speed choice of the simulation only: ``lwpd.cost``
#: charges the touched columns either way.
ALL_COLUMNS_FRACTION: float = 0.1

#: Charging chunks (``lwpd.cost.chunk_supports``): the distinct coordinates each chunk
#: touches are counted on a chunks x coordinates bitmap while it has at most this many
#: entries (a thousand simulated workers deal thousands of chunks every step; a sort of
#: every (chunk, coordinate) pair costs several times more), by a sort beyond.
SUPPORT_BITMAP_MAX_ENTRIES: int = 1 << 24

#: Problems: row sets whose rows, scores and residuals are cached (all rows, and one entry
#: per read-only shard or shard piece of a scheme).
SCORE_CACHE_ENTRIES: int = 129
#: ... and the scores over all rows at this many recent parameters (an accelerated step forms
#: the next point's scores from the last two iterates', without a pass over the data).
RECENT_SCORES: int = 3
#: ... each at most this large (256 MiB): above it tasks read their shards, as without the reuse.
RECENT_SCORES_MAX_BYTES: int = 1 << 28

#: Dask clusters: a read-only array argument of at least this many bytes is shared data
#: (scattered to the workers once) rather than travelling with every task.
DASK_SCATTER_MIN_BYTES: int = 1024

#: Dask clusters: seconds to wait for a scheduler to answer (and a LocalCluster's workers to
#: start) before giving up with an error naming the address.
DASK_CONNECT_TIMEOUT: float = 10.0

#: Partitions and codebooks: the most coordinates a parameter vector may have (int64
#: offsets and every index array stay exact far below this).
MAX_DIM: int = 2**53

#: Codebooks: the range of the magnitude of every nonzero entry. A decoder works with the
#: information matrix ``V^T V``, whose entries are products of two entries: outside this range
#: they overflow to inf or underflow to 0 and the decode silently loses rank.
CODEBOOK_ENTRY_RANGE: tuple[float, float] = (1e-150, 1e150)

#: Decoders: the largest magnitude of a result folded in. Sums of many results and their
#: products with codeword entries must stay finite; a larger value is refused (state unchanged).
VALUE_MAX_MAGNITUDE: float = 1e150

#: Lagrange coded computing (lwpd.schemes.LCC): the largest relative error bound of the
#: interpolation a step may decode with. The bound is machine epsilon times the condition
#: number of the column-scaled Chebyshev-Vandermonde matrix of the arrived workers' points
#: (within a factor of about 10 of the worst error measured on clustered subsets); above it the
#: scheme waits for more results, or reports the step as not decodable (no estimate).
LCC_MAX_ERROR: float = 1e-8

#: LCC: right singular vectors a full check keeps to screen the next arrivals' checks
#: (``lwpd._lcc.ErrorBoundScreen``): at K = 384 of 1,024 workers, 32 leave two full SVDs per
#: step (at the threshold and where the points become decodable); 8 left three or four.
LCC_SCREEN_VECTORS: int = 32

#: LCC: rounds of block inverse (and power) iteration that find the screen's first vectors
#: of a step without an SVD.
LCC_SCREEN_ITERATIONS: int = 3

#: Robust decoding (lwpd.robust): values count as consistent with a block's code when the
#: least-squares residual is below this fraction of their norm.
ROBUST_TOL: float = 1e-8

#: Robust decoding inside LWPD: the absolute rounding allowance per value is this many
#: machine epsilons times the size of the terms a value sums (see LWPD's tasks).
ROBUST_ROUNDING_ULPS: float = 1e4

#: Robust decoding: ``I - H[T, T]`` with an eigenvalue at or below this is singular (removing
#: the rows ``T`` loses rank).
ROBUST_SPARE_TOL: float = 1e-9

#: Robust decoding: candidate row sets (smallest deleted residual first) refitted and checked
#: per size before trying a larger size.
ROBUST_CANDIDATES: int = 4

#: Robust decoding: block codes (per received pattern) kept per decoder.
ROBUST_CACHE_ENTRIES: int = 256

#: Dask clusters: shared objects kept scattered on the workers (the oldest is released first).
DASK_SHARED_ENTRIES: int = 64

#: torch CodedOptimizer: take the exact shortcut (a block whose codewords all arrived and span
#: it is the gradient itself; only the other blocks are encoded and decoded). False runs the
#: general path for every block (the tests compare the two).
TORCH_EXACT_SHORTCUT: bool = True

#: torch CodedOptimizer shortcut: encode only the codewords of the blocks to decode when they
#: are fewer than 1 / this of the codebook; otherwise encode all (one kernel) and gather.
TORCH_SUBSET_ENCODE_FRACTION: float = 8.0

#: torch CodedOptimizer shortcut: blocks are taken whole (not decoded) only when at least this
#: fraction of them qualifies; below it, filtering the arrivals costs more than it saves.
TORCH_SHORTCUT_MIN_BLOCKS: float = 0.25

#: torch CodedOptimizer with its default codebook: decode each run of equal blocks by the
#: projector of each block's received set, computed for every set with the run (``g_hat = P_S
#: g``, what decoding the exact results gives), instead of encoding and decoding. A step that
#: lost fewer codewords of every block than any loss the run's blocks survive needs no
#: projection at all. False keeps the block shortcut above.
TORCH_PATTERN_PROJECTION: bool = True

#: ... only when every block of a run has at most this many codewords (a run holds ``2**rows``
#: projectors) and there are at most ``TORCH_PATTERN_MAX_RUNS`` runs.
TORCH_PATTERN_MAX_ROWS: int = 12
TORCH_PATTERN_MAX_RUNS: int = 64

#: ... and in the parameters' own ``.grad`` tensors, block by block, when at most this fraction
#: of the coordinates lie in blocks whose received codewords do not span them (the others are
#: left as they are); above it, flattening, one flat kernel over every block and writing back
#: is cheaper (interleaved on the 1M-parameter MLP, 2 threads: in place 0.7 / 2.3 / 2.8 ms
#: against 1.2 / 2.4 / 2.8 ms at 5 / 37 / 63% of the coordinates, 3.9 against 3.4 at 100%).
TORCH_IN_PLACE_MAX_FRACTION: float = 0.6
#: ... and for models of at most this many parameter tensors (the in-place kernel takes them as
#: a tuple, compiled once per length; beyond it the flat kernel runs).
TORCH_IN_PLACE_MAX_TENSORS: int = 16
