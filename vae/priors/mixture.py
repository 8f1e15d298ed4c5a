"""A Gaussian mixture fitted to the training images' latent means (Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders"): sampling from it avoids the regions of N(0, I) no training image maps to. Fitted by
expectation-maximisation in numpy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vae.priors import blas
from vae.priors.base import Prior, PriorUnavailable, pack_lower_triangles

COMPONENTS = 10  # as in Ghosh et al. 2020; more components mostly memorise a small training set
FIT_IMAGES = 10_000  # images encoded for the fit: plenty for 10 components, and seconds rather than minutes on a CPU
MIN_IMAGES_PER_COMPONENT = 10  # fewer training images than this per component: fewer components; none: N(0, I)
REGULARISATION = 1e-4  # added to every covariance's diagonal, so no component collapses onto a point


@dataclass
class GaussianMixture(Prior):
    name = "gmm"
    fitted = True
    description = "a Gaussian mixture fitted to the latent means of the run's training images (sharper, more typical faces)"

    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, d)
    covariances: np.ndarray  # (k, d, d)

    @classmethod
    def fit(cls, model, faces, indices=None, progress: bool = True) -> GaussianMixture:
        """The mixture over the posterior means of `faces` (or of its `indices`), at most FIT_IMAGES of them spread evenly;
        PriorUnavailable when there are too few for even one component."""
        from vae.model.vae import encode_faces

        indices = np.arange(len(faces)) if indices is None else np.asarray(indices)
        components = min(COMPONENTS, len(indices) // MIN_IMAGES_PER_COMPONENT)
        if components < 1:
            raise PriorUnavailable(f"{len(indices)} training images are too few to fit the latent mixture "
                                   f"(it needs at least {MIN_IMAGES_PER_COMPONENT})")
        indices = indices[np.unique(np.linspace(0, len(indices) - 1, min(FIT_IMAGES, len(indices))).astype(int))]
        means, _ = encode_faces(model, faces, indices, progress=progress)
        mixture = cls.from_latents(means, components, seed=0)
        if not mixture.is_finite():
            raise PriorUnavailable("the latent mixture came out non-finite (the model's latent means are not finite)")
        return mixture

    @classmethod
    def from_latents(cls, x: np.ndarray, components: int = COMPONENTS, seed: int = 0, iterations: int = 200,
                     tol: float = 1e-4) -> GaussianMixture:
        """EM from k-means++-style seeds, until the mean log-likelihood gains less than `tol` per iteration.

        On one BLAS thread: a second one gains little on these sizes and, next to a busy process, loses 16x."""
        x = np.asarray(x, np.float64)
        n, d = x.shape
        components = min(components, n)
        with blas.limited(1):
            rng = np.random.default_rng(seed)
            means = _spread_seeds(x, components, rng)
            spread = np.cov(x, rowvar=False).reshape(d, d) if n > 1 else np.zeros((d, d))
            covariances = np.repeat(spread[None] + REGULARISATION * np.eye(d), components, 0)
            mixture = cls(np.full(components, 1.0 / components), means, covariances)
            work = np.empty_like(x)  # one (n, d) buffer for every component's pass, not two new ones each
            previous = -np.inf
            for _ in range(iterations):
                log_resp, mean_ll = mixture._responsibilities(x, work)
                resp = np.exp(log_resp)
                counts = resp.sum(axis=0) + 1e-10
                mixture.weights = counts / n
                mixture.means = (resp.T @ x) / counts[:, None]
                for k in range(components):
                    # sqrt(r) (x - mean) times its own transpose: numpy's matmul sees A.T @ A and takes half the work.
                    np.subtract(x, mixture.means[k], out=work)
                    work *= np.sqrt(resp[:, k])[:, None]
                    mixture.covariances[k] = work.T @ work / counts[k] + REGULARISATION * np.eye(d)
                if mean_ll - previous < tol:
                    break
                previous = mean_ll
        return mixture

    def is_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (self.weights, self.means, self.covariances))

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log p(x) of each row."""
        return _logsumexp(self._component_log_densities(np.asarray(x, np.float64)), axis=1)

    def draw(self, num: int, seed, temperature: float = 1.0) -> np.ndarray:
        """`temperature` scales each draw's distance from its component's mean. Memory: O(num * d)."""
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.weights), size=num, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((num, self.means.shape[1]))
        out = np.empty((num, self.means.shape[1]), np.float32)
        for k, chol in enumerate(np.linalg.cholesky(self.covariances)):
            rows = which == k
            out[rows] = self.means[k] + temperature * eps[rows] @ chol.T
        return out

    def principal_directions(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.weights @ self.means
        centred = self.means - mean
        cov = np.einsum("k,kij->ij", self.weights, self.covariances) + (self.weights[:, None] * centred).T @ centred
        variances, vectors = np.linalg.eigh(cov)
        order = np.argsort(variances)[::-1]
        return vectors[:, order].T.astype(np.float32), np.sqrt(np.maximum(variances[order], 0.0)).astype(np.float32)

    def describe(self) -> str:
        return f"gmm ({len(self.weights)} components)"

    def page_json(self) -> dict:
        return {"kind": "mixture", "name": f"the run's latent mixture ({len(self.weights)} components)",
                "weights": (self.weights / self.weights.sum()).tolist(), "means": self.means.tolist(),
                "cholesky": pack_lower_triangles(np.linalg.cholesky(self.covariances))}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> GaussianMixture:
        mixture = cls(arrays["weights"], arrays["means"], arrays["covariances"])
        k, d = mixture.means.shape
        if mixture.weights.shape != (k,) or mixture.covariances.shape != (k, d, d) or not mixture.is_finite():
            raise ValueError("shapes or values are not those of a mixture")
        return mixture

    def _component_log_densities(self, x, work=None):
        """(n, k) log(weight_k * N(x | mean_k, cov_k)); `work`, if given, an (n, d) buffer to use."""
        n, d = x.shape
        work = np.empty_like(x) if work is None else work
        out = np.empty((n, len(self.weights)))
        for k, (mean, cov) in enumerate(zip(self.means, self.covariances)):
            chol = np.linalg.cholesky(cov)
            # One small inverse, then a matrix product over all n rows: BLAS-3, 3-4x faster than solve() on n columns.
            whiten = np.linalg.inv(chol).T
            np.matmul(x, whiten, out=work)
            work -= mean @ whiten
            log_det = 2.0 * np.log(np.diag(chol)).sum()
            distances = np.einsum("ij,ij->i", work, work)
            out[:, k] = np.log(self.weights[k] + 1e-300) - 0.5 * (d * np.log(2 * np.pi) + log_det + distances)
        return out

    def _responsibilities(self, x, work=None):
        joint = self._component_log_densities(x, work)
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
