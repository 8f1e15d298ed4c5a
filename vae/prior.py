"""Drawing latent vectors from the prior and decoding them into faces."""
from __future__ import annotations

import numpy as np

from vae.errors import UserError
from vae.images import to_uint8


def prior_latents(num: int, latent_dim: int, seed: int, temperature: float = 1.0, density=None) -> np.ndarray:
    """z ~ N(0, temperature^2 I), or from a fitted `density` (vae.gmm.GaussianMixture) with the same temperature.

    numpy's generator, so a seed means the same faces on every backend.
    """
    if num <= 0:
        raise UserError(f"--num must be positive, got {num}")
    if not temperature > 0:
        raise UserError(f"--temperature must be positive, got {temperature}")
    if density is not None:
        return density.sample(num, seed, temperature)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((num, latent_dim)) * temperature).astype("float32")


def decode(model, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Faces for latent vectors, as uint8 (n, size, size, 3)."""
    return to_uint8(model.decoder.predict(z, batch_size=batch_size, verbose=0))
