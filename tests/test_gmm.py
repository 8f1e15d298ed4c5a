"""The Gaussian mixture used as an ex-post latent density."""
import numpy as np
import pytest

from vae.priors import GaussianMixture, StandardNormal


@pytest.fixture(scope="module")
def two_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal([3.0, 0.0], [0.5, 1.0], (3000, 2))
    b = rng.normal([-3.0, 2.0], [1.0, 0.3], (1000, 2))
    return np.concatenate([a, b])


def test_fit_recovers_a_known_mixture(two_clusters):
    mixture = GaussianMixture.from_latents(two_clusters, components=2, seed=1)
    order = np.argsort(mixture.weights)[::-1]
    np.testing.assert_allclose(mixture.weights[order], [0.75, 0.25], atol=0.01)
    np.testing.assert_allclose(mixture.means[order], [[3.0, 0.0], [-3.0, 2.0]], atol=0.08)
    stds = np.sqrt(np.diagonal(mixture.covariances[order], axis1=1, axis2=2))
    np.testing.assert_allclose(stds, [[0.5, 1.0], [1.0, 0.3]], rtol=0.06)


def test_samples_follow_the_mixture_and_are_seeded(two_clusters):
    mixture = GaussianMixture.from_latents(two_clusters, components=2, seed=1)
    draws = mixture.draw(20000, seed=3)
    np.testing.assert_allclose(draws.mean(0), two_clusters.mean(0), atol=0.05)
    np.testing.assert_array_equal(draws, mixture.draw(20000, seed=3))
    assert not np.array_equal(draws, mixture.draw(20000, seed=4))
    cold = mixture.draw(20000, seed=3, temperature=0.1)
    assert np.abs(cold - np.round(cold)).mean() < np.abs(draws - np.round(draws)).mean()
    assert ((cold[:, 0] > 2.8) & (cold[:, 0] < 3.2)).sum() + ((cold[:, 0] > -3.2) & (cold[:, 0] < -2.8)).sum() > 19000


def test_two_components_explain_two_clusters_better_than_one(two_clusters):
    one = GaussianMixture.from_latents(two_clusters, components=1).log_likelihood(two_clusters).mean()
    two = GaussianMixture.from_latents(two_clusters, components=2, seed=1).log_likelihood(two_clusters).mean()
    assert two > one + 0.5


def test_save_and_load(tmp_path, two_clusters):
    mixture = GaussianMixture.from_latents(two_clusters, components=2, seed=1)
    mixture.save(tmp_path / "g.npz", model_checksum="abc")
    loaded, checksum = GaussianMixture.load(tmp_path / "g.npz")
    np.testing.assert_array_equal(loaded.draw(10, seed=0), mixture.draw(10, seed=0))
    assert checksum == "abc"


def test_sampling_many_latents_never_builds_a_matrix_per_draw():
    """20,000 draws in 128 dimensions: a (num, d, d) array of Cholesky factors would take 2.6 GB."""
    import tracemalloc

    rng = np.random.default_rng(0)
    factors = rng.normal(0, 0.1, (10, 128, 128))
    mixture = GaussianMixture(np.full(10, 0.1), rng.normal(0, 1, (10, 128)), factors @ factors.transpose(0, 2, 1) + np.eye(128))
    tracemalloc.start()
    draws = mixture.draw(20000, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert draws.shape == (20000, 128) and np.isfinite(draws).all()
    assert peak < 100e6, f"{peak / 1e6:.0f} MB"
    # Each draw from its own component: the component means explain most of the draws' spread.
    assert np.abs(draws.mean(0) - mixture.means.mean(0)).max() < 0.15


def test_too_few_training_images_for_the_mixture_is_said_not_fitted_as_nan():
    from vae.priors import PriorUnavailable

    class FewFaces:
        def __len__(self):
            return 9

    with pytest.raises(PriorUnavailable, match="9 training images are too few to fit the latent mixture"):
        GaussianMixture.fit(model=None, faces=FewFaces())
    one = GaussianMixture.from_latents(np.ones((1, 4)), components=1)
    assert one.is_finite() and one.draw(3, seed=0).shape == (3, 4)


def test_prior_draws_do_not_depend_on_how_many_are_asked_for():
    from vae.priors import CHUNK, prior_latents

    mixture = GaussianMixture.from_latents(np.random.default_rng(0).normal(0, 1, (200, 3)), components=2)
    for prior in (StandardNormal(3), mixture):
        many = prior_latents(prior, CHUNK + 500, seed=5)
        assert np.array_equal(prior_latents(prior, 64, seed=5), many[:64])
        assert np.array_equal(prior_latents(prior, CHUNK + 10, seed=5), many[: CHUNK + 10])
        assert not np.array_equal(prior_latents(prior, 64, seed=6), many[:64])
