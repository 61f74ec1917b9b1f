import itertools
import math

import numpy as np
import pytest

import reference as ref
from lwpd import (
    Codebook,
    Partition,
    block_codebook,
    captured_energy,
    coherence,
    frame_potential,
    identity_codebook,
    logdet_information,
    min_angle,
    mutual_information,
    projective_codebook,
    random_codebook,
    simplex_codebook,
    summary,
    welch_bound,
)

CODEBOOKS = {
    "projective": lambda: projective_codebook(4, max_weight=3),
    "random": lambda: random_codebook(12, 5, seed=0),
    "unnormalised": lambda: Codebook.from_dense([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0], [5.0, 0.0, 0.0]]),
    "tiled+tail": lambda: block_codebook(projective_codebook(3, normalize=False), Partition.uniform(3 * 4 + 2, 3)),
}


def _spd(n, seed):
    a = np.random.default_rng(seed).standard_normal((n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


@pytest.mark.parametrize("name", list(CODEBOOKS))
def test_pairwise_metrics_match_dense_oracle(name):
    cb = CODEBOOKS[name]()
    rho = ref.pairs_off_diagonal(ref.correlations(cb.to_dense()))
    assert coherence(cb) == pytest.approx(np.abs(rho).max(), abs=1e-12)
    assert frame_potential(cb) == pytest.approx(2 * np.sum(rho**2), rel=1e-12)
    assert mutual_information(cb) == pytest.approx(np.sum(-0.5 * np.log(1 - rho**2)), rel=1e-12)
    assert min_angle(cb) == pytest.approx(math.degrees(math.acos(np.abs(rho).max())), abs=1e-9)


@pytest.mark.parametrize("name", list(CODEBOOKS))
@pytest.mark.parametrize("cov_kind", ["identity", "diagonal", "full"])
def test_information_metrics_with_covariance_match_oracle(name, cov_kind):
    cb = CODEBOOKS[name]()
    V = cb.to_dense()
    n = cb.dim
    if cov_kind == "identity":
        cov, sigma = None, np.eye(n)
    elif cov_kind == "diagonal":
        cov = np.linspace(0.5, 2.0, n)
        sigma = np.diag(cov)
    else:
        cov = sigma = _spd(n, 1)
    for noise in (1.0, 0.3):
        expected = 0.5 * np.linalg.slogdet(np.eye(len(cb)) + V @ sigma @ V.T / noise**2)[1]
        assert logdet_information(cb, noise=noise, covariance=cov) == pytest.approx(expected, rel=1e-10)
    s = V @ sigma @ V.T
    d = np.sqrt(np.diag(s))
    rho = ref.pairs_off_diagonal(s / np.outer(d, d))
    assert mutual_information(cb, covariance=cov) == pytest.approx(np.sum(-0.5 * np.log(1 - rho**2)), rel=1e-10)


def test_metric_examples_from_geometry():
    assert coherence(projective_codebook(2)) == pytest.approx(math.sqrt(0.5))
    assert min_angle(projective_codebook(2)) == pytest.approx(45.0)
    assert coherence(identity_codebook(5)) == 0.0
    assert frame_potential(identity_codebook(5)) == 0.0
    assert coherence(Codebook.from_dense([[1.0, 2.0]])) == 0.0
    assert mutual_information(Codebook.from_dense([[1.0, 1.0], [2.0, 2.0]])) == math.inf
    # tight frames attain the frame potential bound N^2/d - N
    assert frame_potential(simplex_codebook(3)) == pytest.approx(16 / 3 - 4)
    assert logdet_information(identity_codebook(3)) == pytest.approx(1.5 * math.log(2))


def test_welch_bound_values():
    assert welch_bound(4, 3) == pytest.approx(1 / 3)
    assert welch_bound(6, 3) == pytest.approx(1 / math.sqrt(5))
    assert welch_bound(3, 3) == 0.0
    assert welch_bound(1, 4) == 0.0
    with pytest.raises(ValueError, match="n_codewords must be >= 1"):
        welch_bound(0, 3)


def _exact_energy(V, sigma, mask):
    rows = V[mask]
    if rows.shape[0] == 0:
        return 0.0
    r = np.linalg.matrix_rank(rows)
    Q = np.linalg.svd(rows, full_matrices=False)[2][:r]
    return np.trace(Q @ sigma @ Q.T) / np.trace(sigma)


@pytest.mark.parametrize("name", list(CODEBOOKS))
def test_captured_energy_for_a_received_set(name):
    cb = CODEBOOKS[name]()
    V = cb.to_dense()
    rng = np.random.default_rng(3)
    for cov in (None, np.linspace(1, 3, cb.dim), _spd(cb.dim, 2)):
        sigma = np.eye(cb.dim) if cov is None else (np.diag(cov) if cov.ndim == 1 else cov)
        for size in (1, len(cb) // 3, len(cb)):
            idx = rng.choice(len(cb), size=size, replace=False)
            mask = np.zeros(len(cb), bool)
            mask[idx] = True
            # P_S is block diagonal, so only the diagonal blocks of a full covariance matter
            assert captured_energy(cb, received=idx, covariance=cov) == pytest.approx(_exact_energy(V, sigma, mask), rel=1e-9)
    assert captured_energy(cb) == pytest.approx(np.linalg.matrix_rank(V) / cb.dim)


def test_captured_energy_monte_carlo_converges_to_exact_expectation():
    cb = projective_codebook(3, max_weight=2)  # 9 codewords: 512 erasure patterns
    V = cb.to_dense()
    p = 0.6
    exact = 0.0
    for bits in itertools.product([False, True], repeat=len(cb)):
        mask = np.array(bits)
        prob = p ** (~mask).sum() * (1 - p) ** mask.sum()
        exact += prob * _exact_energy(V, np.eye(3), mask)
    estimate = captured_energy(cb, erasure_prob=p, n_samples=20_000, seed=0)
    assert estimate == pytest.approx(exact, abs=0.01)  # standard error ~0.002
    assert captured_energy(cb, erasure_prob=p, n_samples=500, seed=1) == captured_energy(cb, erasure_prob=p, n_samples=500, seed=1)
    assert captured_energy(cb, erasure_prob=0.0) == 1.0
    assert captured_energy(cb, erasure_prob=1.0) == 0.0
    tiled = block_codebook(cb, Partition.uniform(9, 3))
    assert captured_energy(tiled, erasure_prob=p, n_samples=20_000, seed=0) == pytest.approx(exact, abs=0.01)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda cb: coherence(np.eye(2)), TypeError, "cb must be a lwpd.Codebook"),
        (lambda cb: logdet_information(cb, noise=0.0), ValueError, "noise must be > 0"),
        (lambda cb: logdet_information(cb, covariance=np.ones(2)), ValueError, "length 3"),
        (lambda cb: mutual_information(cb, covariance=-np.ones(3)), ValueError, "non-negative"),
        (lambda cb: mutual_information(cb, covariance=np.array([[1, 2, 0], [0, 1, 0], [0, 0, 1.0]])), ValueError, "symmetric"),
        (lambda cb: mutual_information(cb, covariance=-np.eye(3)), ValueError, "positive semi-definite"),
        (lambda cb: captured_energy(cb, received=[0], erasure_prob=0.1), ValueError, "not both"),
        (lambda cb: captured_energy(cb, erasure_prob=1.5), ValueError, r"erasure_prob must lie in \[0, 1\]"),
        (lambda cb: captured_energy(cb, received=[99]), IndexError, "received must lie"),
    ],
)
def test_metric_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(projective_codebook(3))


def test_summary_table():
    s = summary(projective_codebook(3))
    assert s["n_codewords"] == 13 and s["max_weight"] == 3
    assert s["coherence"] == pytest.approx(math.sqrt(2 / 3))
    assert s["welch_bound"] == pytest.approx(welch_bound(13, 3))
    assert s["min_angle_deg"] == pytest.approx(math.degrees(math.acos(math.sqrt(2 / 3))))


def test_the_one_correlation_normalisation_against_numpy():
    """correlations_from_gram (used by the metrics, compress and the Grassmannian search)
    is G_ij / sqrt(G_ii G_jj) with a unit diagonal, a dead codeword's row and column 0."""
    from lwpd.metrics import correlations_from_gram

    rng = np.random.default_rng(4)
    V = rng.standard_normal((7, 4))
    V[3] = 0.0  # zero (prior) variance: carries nothing
    gram = V @ V.T
    norms = np.linalg.norm(V, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.nan_to_num(gram / np.outer(norms, norms))
    np.fill_diagonal(expected, 1.0)
    got = correlations_from_gram(gram)
    np.testing.assert_allclose(got, expected, atol=1e-15)
    assert not np.shares_memory(got, gram)
    assert correlations_from_gram(gram, in_place=True) is gram
