"""Where random latents come from: N(0, I), the VAE's own prior, or a Gaussian mixture fitted to the training
images' latent means (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders"): sampling from it
avoids the regions of N(0, I) no training image maps to. The mixture is fitted by expectation-maximisation in numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae.errors import UserError
from vae.files import atomic_path

COMPONENTS = 10  # as in Ghosh et al. 2020; more components mostly memorise a small training set
FIT_IMAGES = 10_000  # images encoded for the fit: plenty for 10 components, and seconds rather than minutes on a CPU
MIN_IMAGES_PER_COMPONENT = 10  # fewer training images than this per component: fewer components; none: N(0, I)
REGULARISATION = 1e-4  # added to every covariance's diagonal, so no component collapses onto a point
CHUNK = 1024  # latents drawn per random stream: memory stays bounded, and --num never changes earlier faces


class MixtureUnavailable(Exception):
    """The latent mixture cannot be had (too few training images, or none found); the message says why."""


@dataclass
class GaussianMixture:
    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, d)
    covariances: np.ndarray  # (k, d, d)

    @classmethod
    def fit(cls, x: np.ndarray, components: int = COMPONENTS, seed: int = 0, iterations: int = 200, tol: float = 1e-4):
        """EM from k-means++-style seeds, until the mean log-likelihood gains less than `tol` per iteration."""
        x = np.asarray(x, np.float64)
        n, d = x.shape
        components = min(components, n)
        rng = np.random.default_rng(seed)
        means = _spread_seeds(x, components, rng)
        spread = np.cov(x, rowvar=False).reshape(d, d) if n > 1 else np.zeros((d, d))
        covariances = np.repeat(spread[None] + REGULARISATION * np.eye(d), components, 0)
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

    def is_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (self.weights, self.means, self.covariances))

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log p(x) of each row."""
        return _logsumexp(self._component_log_densities(np.asarray(x, np.float64)), axis=1)

    def sample(self, num: int, seed: int, temperature: float = 1.0) -> np.ndarray:
        """`num` draws; `temperature` scales each draw's distance from its component's mean. Memory: O(num * d)."""
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.weights), size=num, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((num, self.means.shape[1]))
        out = np.empty((num, self.means.shape[1]), np.float32)
        for k, chol in enumerate(np.linalg.cholesky(self.covariances)):
            rows = which == k
            out[rows] = self.means[k] + temperature * eps[rows] @ chol.T
        return out

    def principal_directions(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit directions as rows, their standard deviations) of the whole mixture, largest spread first."""
        mean = self.weights @ self.means
        centred = self.means - mean
        cov = np.einsum("k,kij->ij", self.weights, self.covariances) + (self.weights[:, None] * centred).T @ centred
        variances, vectors = np.linalg.eigh(cov)
        order = np.argsort(variances)[::-1]
        return vectors[:, order].T.astype(np.float32), np.sqrt(np.maximum(variances[order], 0.0)).astype(np.float32)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a bare name
            np.savez(f, weights=self.weights, means=self.means, covariances=self.covariances)

    @classmethod
    def load(cls, path: Path) -> GaussianMixture:
        """The mixture cached at `path`; UserError if the file is damaged."""
        try:
            with np.load(path) as f:
                mixture = cls(f["weights"], f["means"], f["covariances"])
        except Exception as e:  # noqa: BLE001 - truncated, garbage, wrong keys: the cache is unusable either way
            raise UserError(f"{path} is damaged ({type(e).__name__}); delete it and it is fitted again") from e
        k, d = mixture.means.shape
        if mixture.weights.shape != (k,) or mixture.covariances.shape != (k, d, d) or not mixture.is_finite():
            raise UserError(f"{path} is damaged (shapes or values); delete it and it is fitted again")
        return mixture

    def _component_log_densities(self, x):
        """(n, k) log(weight_k * N(x | mean_k, cov_k))."""
        n, d = x.shape
        out = np.empty((n, len(self.weights)))
        for k, (mean, cov) in enumerate(zip(self.means, self.covariances)):
            chol = np.linalg.cholesky(cov)
            # One small inverse, then a matrix product over all n rows: BLAS-3, 3-4x faster than solve() on n columns.
            solved = np.linalg.inv(chol) @ (x - mean).T
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
        seeds.append(x[rng.choice(len(x), p=dist / dist.sum())] if dist.sum() > 0 else x[rng.integers(len(x))])
        dist = np.minimum(dist, ((x - seeds[-1]) ** 2).sum(1))
    return np.array(seeds)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def fit_mixture(model, faces, indices=None, progress: bool = True) -> GaussianMixture:
    """The mixture over the posterior means of `faces` (or of its `indices`), at most FIT_IMAGES of them spread evenly;
    MixtureUnavailable when there are too few for even one component."""
    from vae.model.vae import encode_faces

    indices = np.arange(len(faces)) if indices is None else np.asarray(indices)
    components = min(COMPONENTS, len(indices) // MIN_IMAGES_PER_COMPONENT)
    if components < 1:
        raise MixtureUnavailable(f"{len(indices)} training images are too few to fit the latent mixture "
                                 f"(it needs at least {MIN_IMAGES_PER_COMPONENT})")
    indices = indices[np.unique(np.linspace(0, len(indices) - 1, min(FIT_IMAGES, len(indices))).astype(int))]
    means, _ = encode_faces(model, faces, indices, progress=progress)
    mixture = GaussianMixture.fit(means, components, seed=0)
    if not mixture.is_finite():
        raise MixtureUnavailable("the latent mixture came out non-finite (the model's latent means are not finite)")
    return mixture


def prior_chunks(num: int, latent_dim: int, seed: int, temperature: float = 1.0, density: GaussianMixture | None = None):
    """Latents z ~ N(0, temperature^2 I), or from `density` with the same temperature, CHUNK rows at a time.

    Each chunk has its own numpy stream, so a seed gives the same faces on every backend and for every --num.
    """
    if num <= 0:
        raise UserError(f"--num must be positive, got {num}")
    if not (temperature > 0 and np.isfinite(temperature)):
        raise UserError(f"--temperature must be a positive number, got {temperature}")
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed must be a whole number of at least 0, got {seed}")
    for index, start in enumerate(range(0, num, CHUNK)):
        # Always a whole chunk, then cut: the first faces of --num 64 are the first of --num 10000.
        if density is not None:
            chunk = density.sample(CHUNK, [seed, index], temperature)
        else:
            chunk = (np.random.default_rng([seed, index]).standard_normal((CHUNK, latent_dim)) * temperature).astype("float32")
        yield chunk[: num - start]


def prior_latents(num: int, latent_dim: int, seed: int, temperature: float = 1.0,
                  density: GaussianMixture | None = None) -> np.ndarray:
    """All of prior_chunks() in one (num, latent_dim) array."""
    return np.concatenate(list(prior_chunks(num, latent_dim, seed, temperature, density)))
