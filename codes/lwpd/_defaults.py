"""The defaults a user meets in lwpd's signatures, kept in one place (numeric and kernel
policy is in :mod:`lwpd._config`).

Where the entry points share a notion they share its default: the number of workers of a
simulated cluster (``lwpd run``, the scikit-learn wrappers, ``CodedOptimizer``) and the
fraction of its work a partial-decoding scheme waits for (the schemes built by name,
``CodedOptimizer``'s ``"first_k"``).
"""

from __future__ import annotations

#: Workers of a simulated cluster when none is given: ``lwpd run --workers``, the
#: scikit-learn wrappers' ``n_workers`` and ``CodedOptimizer``'s ``n_workers``.
WORKERS: int = 16

#: Fraction of a step's work that a scheme decoding partial results waits for under a
#: ``"first_k"`` policy: the schemes built by name (:mod:`lwpd.schemes.registry`),
#: ``LWPD``, ``IgnoreStragglers``, ``RandomK``, ``ReplicatedLWPD`` and ``CodedOptimizer``.
WAIT_FOR: float = 0.75

#: Default measurement noise (standard deviation) of the log-det information criterion.
DEFAULT_NOISE: float = 1.0

#: Default number of Monte Carlo straggler patterns in ``captured_energy``.
DEFAULT_ENERGY_SAMPLES: int = 256

#: torch adapters (``lwpd.torch``): largest coordinate block ``CodedOptimizer`` codes when
#: given a partition scheme by name (larger blocks are halved recursively), and how many
#: codewords per coordinate of each block it keeps (chosen by ``compress``, criterion
#: "logdet"). The per-step decode costs ``O(b^2)`` per coordinate (an ``O(b^3)`` solve per
#: block); on a 1M-parameter MLP with 20% failing workers, blocks of <= 4 decoded both faster
#: and with a smaller gradient error than blocks of <= 8 (benchmarks/bench_torch.py).
TORCH_MAX_BLOCK: int = 4
TORCH_REDUNDANCY: float = 2.0

#: ``CodedOptimizer(policy="deadline")`` without an explicit deadline waits this multiple
#: of the median worker's finishing time (virtual seconds) each step.
TORCH_DEADLINE_FACTOR: float = 1.25

#: Gradient steps with stale results (``policy="async"``) use this fraction of the
#: ``1 / L`` step of synchronous gradient descent.
ASYNC_STEP_FRACTION: float = 0.3

#: scikit-learn adapters: the loss must fall by ``tol * max(1, |loss|)`` over this many
#: steps, else training stops (like ``n_iter_no_change`` of scikit-learn's SGD).
SKLEARN_N_ITER_NO_CHANGE: int = 5

#: scikit-learn adapters: a fit whose loss exceeds this multiple of its starting loss (or 1)
#: has diverged and raises FloatingPointError.
SKLEARN_DIVERGENCE_FACTOR: float = 1e6

#: scikit-learn adapters: rounds of the delay model drawn to choose the automatic deadline.
SKLEARN_DEADLINE_ROUNDS: int = 64

#: Placement (lwpd.placement): a regression target is cut into this many quantile bins,
#: which ``"dirichlet:alpha=A"`` treats as its classes.
PLACEMENT_REGRESSION_BINS: int = 10

#: Schemes with memory: default ``max_age``, the oldest kept value (steps since its task was
#: dispatched) a step may use. Persistent 10x stragglers deliver every ~10 steps.
MEMORY_MAX_AGE: int = 20
