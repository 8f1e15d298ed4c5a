"""What every prior offers: draw latents, its principal directions, its parameters for the web page, save and load."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import ClassVar

import numpy as np

from vae.errors import UserError
from vae.files import atomic_path


class PriorUnavailable(Exception):
    """A prior cannot be had for this model (too few training images, or none found); the message says why."""


class Prior:
    """A distribution over latents. Subclasses set `name` (its --prior value) and `fitted` (whether it is fitted to a
    trained model's latents, and then saved beside the model), and implement the methods below."""

    name: ClassVar[str]
    fitted: ClassVar[bool]
    description: ClassVar[str]  # for --prior's help

    @classmethod
    def fit(cls, model, faces, indices=None, progress: bool = True) -> Prior:
        """The prior for `model`, from the posterior means of `faces` (or of its `indices`) if it is fitted."""
        raise NotImplementedError

    def draw(self, num: int, seed, temperature: float = 1.0) -> np.ndarray:
        """(num, latent_dim) float32 draws from one numpy stream seeded with `seed`; `temperature` scales the spread."""
        raise NotImplementedError

    def principal_directions(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit directions as rows, their standard deviations), largest spread first."""
        raise NotImplementedError

    def direction_label(self, index: int, sigma: float) -> str:
        """The slider label of principal direction `index`."""
        return f"PC{index + 1} (σ={sigma:.2f})"

    def describe(self) -> str:
        """A few words for messages and the explorer, e.g. "gmm (10 components)"."""
        return self.name

    def page_json(self) -> dict:
        """The parameters the exported web page samples from ("kind" says which of its samplers)."""
        raise NotImplementedError

    # Fitted priors are saved as arrays beside the model they belong to, with that model's checksum.

    def arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Prior:
        """The prior of saved arrays; ValueError if they do not make one."""
        raise NotImplementedError

    def save(self, path: Path, model_checksum: str) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a bare name
            np.savez(f, model_checksum=np.array(model_checksum), **self.arrays())

    @classmethod
    def load(cls, path: Path) -> tuple[Prior, str]:
        """(the prior saved at `path`, the checksum of the model it was fitted for); UserError if the file is damaged."""
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
            checksum = str(arrays.pop("model_checksum", ""))  # absent in files of earlier versions
            return cls.from_arrays(arrays), checksum
        except Exception as e:  # noqa: BLE001 - truncated, garbage, wrong keys: the file is unusable either way
            raise UserError(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); delete it and train.py fits it "
                            "again when it completes the run") from e


def pack_lower_triangles(lower: np.ndarray) -> str:
    """Base64 of the float32 little-endian lower triangles, row by row, of (k, d, d) matrices: 10 components of 128
    dimensions take 0.4 MB so, where JSON numbers took 2.1 MB."""
    rows, cols = np.tril_indices(lower.shape[-1])
    return base64.b64encode(np.ascontiguousarray(lower[:, rows, cols], "<f4").tobytes()).decode("ascii")
