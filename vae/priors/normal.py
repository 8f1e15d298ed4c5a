"""N(0, I): the VAE's own prior, nothing to fit."""
from __future__ import annotations

import numpy as np

from vae.priors.base import Prior


class StandardNormal(Prior):
    name = "normal"
    fitted = False
    description = "N(0, I), the prior the VAE is trained towards"

    def __init__(self, latent_dim: int):
        self.latent_dim = latent_dim

    @classmethod
    def fit(cls, model, faces=None, indices=None, progress: bool = True) -> StandardNormal:
        return cls(model.latent_dim)

    def draw(self, num: int, seed, temperature: float = 1.0) -> np.ndarray:
        return (np.random.default_rng(seed).standard_normal((num, self.latent_dim)) * temperature).astype("float32")

    def principal_directions(self) -> tuple[np.ndarray, np.ndarray]:
        return np.eye(self.latent_dim, dtype=np.float32), np.ones(self.latent_dim, np.float32)

    def direction_label(self, index: int, sigma: float) -> str:
        return f"z{index}"

    def page_json(self) -> dict:
        return {"kind": "normal", "name": "N(0, I)"}
