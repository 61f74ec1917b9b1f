"""A property-based fuzz of the public API: shapes, dtypes, extreme values, duplicates and empty
inputs. Every call either returns what a plain NumPy oracle confirms, or raises ``ValueError``,
``TypeError`` or ``IndexError`` naming the argument -- and a refused update leaves a decoder as
it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lwpd import Codebook, Partition, PeelingDecoder, ProjectionDecoder, block_codebook, projective_codebook

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REFUSALS = (ValueError, TypeError, IndexError)

#: Floats a user might pass: ordinary, tiny, huge, signed zeros, non-finite.
EXTREMES = st.sampled_from([0.0, -0.0, 1.0, -2.5, 1e-300, 1e-170, 1e-100, 1e100, 1e155, 1e300, math.inf, -math.inf,
                            math.nan])
NUMBERS = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), EXTREMES)


def refused_naming(err: BaseException, *names: str) -> bool:
    return isinstance(err, REFUSALS) and any(name in str(err) for name in names)


_REFUSED = object()


def call(fn, *names: str):
    """``fn()``, or ``_REFUSED`` when it raised a refusal that names one of ``names``
    (anything else fails the test); the outcome is recorded as a hypothesis event."""
    try:
        result = fn()
    except REFUSALS as err:
        assert refused_naming(err, *names), err
        event("refused")
        return _REFUSED
    event("accepted")
    return result


@st.composite
def arrays(draw, max_rows=5, max_cols=5):
    """A 2-D array of mixed values in one of several dtypes (or a nested list)."""
    shape = (draw(st.integers(0, max_rows)), draw(st.integers(0, max_cols)))
    entries = st.floats(-1e6, 1e6) if draw(st.booleans()) else NUMBERS  # half the arrays ordinary throughout
    values = np.array(draw(st.lists(entries, min_size=shape[0] * shape[1], max_size=shape[0] * shape[1])),
                      dtype=float).reshape(shape)
    kind = draw(st.sampled_from(["float64", "float64", "float32", "int", "bool", "complex", "list", "text"]))
    if kind == "int":
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).clip(-1e6, 1e6).astype(np.int64)
    if kind == "bool":
        return values != 0
    if kind == "complex":
        return values.astype(complex)
    if kind == "list":
        return values.tolist()
    if kind == "text":
        return values.astype(str)
    with np.errstate(over="ignore"):
        return values.astype(kind)


@FUZZ
@given(array=arrays())
def test_codebook_from_dense(array):
    cb = call(lambda: Codebook.from_dense(array), "array")
    if cb is _REFUSED:
        return
    dense = np.asarray(array, dtype=float)
    np.testing.assert_array_equal(cb.to_dense(), dense)
    low, high = 1e-150, 1e150
    magnitude = np.abs(dense[dense != 0])
    assert np.isfinite(dense).all() and (np.abs(dense).sum(axis=1) > 0).all()
    assert magnitude.min() >= low and magnitude.max() <= high


@FUZZ
@given(sizes=st.one_of(st.lists(st.integers(-3, 2**62), max_size=4),
                       st.lists(st.one_of(st.floats(-10, 1e20), st.just(math.nan)), max_size=3),
                       st.just([[1, 2]]), st.just("12")))
def test_partition(sizes):
    part = call(lambda: Partition(sizes), "sizes")
    if part is _REFUSED:
        return
    exact = [int(size) for size in sizes]
    assert part.dim == sum(exact) and part.sizes.tolist() == exact and all(size >= 1 for size in exact)
    assert part.offsets.tolist() == np.concatenate([[0], np.cumsum(exact)]).tolist()


CODEBOOK = block_codebook(projective_codebook(3, max_weight=2), Partition.uniform(7, 3))


@FUZZ
@given(g=st.one_of(st.lists(NUMBERS, min_size=0, max_size=9), st.lists(st.lists(NUMBERS, min_size=7, max_size=7),
                                                                        min_size=1, max_size=3)))
def test_encode(g):
    values = call(lambda: CODEBOOK.encode(g), "g")
    if values is _REFUSED:
        return
    arr = np.asarray(g, dtype=float)
    assert np.isfinite(arr).all()
    with np.errstate(all="ignore"):
        oracle = arr @ CODEBOOK.to_dense().T
    # absolute slack for cancellation: a few roundings of the largest term
    np.testing.assert_allclose(values, oracle, rtol=1e-12, atol=1e-14 * float(np.abs(arr).max(initial=0.0)))


index_values = st.one_of(
    st.integers(-3, 30),
    st.lists(st.integers(-3, 30), max_size=12),
    st.just(1.5), st.just("3"), st.just([True, False]), st.just([[1, 2]]),
)


@FUZZ
@given(batches=st.lists(st.tuples(index_values, st.one_of(NUMBERS, st.lists(NUMBERS, max_size=12), st.just("x"))),
                        min_size=1, max_size=4),
       peeling=st.booleans())
def test_decoder_updates(batches, peeling):
    """Accepted updates decode as the least-squares fit over the received multiset (pinv
    oracle; peeling: the coordinates it knows); refused ones change nothing."""
    cb = CODEBOOK
    dec = (PeelingDecoder if peeling else ProjectionDecoder)(cb)
    kept_idx: list[int] = []
    kept_vals: list[float] = []
    for indices, values in batches:
        before = (dec.n_received, dec.estimate().copy())
        if call(lambda: dec.update(indices, values), "index", "indices", "value", "values") is _REFUSED:
            assert dec.n_received == before[0]
            np.testing.assert_array_equal(dec.estimate(), before[1])
            continue
        idx = np.atleast_1d(np.asarray(indices)).astype(int).tolist()
        vals = np.broadcast_to(np.asarray(values, dtype=float), (len(idx),)).tolist()
        kept_idx += idx
        kept_vals += vals
    assert dec.n_received == len(kept_idx)
    if not kept_idx or peeling:
        return
    V = cb.to_dense()[kept_idx]
    assert all(np.isfinite(kept_vals)) and max(map(abs, kept_vals)) <= 1e150
    oracle = np.linalg.lstsq(V, np.array(kept_vals), rcond=None)[0]
    scale = max(1.0, float(np.abs(kept_vals).max()))
    np.testing.assert_allclose(dec.estimate(), oracle, rtol=1e-9, atol=1e-9 * scale)


@FUZZ
@given(dim=st.one_of(st.integers(1, 5), st.integers(-2, 0), st.just(2.0), st.just("3")),
       q=st.one_of(st.sampled_from([2, 3, 5, 7]), st.integers(-1, 9), st.just(3.5)),
       max_weight=st.one_of(st.none(), st.integers(1, 6), st.integers(-1, 0)))
def test_projective_codebook(dim, q, max_weight):
    """The count of points of PG(dim-1, q) of weight <= w: sum_j C(dim, j) (q - 1)^(j - 1)."""
    cb = call(lambda: projective_codebook(dim, q=q, max_weight=max_weight), "dim", "q", "max_weight")
    if cb is _REFUSED:
        return
    w = dim if max_weight is None else min(max_weight, dim)
    assert cb.n_codewords == sum(math.comb(dim, j) * (q - 1) ** (j - 1) for j in range(1, w + 1))
    dense = cb.to_dense()
    assert np.linalg.matrix_rank(dense) == dim
    assert ((dense != 0).sum(axis=1) <= w).all()


@pytest.mark.parametrize("bad, match", [(np.zeros((0, 3)), "array"), (np.zeros((2, 0)), "array"),
                                        (np.array([[1.0, np.nan]]), "array"), (np.array([[0.0, 0.0]]), "array")])
def test_codebook_edge_cases_named(bad, match):
    with pytest.raises(REFUSALS, match=match):
        Codebook.from_dense(bad)
