"""Tests of data placement (lwpd.placement) and of how every scheme builds on the shards.

The oracles are plain NumPy / Python: a seeded shuffle cut by ``np.array_split``, a
pure-Python sort by ``(label, row)``, ``np.bincount`` per shard, ranks for the quantile
bins of a regression target, Lagrange interpolation written out for LCC's coded blocks, and
``problem.gradient`` for every decoded gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from reference import small_problems, uneven_shards
from lwpd import _defaults, train
from lwpd.cluster import SimulatedCluster
from lwpd.placement import PLACEMENTS, check_placement, label_counts, shard_rows
from lwpd.problems import LeastSquares, Logistic, Softmax
from lwpd.schemes import (
    LCC,
    LWPD,
    GradientCoding,
    IgnoreStragglers,
    PartialGradientCoding,
    RandomK,
    ReplicatedLWPD,
    Replication,
    Uncoded,
)

N = 6  # workers in the scheme tests


def _problems(m=60):
    return small_problems(m)


def _uneven_placement(m=60):
    """Explicit, deliberately unequal shards (as unsorted int32 arrays)."""
    return uneven_shards(m)


def _problem_of(kind, m, seed=0):
    """A small problem of ``m`` rows: continuous targets, or balanced-ish labels."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 2))
    if kind == "least-squares":
        return LeastSquares(X, rng.standard_normal(m))
    if kind == "logistic":
        y = rng.integers(0, 2, m)
        y[:2] = [0, 1]  # both classes present
        return Logistic(X, y)
    y = rng.integers(0, 4, m)
    y[:2] = [0, 1]
    return Softmax(X, y)


def _assert_partition(shards, m, n_workers):
    """``n_workers`` sorted, read-only int64 1-D arrays whose union is range(m), each row once."""
    assert isinstance(shards, list) and len(shards) == n_workers
    for shard in shards:
        assert isinstance(shard, np.ndarray)
        assert shard.dtype == np.int64 and shard.ndim == 1
        assert not shard.flags.writeable
        assert np.all(np.diff(shard) > 0)  # sorted, no repeats
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(m))


def _rank_bins(y, bins):
    """Quantile bin of every row of a continuous target with distinct values: its rank
    scaled to ``bins`` equal-count classes (exact when ``bins`` divides ``m``)."""
    m = y.size
    ranks = np.empty(m, dtype=np.int64)
    ranks[np.argsort(y)] = np.arange(m)
    return ranks * bins // m


# ---------------------------------------------------------------- every placement partitions


@settings(max_examples=50, deadline=None)
@given(
    m=st.integers(2, 80),
    frac=st.floats(0.0, 1.0),
    kind=st.sampled_from(["least-squares", "logistic", "softmax"]),
    placement=st.sampled_from(["iid", "sorted", "dirichlet:alpha=0.05", "dirichlet:alpha=0.7", "dirichlet:alpha=50"]),
    seed=st.integers(0, 2**31),
)
def test_every_named_placement_partitions_the_rows_into_near_equal_shards(m, frac, kind, placement, seed):
    n_workers = 1 + int(frac * (m - 1))
    problem = _problem_of(kind, m, seed % 7)
    shards = shard_rows(problem, n_workers, placement, seed)
    _assert_partition(shards, m, n_workers)
    sizes = np.array([s.size for s in shards])
    assert sizes.max() - sizes.min() <= 1
    assert sizes.min() >= 1


def test_shards_are_read_only():
    shards = shard_rows(_problems()["least-squares"], 4, "sorted")
    with pytest.raises(ValueError):
        shards[0][0] = 5


def test_placements_constant_names_the_three_schemes():
    assert set(PLACEMENTS) == {"iid", "sorted", "dirichlet"}


# ---------------------------------------------------------------- iid


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 90), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_iid_is_the_seeded_shuffle_cut_into_near_equal_parts(m, frac, seed):
    n_workers = 1 + int(frac * (m - 1))
    problem = LeastSquares(np.ones((m, 1)), np.arange(m, dtype=float))
    expected = [np.sort(part) for part in np.array_split(np.random.default_rng(seed).permutation(m), n_workers)]
    for given_seed in (seed, np.random.default_rng(seed)):
        shards = shard_rows(problem, n_workers, "iid", given_seed)
        assert len(shards) == n_workers
        for got, want in zip(shards, expected):
            np.testing.assert_array_equal(got, want)
    # "iid" is the default placement
    for got, want in zip(shard_rows(problem, n_workers, seed=seed), expected):
        np.testing.assert_array_equal(got, want)


def test_iid_depends_on_the_seed():
    problem = _problems()["least-squares"]
    a, b = shard_rows(problem, 4, "iid", 0), shard_rows(problem, 4, "iid", 1)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- sorted


def _sorted_oracle(labels, n_workers):
    """Rows in order of (label, row index), cut into near-equal contiguous parts."""
    order = sorted(range(labels.size), key=lambda i: (labels[i], i))
    m = labels.size
    sizes = [m // n_workers + (w < m % n_workers) for w in range(n_workers)]
    cuts = np.cumsum([0] + sizes)
    return [np.sort(np.array(order[cuts[w]:cuts[w + 1]], dtype=np.int64)) for w in range(n_workers)]


@pytest.mark.parametrize("kind", ["least-squares", "logistic", "softmax"])
@pytest.mark.parametrize("n_workers", [1, 2, 5, 7, 60])
def test_sorted_orders_rows_by_label_with_ties_in_row_order(kind, n_workers):
    problem = _problems()[kind]
    labels = np.asarray(problem.y)
    if kind != "least-squares":  # classifiers: y holds the class indices
        np.testing.assert_array_equal(labels, np.unique(labels, return_inverse=True)[1].reshape(-1))
    shards = shard_rows(problem, n_workers, "sorted", seed=123)
    _assert_partition(shards, problem.n_samples, n_workers)
    for left, right in zip(shards, shards[1:]):
        assert labels[left].max() <= labels[right].min()
    for got, want in zip(shards, _sorted_oracle(labels, n_workers)):
        np.testing.assert_array_equal(got, want)
    # "sorted" draws nothing: any seed gives the same shards
    for got, want in zip(shard_rows(problem, n_workers, "sorted", seed=0), shards):
        np.testing.assert_array_equal(got, want)


def test_sorted_with_few_classes_gives_each_worker_one_or_two_classes():
    problem = _problems()["softmax"]
    counts = label_counts(problem, shard_rows(problem, 6, "sorted"))
    assert ((counts > 0).sum(axis=1) <= 2).all()


# ---------------------------------------------------------------- dirichlet


@pytest.mark.parametrize("kind", ["least-squares", "logistic", "softmax"])
@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_dirichlet_is_a_deterministic_near_equal_partition(kind, alpha):
    problem = _problems(m=97)[kind]
    spec = f"dirichlet:alpha={alpha}"
    shards = shard_rows(problem, 7, spec, seed=5)
    _assert_partition(shards, 97, 7)
    sizes = np.array([s.size for s in shards])
    assert sizes.max() - sizes.min() <= 1
    again = shard_rows(problem, 7, spec, seed=np.random.default_rng(5))
    for a, b in zip(shards, again):
        np.testing.assert_array_equal(a, b)
    other = shard_rows(problem, 7, spec, seed=6)
    assert any(not np.array_equal(a, b) for a, b in zip(shards, other))


def test_dirichlet_skew_decreases_with_alpha():
    rng = np.random.default_rng(0)
    m, n_classes, n_workers = 400, 4, 8
    y = np.arange(m) % n_classes
    problem = Softmax(rng.standard_normal((m, 3)), y)

    def largest_fraction(alpha, seed):
        shards = shard_rows(problem, n_workers, f"dirichlet:alpha={alpha}", seed)
        return np.mean([np.bincount(y[s], minlength=n_classes).max() / s.size for s in shards])

    seeds = range(5)
    skew = {a: np.array([largest_fraction(a, s) for s in seeds]) for a in (0.05, 1.0, 100.0)}
    assert (skew[0.05] > skew[100.0]).all()
    assert skew[0.05].mean() > skew[1.0].mean() > skew[100.0].mean()
    assert skew[0.05].mean() - skew[100.0].mean() > 0.3
    # large alpha approaches iid: each worker's largest class is near 1 / n_classes
    assert skew[100.0].mean() < 0.5


@pytest.mark.parametrize("bins", [None, 4])
@pytest.mark.parametrize("alpha", [0.1, 3.0])
def test_dirichlet_on_a_regression_target_uses_its_quantile_bins(monkeypatch, bins, alpha):
    """A regression target is placed exactly as a classifier whose labels are the target's
    equal-count quantile bins (``PLACEMENT_REGRESSION_BINS`` of them)."""
    if bins is not None:
        monkeypatch.setattr(_defaults, "PLACEMENT_REGRESSION_BINS", bins)
    n_bins = _defaults.PLACEMENT_REGRESSION_BINS
    rng = np.random.default_rng(3)
    m = 200
    X = rng.standard_normal((m, 2))
    y = rng.standard_normal(m) * 5.0  # distinct values
    regression = LeastSquares(X, y)
    classes = _rank_bins(y, n_bins)
    assert np.bincount(classes).tolist() == [m // n_bins] * n_bins
    classifier = Softmax(X, classes)
    spec = f"dirichlet:alpha={alpha}"
    for seed in (0, 1):
        got = shard_rows(regression, 8, spec, seed)
        want = shard_rows(classifier, 8, spec, seed)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # label_counts of a regression problem counts those bins
    counts = label_counts(regression, got)
    assert counts.shape == (8, n_bins)
    for w, shard in enumerate(got):
        np.testing.assert_array_equal(counts[w], np.bincount(classes[shard], minlength=n_bins))


def test_regression_default_bins_are_deciles():
    assert _defaults.PLACEMENT_REGRESSION_BINS == 10
    rng = np.random.default_rng(4)
    problem = LeastSquares(rng.standard_normal((150, 2)), rng.standard_normal(150))
    counts = label_counts(problem, [np.arange(150)])
    np.testing.assert_array_equal(counts, [[15] * 10])


# ---------------------------------------------------------------- explicit index arrays


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 60),
    data=st.data(),
    container=st.sampled_from(["list-of-arrays", "list-of-lists", "tuple", "int32"]),
)
def test_explicit_partitions_are_accepted_in_any_order(m, data, container):
    n_workers = data.draw(st.integers(1, m))
    perm = data.draw(st.permutations(list(range(m))))
    cuts = sorted(data.draw(st.sets(st.integers(1, m - 1), min_size=n_workers - 1, max_size=n_workers - 1))
                  if n_workers > 1 else [])
    parts = np.split(np.array(perm, dtype=np.int64), cuts)
    if container == "list-of-lists":
        placement = [p.tolist() for p in parts]
    elif container == "tuple":
        placement = tuple(parts)
    elif container == "int32":
        placement = [p.astype(np.int32) for p in parts]
    else:
        placement = [p.copy() for p in parts]
    problem = LeastSquares(np.ones((m, 1)), np.zeros(m))
    shards = shard_rows(problem, n_workers, placement, seed=data.draw(st.integers(0, 10)))
    _assert_partition(shards, m, n_workers)
    for got, part in zip(shards, parts):
        np.testing.assert_array_equal(got, np.sort(part))
    # the caller's arrays are not modified (nor frozen)
    if container == "list-of-arrays":
        for given_part, part in zip(placement, parts):
            np.testing.assert_array_equal(given_part, part)
            assert given_part.flags.writeable


def test_explicit_two_dimensional_array_is_one_row_per_worker():
    problem = _problems()["least-squares"]
    placement = np.random.default_rng(0).permutation(60).reshape(4, 15)
    shards = shard_rows(problem, 4, placement)
    for got, row in zip(shards, placement):
        np.testing.assert_array_equal(got, np.sort(row))


def _explicit_cases():
    full = [np.arange(0, 20), np.arange(20, 40), np.arange(40, 60)]
    return [
        ("wrong-count", [np.arange(0, 30), np.arange(30, 60)], ValueError, r"placement"),
        ("too-many", full + [np.arange(0)], ValueError, r"placement"),
        ("empty", [np.arange(0, 30), np.array([], dtype=np.int64), np.arange(30, 60)], ValueError, r"placement\[1\]"),
        ("out-of-range", [np.arange(0, 20), np.arange(20, 40), np.arange(40, 61)], IndexError, r"placement\[2\]"),
        ("negative", [np.arange(-1, 20), np.arange(20, 40), np.arange(40, 60)], IndexError, r"placement\[0\]"),
        ("duplicated", [np.arange(0, 21), np.arange(20, 40), np.arange(40, 60)], ValueError, r"placement.*row 20"),
        ("duplicated-within", [np.r_[np.arange(0, 20), 5], np.arange(20, 40), np.arange(40, 60)], ValueError,
         r"placement.*row 5"),
        ("missing", [np.arange(0, 19), np.arange(20, 40), np.arange(40, 60)], ValueError, r"placement.*row 19"),
        ("booleans", [np.arange(0, 20), np.ones(60, dtype=bool), np.arange(40, 60)], TypeError, r"placement\[1\]"),
        ("floats", [np.arange(0, 20), np.arange(20, 40, dtype=float), np.arange(40, 60)], TypeError, r"placement\[1\]"),
        ("two-dimensional", [np.arange(0, 20), np.arange(20, 40).reshape(2, 10), np.arange(40, 60)], ValueError,
         r"placement\[1\]"),
    ]


@pytest.mark.parametrize("name,placement,exc,match", _explicit_cases(), ids=[c[0] for c in _explicit_cases()])
def test_bad_explicit_placements_are_refused_naming_the_array(name, placement, exc, match):
    problem = _problems()["least-squares"]
    with pytest.raises(exc, match=match):
        shard_rows(problem, 3, placement)
    # train refuses it the same way, before any step
    with pytest.raises(exc, match=match):
        train(problem, Uncoded(), SimulatedCluster(3, seed=0), deadline=1e9, max_steps=1, progress=False,
              placement=placement)


@pytest.mark.parametrize("placement", [3, None, 2.5, b"iid", {0: [1]}, {1, 2}, np.arange(60),
                                       np.arange(60).reshape(3, 4, 5)])
def test_placements_of_the_wrong_type_are_refused_naming_placement(placement):
    problem = _problems()["least-squares"]
    with pytest.raises(TypeError, match="placement"):
        check_placement(placement)
    with pytest.raises(TypeError, match="placement"):
        shard_rows(problem, 3, placement)


@pytest.mark.parametrize("spec", ["random", "dirichlet", "dirichlet:alpha=0", "dirichlet:alpha=nan",
                                  "dirichlet:alpha=inf", "dirichlet:alpha=-1", "dirichlet:alpha=abc",
                                  "dirichlet:beta=1", "dirichlet:alpha", "sorted:x", "iid:", "IID", ""])
def test_bad_placement_strings_are_refused_naming_placement(spec):
    problem = _problems()["softmax"]
    with pytest.raises(ValueError, match="placement"):
        check_placement(spec)
    with pytest.raises(ValueError, match="placement"):
        shard_rows(problem, 3, spec)
    with pytest.raises(ValueError, match="placement"):
        train(problem, Uncoded(), SimulatedCluster(3, seed=0), deadline=1e9, max_steps=1, progress=False,
              placement=spec)


@pytest.mark.parametrize("spec", ["iid", "sorted", "dirichlet:alpha=0.5", "dirichlet:alpha=1e-3", "dirichlet:alpha=7"])
def test_good_placement_strings_pass_check_placement_unchanged(spec):
    assert check_placement(spec) == spec


@pytest.mark.parametrize("n_workers,exc", [(0, ValueError), (-2, ValueError), (61, ValueError), (2.0, TypeError),
                                           (True, TypeError), ("3", TypeError)])
def test_bad_n_workers_is_refused_naming_n_workers(n_workers, exc):
    with pytest.raises(exc, match="n_workers"):
        shard_rows(_problems()["least-squares"], n_workers, "iid")


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), (1.5, TypeError), ("0", TypeError)])
def test_bad_seed_is_refused_naming_seed(seed, exc):
    with pytest.raises(exc, match="seed"):
        shard_rows(_problems()["least-squares"], 3, "iid", seed)


def test_label_placements_need_targets():
    class NoTargets:
        n_samples = 10

    for spec in ("sorted", "dirichlet:alpha=1"):
        with pytest.raises(TypeError, match="placement"):
            shard_rows(NoTargets(), 2, spec)
    # iid and explicit arrays need only the number of rows
    _assert_partition(shard_rows(NoTargets(), 2, "iid", 0), 10, 2)
    _assert_partition(shard_rows(NoTargets(), 2, [np.arange(5), np.arange(5, 10)]), 10, 2)


# ---------------------------------------------------------------- label_counts


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["logistic", "softmax"]), data=st.data())
def test_label_counts_is_a_bincount_per_shard(kind, data):
    problem = _problems()[kind]
    y = np.asarray(problem.y).astype(np.int64)
    n_classes = int(y.max()) + 1
    n_shards = data.draw(st.integers(1, 5))
    shards = [np.array(sorted(data.draw(st.sets(st.integers(0, 59), min_size=1, max_size=60))), dtype=np.int64)
              for _ in range(n_shards)]
    counts = label_counts(problem, shards)
    assert counts.shape == (n_shards, n_classes)
    for w, shard in enumerate(shards):
        want = [sum(1 for i in shard if y[i] == c) for c in range(n_classes)]
        assert counts[w].tolist() == want


def test_label_counts_of_a_partition_add_up_to_the_class_totals():
    problem = _problems()["softmax"]
    for spec in ("iid", "sorted", "dirichlet:alpha=0.2"):
        counts = label_counts(problem, shard_rows(problem, 5, spec, 0))
        np.testing.assert_array_equal(counts.sum(axis=0), np.bincount(problem.y))
        np.testing.assert_array_equal(counts.sum(axis=1), [12] * 5)


# ---------------------------------------------------------------- every scheme sees the same shards

SCHEMES = {
    "uncoded": Uncoded,
    "ignore": IgnoreStragglers,
    "iag": lambda: IgnoreStragglers(memory=True),
    "replication": lambda: Replication(2),
    "gc-frc": lambda: GradientCoding(1, "frc"),
    "gc-cyclic": lambda: GradientCoding(1, "cyclic"),
    "gc-partial": lambda: PartialGradientCoding(1),
    "lcc": lambda: LCC(2),
    "lwpd": LWPD,
    "lwpd-full": lambda: LWPD(layout="full"),
    "randk": RandomK,
    "lwpd-fr": ReplicatedLWPD,
}
EXACT = [name for name in SCHEMES if name != "randk"]
PLACEMENT_CASES = ["iid", "sorted", "dirichlet:alpha=0.3", "explicit"]


def _placement(name):
    return _uneven_placement() if name == "explicit" else name


def _train_one_step(problem, scheme, placement, seed=4):
    theta0 = np.random.default_rng(9).standard_normal(problem.n_params) * 0.3
    return train(problem, scheme, SimulatedCluster(N, seed=0), deadline=1e9, max_steps=1, progress=False, seed=seed,
                 placement=placement, theta0=theta0)


def _schemes_for(problem_name):
    return [name for name in SCHEMES if problem_name == "least-squares" or name != "lcc"]


@pytest.mark.parametrize("problem_name", ["least-squares", "softmax"])
@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
def test_every_scheme_binds_the_same_shards(problem_name, placement_name):
    problem = _problems()[problem_name]
    placement = _placement(placement_name)
    expected = shard_rows(problem, N, placement, 4)
    if placement_name == "explicit":
        for got, part in zip(expected, placement):
            np.testing.assert_array_equal(got, np.sort(part))
    for name in _schemes_for(problem_name):
        scheme = SCHEMES[name]()
        _train_one_step(problem, scheme, placement, seed=4)
        assert len(scheme.shards_) == N, name
        for got, want in zip(scheme.shards_, expected):
            np.testing.assert_array_equal(got, want, err_msg=name)
            assert got.dtype == np.int64 and not got.flags.writeable


@pytest.mark.parametrize("problem_name", ["least-squares", "softmax"])
@pytest.mark.parametrize("placement_name", ["sorted", "dirichlet:alpha=0.3", "dirichlet:alpha=0.05", "explicit"])
def test_every_exact_scheme_decodes_the_exact_gradient_under_skewed_placements(problem_name, placement_name):
    problem = _problems()[problem_name]
    for name in _schemes_for(problem_name):
        if name not in EXACT:
            continue
        history = _train_one_step(problem, SCHEMES[name](), _placement(placement_name), seed=2)
        assert history.received[0] == history.dispatched[0], name  # no stragglers: everything arrived
        assert history.grad_error[0] < 1e-12, (name, history.grad_error[0])


def test_bind_without_shards_draws_an_iid_placement_from_the_rng():
    problem = _problems()["least-squares"]
    scheme = Uncoded()
    scheme.bind(problem, N, np.random.default_rng(21))
    expected = np.array_split(np.random.default_rng(21).permutation(problem.n_samples), N)
    for got, want in zip(scheme.shards_, expected):
        np.testing.assert_array_equal(got, np.sort(want))


def test_bind_validates_explicit_shards():
    problem = _problems()["least-squares"]
    bad = [np.arange(0, 10)] * N
    with pytest.raises(ValueError, match="placement"):
        Uncoded().bind(problem, N, np.random.default_rng(0), shards=bad)


def _bound(problem, scheme, placement, seed=4):
    """Bind ``scheme`` as train would (the same shards), run its setup and start a step."""
    shards = shard_rows(problem, N, placement, seed)
    scheme.bind(problem, N, np.random.default_rng(seed), shards=placement if not isinstance(placement, str) else shards)
    for task in scheme.setup_tasks():
        scheme.fold_setup(task.worker, task.fn(*task.args))
    scheme.begin()
    return shards


@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
@pytest.mark.parametrize("memory", [False, True])
def test_data_parallel_workers_read_their_own_shard(placement_name, memory):
    problem = _problems()["softmax"]
    theta = np.random.default_rng(1).standard_normal(problem.n_params)
    for scheme in (Uncoded(), IgnoreStragglers(memory=memory)):
        shards = _bound(problem, scheme, _placement(placement_name))
        tasks = scheme.tasks(theta)
        assert [t.worker for t in tasks] == list(range(N))
        for task in tasks:
            np.testing.assert_array_equal(task.args[2], shards[task.worker])
            np.testing.assert_allclose(task.fn(*task.args), problem.gradient(theta, rows=shards[task.worker]),
                                       rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
def test_replication_worker_reads_the_union_of_its_groups_shards(placement_name):
    problem = _problems()["logistic"]
    theta = np.random.default_rng(1).standard_normal(problem.n_params)
    scheme = Replication(2)
    shards = _bound(problem, scheme, _placement(placement_name))
    for task in scheme.tasks(theta):
        g = task.worker // 2
        union = np.sort(np.concatenate([shards[2 * g], shards[2 * g + 1]]))
        np.testing.assert_array_equal(task.args[2], union)
        np.testing.assert_allclose(task.fn(*task.args), problem.gradient(theta, rows=union), rtol=1e-12, atol=1e-14)
    # the first copy of each group counts: one worker per group suffices for the exact gradient
    scheme.begin()
    for task in scheme.tasks(theta):
        if task.worker in (1, 2, 5):
            scheme.fold(task.worker, task.fn(*task.args))
    np.testing.assert_allclose(scheme.estimate(), problem.gradient(theta), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
@pytest.mark.parametrize("kind", ["frc", "cyclic"])
def test_gradient_coding_partitions_are_the_shards(placement_name, kind):
    problem = _problems()["least-squares"]
    scheme = GradientCoding(1, kind)
    shards = _bound(problem, scheme, _placement(placement_name))
    for i, (parts, coefficients, _work) in enumerate(scheme._plan):
        held = [2 * (i // 2), 2 * (i // 2) + 1] if kind == "frc" else sorted({i, (i + 1) % N})
        assert len(parts) == 2
        for part, k in zip(parts, held):
            np.testing.assert_array_equal(part, shards[k])
        assert coefficients.size == 2


@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
def test_partial_gradient_coding_partitions_are_the_shards(placement_name):
    problem = _problems()["softmax"]
    theta = np.random.default_rng(1).standard_normal(problem.n_params)
    scheme = PartialGradientCoding(1)
    shards = _bound(problem, scheme, _placement(placement_name))
    assert len(scheme.partitions_) == N
    for got, want in zip(scheme.partitions_, shards):
        np.testing.assert_array_equal(got, want)
    m = problem.n_samples
    for task in scheme.tasks(theta):
        k, value = task.fn(*task.args)
        np.testing.assert_array_equal(task.args[3], shards[k])
        np.testing.assert_allclose(value, shards[k].size / m * problem.gradient(theta, rows=shards[k]),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
def test_lwpd_sharded_answers_on_shard_w(placement_name):
    problem = _problems()["softmax"]
    theta = np.random.default_rng(1).standard_normal(problem.n_params)
    scheme = LWPD(block_size=4)
    shards = _bound(problem, scheme, _placement(placement_name))
    for got, want in zip(scheme._shards, shards):
        np.testing.assert_array_equal(got, want)
    V = scheme.codebook_.to_dense()
    m = problem.n_samples
    for task in scheme.tasks(theta):
        w = task.worker
        np.testing.assert_array_equal(task.args[4], shards[w])
        indices, values = task.fn(*task.args)
        scale = N * shards[w].size / m
        np.testing.assert_allclose(values, scale * V[indices] @ problem.gradient(theta, rows=shards[w]),
                                   rtol=1e-10, atol=1e-13)


def _lagrange_encode(blocks, betas, alphas):
    """``u(alpha_i) = sum_k B_k prod_{j != k} (alpha_i - beta_j) / (beta_k - beta_j)``."""
    out = np.zeros((alphas.size,) + blocks.shape[1:])
    for i, a in enumerate(alphas):
        for k, bk in enumerate(betas):
            weight = np.prod([(a - bj) / (bk - bj) for j, bj in enumerate(betas) if j != k])
            out[i] += weight * blocks[k]
    return out


@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
@pytest.mark.parametrize("K", [2, 3])
def test_lcc_cuts_its_blocks_from_the_rows_in_shard_order(placement_name, K):
    problem = _problems()["least-squares"]
    scheme = LCC(K)
    shards = _bound(problem, scheme, _placement(placement_name))
    order = np.concatenate(shards)
    m, d = problem.X.shape
    data = np.column_stack([problem.X[order], np.ones(m), problem.y[order]])
    height = -(-m // K)
    blocks = np.zeros((K, height, d + 2))
    for k, rows in enumerate(np.array_split(np.arange(m), K)):
        blocks[k, : rows.size] = data[rows]
    expected = _lagrange_encode(blocks, scheme._betas, scheme._alphas)
    assert scheme._coded.shape == expected.shape
    np.testing.assert_allclose(scheme._coded, expected, rtol=1e-10, atol=1e-10)
    # and the decoded gradient is still the problem's
    theta = np.random.default_rng(3).standard_normal(problem.n_params)
    for task in scheme.tasks(theta):
        scheme.fold(task.worker, task.fn(*task.args))
    np.testing.assert_allclose(scheme.estimate(), problem.gradient(theta), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
def test_replicated_lwpd_groups_read_the_union_of_their_shards(placement_name):
    problem = _problems()["softmax"]
    scheme = ReplicatedLWPD()
    shards = _bound(problem, scheme, _placement(placement_name))
    theta = np.zeros(problem.n_params)
    for task in scheme.tasks(theta):
        g = task.worker // 2
        np.testing.assert_array_equal(task.args[4], np.sort(np.concatenate([shards[2 * g], shards[2 * g + 1]])))


@pytest.mark.parametrize("placement_name", PLACEMENT_CASES)
def test_randomk_answers_on_shard_w(placement_name):
    problem = _problems()["least-squares"]
    scheme = RandomK()
    shards = _bound(problem, scheme, _placement(placement_name))
    for task in scheme.tasks(np.zeros(problem.n_params)):
        np.testing.assert_array_equal(task.args[4], shards[task.worker])
