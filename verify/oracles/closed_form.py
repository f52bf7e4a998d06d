"""Closed-form oracles: the PPCA / factor-analysis Gaussian (Prop. 1 with one region, NOTES §1).

A linear decoder ``g(z) = W z + b`` (or a network whose relevant space is one region with map
(A, b)) gives ``p(x) = N(x; b, W Sigma_z W^T + Sigma_x)`` and the Gaussian posterior
``N((Sigma_z^-1 + W^T Sigma_x^-1 W)^-1 W^T Sigma_x^-1 (x - b), (Sigma_z^-1 + W^T Sigma_x^-1 W)^-1)``.
Three independent implementations of the marginal: ``scipy.stats.multivariate_normal``, and
sklearn's ``FactorAnalysis.score_samples`` (diagonal Sigma_x) / ``PCA.score_samples`` (isotropic
Sigma_x) with their fitted attributes set to the model's parameters.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def gaussian_marginal(
    W: np.ndarray, b: np.ndarray, cov_z: np.ndarray, cov_x: np.ndarray, X: np.ndarray
) -> np.ndarray:
    """log N(x; b, W Sigma_z W^T + Sigma_x) by scipy."""
    return np.atleast_1d(stats.multivariate_normal(mean=b, cov=W @ cov_z @ W.T + cov_x).logpdf(X))


def gaussian_posterior(W, b, cov_z, cov_x, X):
    """Posterior mean (N, S) and covariance (S, S) of the linear-Gaussian model (textbook formula)."""
    prec = np.linalg.inv(cov_z) + W.T @ np.linalg.solve(cov_x, W)
    cov = np.linalg.inv(prec)
    mean = (cov @ W.T @ np.linalg.solve(cov_x, (X - b).T)).T
    return mean, cov


def factor_analysis_marginal(W, b, cov_z, cov_x, X) -> np.ndarray:
    """sklearn ``FactorAnalysis.score_samples`` with components ``(W L_z)^T`` and noise diag(Sigma_x)."""
    from sklearn.decomposition import FactorAnalysis

    if not np.allclose(cov_x, np.diag(np.diag(cov_x)), rtol=0, atol=0):
        raise ValueError("FactorAnalysis needs a diagonal Sigma_x")
    fa = FactorAnalysis(n_components=W.shape[1])
    fa.components_ = (W @ np.linalg.cholesky(cov_z)).T
    fa.noise_variance_ = np.diag(cov_x).copy()
    fa.mean_ = np.asarray(b, dtype=np.float64)
    fa.n_features_in_ = W.shape[0]
    return fa.score_samples(X)


def pca_marginal(W, b, cov_z, cov_x, X) -> np.ndarray:
    """sklearn ``PCA.score_samples`` (probabilistic PCA, Tipping & Bishop) for isotropic Sigma_x."""
    from sklearn.decomposition import PCA

    D, S = W.shape
    sigma2 = float(cov_x[0, 0])
    if not np.allclose(cov_x, sigma2 * np.eye(D), rtol=0, atol=0):
        raise ValueError("PCA needs an isotropic Sigma_x")
    lam, U = np.linalg.eigh(W @ cov_z @ W.T)
    order = np.argsort(lam)[::-1][:S]
    pca = PCA(n_components=S)
    pca.components_ = U[:, order].T
    pca.explained_variance_ = lam[order] + sigma2
    pca.noise_variance_ = sigma2
    pca.mean_ = np.asarray(b, dtype=np.float64)
    pca.n_components_ = S
    pca.n_features_in_ = D
    pca.whiten = False
    return pca.score_samples(X)
