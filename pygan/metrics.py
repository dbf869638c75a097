"""Sample-quality metrics computed on feature vectors (float64 numpy), with no network access.

    frechet_distance           ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))   (Heusel et al. 2017)
    precision_recall           k-NN manifolds, k = 3                                  (Kynkaanniemi et al. 2019)
    density_coverage           k-NN balls around real samples, k = 5                  (Naeem et al. 2020)
    class_histogram            predicted classes of the samples and KL(histogram || uniform)
    inception_score            exp(E_x KL(p(y|x) || p(y))) with the evaluation classifier

All of them are biased at small sample sizes (the Frechet distance upwards, recall and coverage
downwards), so numbers are comparable only at equal n; `pygan eval` labels n < 10000 as biased.
"""

import warnings

import numpy as np

__all__ = [
    "feature_statistics", "frechet_distance", "frechet_distance_from_features", "knn_radii", "knn_metrics",
    "precision_recall", "density_coverage", "class_histogram", "inception_score",
]

_CHUNK = 1024  # rows of a distance matrix held at once: 1024 x 10000 float64 is 80 MB


def _features(name, f):
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array with N >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return f


def feature_statistics(features):
    """(mean (D,), covariance (D, D)) in float64, the covariance with the unbiased 1/(N-1)."""
    f = _features("features", features)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    The matrix square root is scipy.linalg.sqrtm of sigma1 @ sigma2. When the product is (near)
    singular its square root can come back non-finite; then, as pytorch-fid does, both covariances
    get 1e-6 added to their diagonals. A small imaginary part (rounding) is dropped; a large one
    means the inputs were not covariance matrices and raises.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: means {mu1.shape} and {mu2.shape}, covariances "
                         f"{sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    covmean, trouble = _sqrtm(linalg, sigma1 @ sigma2)
    if trouble:
        offset = np.eye(len(mu1)) * 1e-6
        covmean, _ = _sqrtm(linalg, (sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.abs(covmean).max())):
            raise ValueError(f"frechet_distance: sqrtm has a large imaginary part ({np.abs(covmean.imag).max():.3g}); "
                             "are sigma1 and sigma2 covariance matrices?")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(max(value, 0.0))  # rounding can leave identical distributions a hair below 0


def _sqrtm(linalg, a):
    """(sqrtm(a), whether scipy warned that a is singular or the result is not finite)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(a)
    return root, bool(caught) or not np.isfinite(root).all()


def frechet_distance_from_features(real, fake):
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def _sq_norms(a):
    return np.einsum("ij,ij->i", a, a)


def _distance_chunks(a, b):
    """Yield (start, D) with D = Euclidean distances between rows a[start:start+CHUNK] and all rows of b."""
    nb = _sq_norms(b)
    for start in range(0, len(a), _CHUNK):
        block = a[start : start + _CHUNK]
        d2 = _sq_norms(block)[:, None] + nb[None, :] - 2.0 * (block @ b.T)
        yield start, np.sqrt(np.maximum(d2, 0.0))


def knn_radii(features, ks):
    """{k: distance of every row to its k-th nearest OTHER row} for each k in ks."""
    f = _features("features", features)
    ks = sorted(set(int(k) for k in ks))
    if ks[0] < 1 or ks[-1] >= len(f):
        raise ValueError(f"k must be in [1, {len(f) - 1}] for {len(f)} samples, got {ks}")
    radii = {k: np.empty(len(f)) for k in ks}
    for start, d in _distance_chunks(f, f):
        rows = np.arange(len(d))
        d[rows, start + rows] = -1.0  # the row itself sorts first, so index k is the k-th neighbour
        part = np.partition(d, ks, axis=1)
        for k in ks:
            radii[k][start : start + len(d)] = part[:, k]
    return radii


def knn_metrics(real, fake, k_pr=3, k_dc=5, real_radii=None):
    """Precision and recall (k-NN balls of k_pr neighbours) and density and coverage (k_dc), from one
    pass over the fake-vs-real distances. real_radii: {k: knn_radii of real}, if already computed.
    k_pr or k_dc None leaves that pair out. Returns a dict with the metrics computed."""
    real, fake = _features("real features", real), _features("fake features", fake)
    ks = [k for k in (k_pr, k_dc) if k is not None]
    known = real_radii or {}
    missing = [k for k in ks if k not in known]
    radii = {**known, **(knn_radii(real, missing) if missing else {})}
    r_fake = knn_radii(fake, [k_pr])[k_pr] if k_pr is not None else None
    inside_real = np.zeros(len(fake), bool)  # precision: fake sample within some real k_pr-ball
    inside_fake = np.zeros(len(real), bool)  # recall: real sample within some fake k_pr-ball
    balls_holding = 0  # density: sum over fake samples of the real k_dc-balls holding them
    nearest_fake = np.full(len(real), np.inf)  # coverage: a real ball holds its nearest fake sample
    for start, d in _distance_chunks(fake, real):
        if k_pr is not None:
            inside_real[start : start + len(d)] = (d <= radii[k_pr][None, :]).any(axis=1)
            inside_fake |= (d <= r_fake[start : start + len(d), None]).any(axis=0)
        if k_dc is not None:
            balls_holding += int((d <= radii[k_dc][None, :]).sum())
            nearest_fake = np.minimum(nearest_fake, d.min(axis=0))
    out = {}
    if k_pr is not None:
        out.update(precision=float(inside_real.mean()), recall=float(inside_fake.mean()))
    if k_dc is not None:
        out.update(density=float(balls_holding / (k_dc * len(fake))),
                   coverage=float((nearest_fake <= radii[k_dc]).mean()))
    return out


def precision_recall(real, fake, k=3, real_radii=None):
    """(precision, recall): the fraction of fake samples inside the real k-NN manifold, and of real
    samples inside the fake one (a sample is inside when it lies within some sample's k-NN ball)."""
    m = knn_metrics(real, fake, k, None, None if real_radii is None else {k: real_radii})
    return m["precision"], m["recall"]


def density_coverage(real, fake, k=5, real_radii=None):
    """(density, coverage) after Naeem et al.: density counts how many real k-NN balls hold each fake
    sample (divided by k, so about 1 when the distributions match); coverage is the fraction of real
    samples whose ball holds at least one fake sample."""
    m = knn_metrics(real, fake, None, k, None if real_radii is None else {k: real_radii})
    return m["density"], m["coverage"]


def class_histogram(probs):
    """(fraction of samples per predicted class, KL(fraction || uniform) in nats).

    KL is 0 when every class is predicted equally often and log(K) when all samples land in one class.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a 2-D (N, K) array of class probabilities, got shape {probs.shape}")
    k = probs.shape[1]
    hist = np.bincount(probs.argmax(axis=1), minlength=k) / len(probs)
    nz = hist > 0
    return hist, float(np.sum(hist[nz] * np.log(hist[nz] * k)))


def inception_score(probs):
    """exp(mean over x of KL(p(y|x) || p(y))): high when each sample is confidently one class and the
    classes are balanced; between 1 and K (the number of classes). One split over all samples."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probs must be a 2-D (N, K) array of class probabilities, got shape {p.shape}")
    p = np.clip(p, 1e-12, 1.0)
    marginal = p.mean(axis=0)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))
