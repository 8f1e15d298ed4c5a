"""A Gaussian mixture with full covariances, fitted by expectation-maximisation, in numpy.

Used as an ex-post density of the training set's latent means (Ghosh et al. 2020, "From Variational
to Deterministic Autoencoders"): sampling from it avoids the regions of N(0, I) no training image maps to.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae.files import atomic_path

REGULARISATION = 1e-4  # added to every covariance's diagonal, so no component collapses onto a point


@dataclass
class GaussianMixture:
    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, d)
    covariances: np.ndarray  # (k, d, d)

    @classmethod
    def fit(cls, x: np.ndarray, components: int = 10, seed: int = 0, iterations: int = 200, tol: float = 1e-4):
        """EM from k-means++-style seeds, until the mean log-likelihood gains less than `tol` per iteration."""
        x = np.asarray(x, np.float64)
        n, d = x.shape
        components = min(components, n)
        rng = np.random.default_rng(seed)
        means = _spread_seeds(x, components, rng)
        covariances = np.repeat(np.cov(x, rowvar=False).reshape(1, d, d) + REGULARISATION * np.eye(d), components, 0)
        mixture = cls(np.full(components, 1.0 / components), means, covariances)
        previous = -np.inf
        for _ in range(iterations):
            log_resp, mean_ll = mixture._responsibilities(x)
            resp = np.exp(log_resp)
            counts = resp.sum(axis=0) + 1e-10
            mixture.weights = counts / n
            mixture.means = (resp.T @ x) / counts[:, None]
            for k in range(components):
                centred = x - mixture.means[k]
                mixture.covariances[k] = (resp[:, k, None] * centred).T @ centred / counts[k] + REGULARISATION * np.eye(d)
            if mean_ll - previous < tol:
                break
            previous = mean_ll
        return mixture

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log p(x) of each row."""
        return _logsumexp(self._component_log_densities(np.asarray(x, np.float64)), axis=1)

    def sample(self, num: int, seed: int, temperature: float = 1.0) -> np.ndarray:
        """`num` draws; `temperature` scales each draw's distance from its component's mean."""
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.weights), size=num, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((num, self.means.shape[1]))
        chol = np.linalg.cholesky(self.covariances)
        return (self.means[which] + temperature * np.einsum("nij,nj->ni", chol[which], eps)).astype("float32")

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, weights=self.weights, means=self.means, covariances=self.covariances)

    @classmethod
    def load(cls, path: Path) -> "GaussianMixture":
        with np.load(path) as f:
            return cls(f["weights"], f["means"], f["covariances"])

    def _component_log_densities(self, x):
        """(n, k) log(weight_k * N(x | mean_k, cov_k))."""
        n, d = x.shape
        out = np.empty((n, len(self.weights)))
        for k, (mean, cov) in enumerate(zip(self.means, self.covariances)):
            chol = np.linalg.cholesky(cov)
            solved = np.linalg.solve(chol, (x - mean).T)
            log_det = 2.0 * np.log(np.diag(chol)).sum()
            out[:, k] = np.log(self.weights[k] + 1e-300) - 0.5 * (d * np.log(2 * np.pi) + log_det + (solved**2).sum(0))
        return out

    def _responsibilities(self, x):
        joint = self._component_log_densities(x)
        total = _logsumexp(joint, axis=1)
        return joint - total[:, None], float(total.mean())


def _spread_seeds(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next seed drawn with probability proportional to its squared distance."""
    seeds = [x[rng.integers(len(x))]]
    dist = ((x - seeds[0]) ** 2).sum(1)
    for _ in range(k - 1):
        seeds.append(x[rng.choice(len(x), p=dist / dist.sum())])
        dist = np.minimum(dist, ((x - seeds[-1]) ** 2).sum(1))
    return np.array(seeds)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)
