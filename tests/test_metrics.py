"""pygan.metrics on synthetic features, where the right answers are known in closed form.

Tolerances: closed forms to 1e-8 relative; sampled statistics as stated per test (seeded).
"""

import math

import numpy as np
import pytest

from pygan import metrics


def random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def frechet_by_eigenvalues(mu1, s1, mu2, s2):
    """tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), a symmetric route independent of sqrtm."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(w)) @ v.T
    lam = np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum())


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(16), random_spd(rng, 16)
    assert metrics.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form():
    """For diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    a, b = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("d", [2, 10, 64])
def test_frechet_distance_matches_the_symmetric_eigenvalue_route(d):
    rng = np.random.default_rng(d)
    mu1, mu2, s1, s2 = rng.standard_normal(d), rng.standard_normal(d), random_spd(rng, d), random_spd(rng, d)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_by_eigenvalues(mu1, s1, mu2, s2), rel=1e-7)


def test_frechet_distance_survives_singular_covariances():
    """Rank-deficient features (fewer samples than dimensions, a dead feature) still give a finite number."""
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((20, 32)), rng.standard_normal((20, 32)) + 1
    fake[:, 0] = 0.0
    value = metrics.frechet_distance_from_features(real, fake)
    assert np.isfinite(value) and value > 20


def test_frechet_distance_rejects_mismatched_statistics():
    with pytest.raises(ValueError, match="mismatched statistics"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_checks_name_the_problem():
    with pytest.raises(ValueError, match="NaN or Inf"):
        metrics.feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"2-D \(N, D\)"):
        metrics.feature_statistics(np.zeros(5))


def test_knn_radii_are_distances_to_the_kth_other_point():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    radii = metrics.knn_radii(points, [1, 2])
    np.testing.assert_allclose(radii[1], [1, 1, 2, 4])
    np.testing.assert_allclose(radii[2], [3, 2, 3, 6])
    with pytest.raises(ValueError, match="k must be in"):
        metrics.knn_radii(points, [4])


def test_knn_radii_agree_with_brute_force_across_chunks(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK", 7)  # several chunks, one of them short
    rng = np.random.default_rng(3)
    f = rng.standard_normal((40, 5))
    d = np.linalg.norm(f[:, None] - f[None], axis=2)
    np.fill_diagonal(d, np.inf)
    for k in (1, 3, 5):
        np.testing.assert_allclose(metrics.knn_radii(f, [k])[k], np.sort(d, axis=1)[:, k - 1], rtol=1e-9)


def test_same_distribution_scores_near_perfect():
    """Two samples of one Gaussian: precision and recall high, density about 1, coverage high."""
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((3000, 8)), rng.standard_normal((3000, 8))
    p, r = metrics.precision_recall(real, fake)
    d, c = metrics.density_coverage(real, fake)
    assert p > 0.75 and r > 0.75
    assert 0.85 < d < 1.15 and c > 0.9


def test_a_collapsed_generator_has_precision_but_no_recall_or_coverage():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((2000, 8))
    fake = real[:1].repeat(2000, axis=0) + 1e-3 * rng.standard_normal((2000, 8))
    p, r = metrics.precision_recall(real, fake)
    d, c = metrics.density_coverage(real, fake)
    assert p == 1.0 and r < 0.01 and c < 0.01


def test_a_far_away_generator_scores_zero():
    rng = np.random.default_rng(6)
    real, fake = rng.standard_normal((1000, 8)), rng.standard_normal((1000, 8)) + 20
    assert metrics.precision_recall(real, fake) == (0.0, 0.0)
    assert metrics.density_coverage(real, fake) == (0.0, 0.0)
    assert metrics.frechet_distance_from_features(real, fake) == pytest.approx(8 * 400, rel=0.05)


def test_precision_and_recall_swap_when_real_and_fake_swap():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((800, 4)), 1.5 * rng.standard_normal((700, 4))
    p, r = metrics.precision_recall(a, b)
    p2, r2 = metrics.precision_recall(b, a)
    assert (p, r) == (r2, p2)


def test_class_histogram_and_its_kl_to_uniform():
    k = 10
    balanced = np.eye(k)[np.arange(1000) % k]
    hist, kl = metrics.class_histogram(balanced)
    np.testing.assert_allclose(hist, 0.1)
    assert kl == pytest.approx(0.0, abs=1e-12)
    collapsed = np.eye(k)[np.zeros(1000, int)]
    hist, kl = metrics.class_histogram(collapsed)
    assert hist[0] == 1.0 and kl == pytest.approx(math.log(k))


def test_inception_score_ranges_from_one_to_the_number_of_classes():
    k = 10
    assert metrics.inception_score(np.eye(k)[np.arange(500) % k]) == pytest.approx(k, rel=1e-6)
    assert metrics.inception_score(np.full((500, k), 1.0 / k)) == pytest.approx(1.0)
    assert metrics.inception_score(np.eye(k)[np.zeros(500, int)]) == pytest.approx(1.0, abs=1e-6)


def test_knn_metrics_match_their_definitions_by_brute_force(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK", 5)  # several chunks
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((30, 3)), 1.3 * rng.standard_normal((23, 3)) + 0.3
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=2)
    r3, r5 = np.sort(d_rr, axis=1)[:, 3], np.sort(d_rr, axis=1)[:, 5]  # column 0 is the point itself
    f3 = np.sort(d_ff, axis=1)[:, 3]
    expected = {
        "precision": np.mean([(d_fr[j] <= r3).any() for j in range(len(fake))]),
        "recall": np.mean([(d_fr[:, i] <= f3).any() for i in range(len(real))]),
        "density": (d_fr <= r5[None]).sum() / (5 * len(fake)),
        "coverage": np.mean(d_fr.min(axis=0) <= r5),
    }
    got = metrics.knn_metrics(real, fake, 3, 5)
    assert got == pytest.approx(expected, rel=1e-12)
    assert metrics.knn_metrics(real, fake, 3, 5, metrics.knn_radii(real, [3, 5])) == got
