"""Where random latents come from. A prior (vae.priors.base.Prior) draws latents, names its principal directions,
and, if it is fitted to a trained model, saves and loads itself; N(0, I) and the latent mixture are the two. A new
prior is one module with a Prior subclass, plus its line in PRIORS."""
from __future__ import annotations

import numpy as np

from vae.errors import UserError
from vae.priors.base import Prior, PriorUnavailable
from vae.priors.mixture import GaussianMixture
from vae.priors.normal import StandardNormal

PRIORS: dict[str, type[Prior]] = {cls.name: cls for cls in (StandardNormal, GaussianMixture)}  # --prior's choices
DEFAULT = GaussianMixture  # used when it can be had, else N(0, I)
CHUNK = 1024  # latents drawn per random stream: memory stays bounded, and --num never changes earlier faces

__all__ = ["CHUNK", "DEFAULT", "PRIORS", "GaussianMixture", "Prior", "PriorUnavailable", "StandardNormal",
           "prior_chunks", "prior_latents"]


def prior_chunks(prior: Prior, num: int, seed: int, temperature: float = 1.0):
    """`num` draws from `prior`, CHUNK rows at a time; `temperature` scales their spread.

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
        yield prior.draw(CHUNK, [seed, index], temperature)[: num - start]


def prior_latents(prior: Prior, num: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """All of prior_chunks() in one (num, latent_dim) array."""
    return np.concatenate(list(prior_chunks(prior, num, seed, temperature)))
