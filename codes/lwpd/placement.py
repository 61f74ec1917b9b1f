"""Data placement: which rows of the data each worker holds.

Every scheme of :mod:`lwpd.schemes` builds its partitions from the same ``N`` shards (one
per worker), chosen here: data-parallel schemes give worker ``w`` shard ``w``; gradient
coding and partial gradient coding use the shards as their ``N`` partitions; replication
gives each group of ``r`` workers the union of their ``r`` shards; LCC cuts its ``K``
blocks from the rows in shard order; LWPD's sharded layout answers codewords on shard
``w``. :func:`lwpd.train` takes the placement as ``placement=``.

Placements
----------
``"iid"`` (default)
    A seeded shuffle cut into ``N`` near-equal shards: every shard is a random sample of
    the data, the regime where ignoring stragglers is unbiased.
``"sorted"``
    The rows in order of label (of target, for regression; ties in row order), cut into
    ``N`` contiguous near-equal shards: each worker holds one or two classes.
``"dirichlet:alpha=A"``
    Label skew: worker ``w`` draws class proportions ``q_w ~ Dirichlet(A, ..., A)`` over
    the ``C`` classes and fills its near-equal shard with rows drawn without replacement
    from the classes in those proportions (a class that runs out is dropped from the draw),
    workers in a random order. This is the non-IID partition of Hsu, Qi and Brown
    (arXiv:1909.06335, 2019), who draw ``q ~ Dir(alpha p)`` with ``p`` the class prior:
    with ``C`` balanced classes their ``alpha`` is ``C * A``. Small ``A`` (0.1) gives each
    worker mostly one class; large ``A`` approaches ``"iid"``. For a regression target the
    classes are its ``PLACEMENT_REGRESSION_BINS`` quantile bins (deciles).
a sequence of ``N`` index arrays
    Worker ``w`` holds rows ``placement[w]``. Together they must hold every row exactly
    once (a partition), so that every scheme's full gradient is the problem's.

Shards are sorted, read-only ``int64`` arrays (read-only lets a problem cache their rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lwpd import _defaults
from lwpd._validation import as_index_array, as_rng, check_int

__all__ = ["PLACEMENTS", "check_placement", "label_counts", "shard_rows"]

#: The named placements (``"dirichlet"`` takes ``:alpha=A``).
PLACEMENTS = ("iid", "sorted", "dirichlet")


def check_placement(placement: Any) -> str | list[np.ndarray]:
    """Validate a placement: a name from :data:`PLACEMENTS` (normalised, e.g.
    ``"dirichlet:alpha=0.1"``) or a sequence of index arrays (returned as a list of arrays,
    checked against the data by :func:`shard_rows`).

    Examples
    --------
    >>> check_placement("dirichlet:alpha=0.5")
    'dirichlet:alpha=0.5'
    >>> check_placement("sorted")
    'sorted'
    """
    if isinstance(placement, str):
        _parse(placement)
        return placement
    if isinstance(placement, np.ndarray) and placement.ndim != 2 and placement.dtype != object:
        raise TypeError("placement must be 'iid', 'sorted', 'dirichlet:alpha=A' or a sequence of one index array per "
                        f"worker, got an array of shape {placement.shape}")
    if not isinstance(placement, (Sequence, np.ndarray)) or isinstance(placement, (bytes, bytearray)):
        raise TypeError("placement must be 'iid', 'sorted', 'dirichlet:alpha=A' or a sequence of one index array per "
                        f"worker, got {type(placement).__name__}")
    return [np.asarray(part) for part in placement]


def _parse(spec: str) -> tuple[str, float | None]:
    """``(name, alpha)`` of a placement string; ``ValueError`` naming ``placement``."""
    name, sep, params = spec.partition(":")
    if name not in PLACEMENTS:
        raise ValueError(f"placement must be one of 'iid', 'sorted', 'dirichlet:alpha=A' or a sequence of index arrays; "
                         f"got {spec!r}")
    if name != "dirichlet":
        if sep:
            raise ValueError(f"placement {name!r} takes no parameters, got {spec!r}")
        return name, None
    key, eq, value = params.partition("=")
    if key.strip() != "alpha" or not eq:
        raise ValueError(f"placement 'dirichlet' needs its concentration as 'dirichlet:alpha=A' (A > 0), got {spec!r}")
    try:
        alpha = float(value)
    except ValueError:
        raise ValueError(f"placement 'dirichlet': alpha must be a number, got {value!r}") from None
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"placement 'dirichlet': alpha must be finite and > 0, got {value!r}")
    return name, alpha


def _labels(problem: Any) -> np.ndarray:
    """What the label-aware placements sort and group by: a classifier's class index, or a
    regression target (``problem.y``)."""
    y = getattr(problem, "y", None)
    if y is None:
        raise TypeError(f"placement by label needs a problem with targets y, got {type(problem).__name__}")
    return np.asarray(y).reshape(-1)


def _classes(problem: Any) -> np.ndarray:
    """Class index of every row: the labels of a classifier, the quantile bin of a
    regression target."""
    y = _labels(problem)
    if hasattr(problem, "classes_"):
        return np.unique(y, return_inverse=True)[1].reshape(-1)
    bins = _defaults.PLACEMENT_REGRESSION_BINS
    edges = np.quantile(y, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(np.searchsorted(edges, y, side="right"), return_inverse=True)[1].reshape(-1)


def _sizes(n_samples: int, n_workers: int) -> np.ndarray:
    """Near-equal shard sizes (the first ``n_samples % n_workers`` shards one row larger)."""
    return np.array([part.size for part in np.array_split(np.arange(n_samples), n_workers)], dtype=np.int64)


def _dirichlet(classes: np.ndarray, n_workers: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Label-skewed shards of near-equal size (see the module docstring)."""
    n_classes = int(classes.max()) + 1
    pools = [rng.permutation(np.flatnonzero(classes == c)) for c in range(n_classes)]
    taken = np.zeros(n_classes, dtype=np.int64)
    sizes = _sizes(classes.size, n_workers)
    proportions = rng.dirichlet(np.full(n_classes, alpha), size=n_workers)
    shards: list[np.ndarray] = [np.zeros(0, np.int64)] * n_workers
    for worker in rng.permutation(n_workers):
        need = int(sizes[worker])
        parts = []
        while need:
            left = np.array([pool.size for pool in pools]) - taken
            p = proportions[worker] * (left > 0)
            # a worker whose classes have all run out takes from the rest in proportion to what is left
            p = p / p.sum() if p.sum() > 0 else left / left.sum()
            counts = np.minimum(rng.multinomial(need, p), left)
            for c in np.flatnonzero(counts):
                parts.append(pools[c][taken[c] : taken[c] + counts[c]])
                taken[c] += counts[c]
            need -= int(counts.sum())
        shards[worker] = np.concatenate(parts)
    return shards


def shard_rows(problem: Any, n_workers: int, placement: Any = "iid", seed: Any = None) -> list[np.ndarray]:
    """The rows each of ``n_workers`` workers holds, by ``placement``.

    Parameters
    ----------
    problem : LeastSquares, Logistic or Softmax
        Its ``n_samples`` and, for the label-aware placements, its labels ``y``.
    n_workers : int
        Number of shards (1 <= n_workers <= n_samples).
    placement : str or sequence of array_like, default "iid"
        ``"iid"``, ``"sorted"``, ``"dirichlet:alpha=A"`` or one index array per worker (see
        the module docstring).
    seed : None, int or numpy.random.Generator
        Seeds ``"iid"`` and ``"dirichlet"`` (``"sorted"`` and explicit arrays draw nothing).

    Returns
    -------
    list of ndarray
        ``n_workers`` sorted, read-only ``int64`` arrays that partition ``range(n_samples)``.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd.placement import label_counts, shard_rows
    >>> from lwpd.problems import Logistic
    >>> X = np.ones((8, 1)); y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    >>> [s.tolist() for s in shard_rows(Logistic(X, y), 2, "sorted")]
    [[0, 2, 4, 6], [1, 3, 5, 7]]
    >>> label_counts(Logistic(X, y), shard_rows(Logistic(X, y), 2, "sorted")).tolist()
    [[4, 0], [0, 4]]
    """
    m = int(problem.n_samples)
    n_workers = check_int("n_workers", n_workers, minimum=1)
    if n_workers > m:
        raise ValueError(f"n_workers ({n_workers}) must not exceed the number of samples ({m})")
    spec = check_placement(placement)
    rng = as_rng("seed", seed)
    if isinstance(spec, list):
        shards = _explicit(spec, n_workers, m)
    else:
        name, alpha = _parse(spec)
        if name == "iid":
            shards = np.array_split(rng.permutation(m), n_workers)
        elif name == "sorted":
            shards = np.array_split(np.argsort(_labels(problem), kind="stable"), n_workers)
        else:
            shards = _dirichlet(_classes(problem), n_workers, alpha, rng)
    out = []
    for shard in shards:
        shard = np.sort(np.asarray(shard, dtype=np.int64))
        shard.flags.writeable = False  # read-only: the problem may then cache the shard's rows and scores
        out.append(shard)
    return out


def _explicit(parts: list[np.ndarray], n_workers: int, m: int) -> list[np.ndarray]:
    """Check user-given shards: one non-empty index array per worker, a partition of the rows."""
    if len(parts) != n_workers:
        raise ValueError(f"placement must hold one index array per worker ({n_workers}), got {len(parts)}")
    shards = []
    for w, part in enumerate(parts):
        shard = as_index_array(f"placement[{w}]", part, m)
        if shard.size == 0:
            raise ValueError(f"placement[{w}] is empty: every worker needs at least one row")
        shards.append(shard)
    seen = np.bincount(np.concatenate(shards), minlength=m)
    if (seen != 1).any():
        twice, missing = np.flatnonzero(seen > 1), np.flatnonzero(seen == 0)
        detail = (f"row {int(twice[0])} is in {int(seen[twice[0]])} shards" if twice.size
                  else f"row {int(missing[0])} is in none ({missing.size} rows missing)")
        raise ValueError(f"placement must hold every row exactly once (a partition of range({m})); {detail}")
    return shards


def label_counts(problem: Any, shards: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of each class (regression: target quantile bin) in each shard, shape
    ``(n_shards, n_classes)``: how skewed a placement is."""
    classes = _classes(problem)
    n_classes = int(classes.max()) + 1
    return np.stack([np.bincount(classes[np.asarray(s)], minlength=n_classes) for s in shards])
