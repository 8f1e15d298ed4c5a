"""The Gaussian mixture used as an ex-post latent density."""
import numpy as np
import pytest

from vae.model.prior import GaussianMixture


@pytest.fixture(scope="module")
def two_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal([3.0, 0.0], [0.5, 1.0], (3000, 2))
    b = rng.normal([-3.0, 2.0], [1.0, 0.3], (1000, 2))
    return np.concatenate([a, b])


def test_fit_recovers_a_known_mixture(two_clusters):
    mixture = GaussianMixture.fit(two_clusters, components=2, seed=1)
    order = np.argsort(mixture.weights)[::-1]
    np.testing.assert_allclose(mixture.weights[order], [0.75, 0.25], atol=0.01)
    np.testing.assert_allclose(mixture.means[order], [[3.0, 0.0], [-3.0, 2.0]], atol=0.08)
    stds = np.sqrt(np.diagonal(mixture.covariances[order], axis1=1, axis2=2))
    np.testing.assert_allclose(stds, [[0.5, 1.0], [1.0, 0.3]], rtol=0.06)


def test_samples_follow_the_mixture_and_are_seeded(two_clusters):
    mixture = GaussianMixture.fit(two_clusters, components=2, seed=1)
    draws = mixture.sample(20000, seed=3)
    np.testing.assert_allclose(draws.mean(0), two_clusters.mean(0), atol=0.05)
    np.testing.assert_array_equal(draws, mixture.sample(20000, seed=3))
    assert not np.array_equal(draws, mixture.sample(20000, seed=4))
    cold = mixture.sample(20000, seed=3, temperature=0.1)
    assert np.abs(cold - np.round(cold)).mean() < np.abs(draws - np.round(draws)).mean()
    assert ((cold[:, 0] > 2.8) & (cold[:, 0] < 3.2)).sum() + ((cold[:, 0] > -3.2) & (cold[:, 0] < -2.8)).sum() > 19000


def test_two_components_explain_two_clusters_better_than_one(two_clusters):
    one = GaussianMixture.fit(two_clusters, components=1).log_likelihood(two_clusters).mean()
    two = GaussianMixture.fit(two_clusters, components=2, seed=1).log_likelihood(two_clusters).mean()
    assert two > one + 0.5


def test_save_and_load(tmp_path, two_clusters):
    mixture = GaussianMixture.fit(two_clusters, components=2, seed=1)
    mixture.save(tmp_path / "g.npz")
    loaded = GaussianMixture.load(tmp_path / "g.npz")
    np.testing.assert_array_equal(loaded.sample(10, seed=0), mixture.sample(10, seed=0))
