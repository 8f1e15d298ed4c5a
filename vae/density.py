"""The latent density of a trained run: a Gaussian mixture over its training images' latent means, fitted once and cached."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vae.data import FaceSet, load_faces
from vae.errors import UserError
from vae.gmm import GaussianMixture
from vae.latent import encode_faces
from vae.run_folder import model_path, training_names

COMPONENTS = 10  # as in Ghosh et al. 2020; more components mostly memorise a small training set
FIT_IMAGES = 10_000  # images encoded for the fit: plenty for 10 components, and seconds rather than minutes on a CPU


def density_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.stem + ".gmm.npz")


def latent_density(model, model_arg, progress: bool = True) -> GaussianMixture:
    """The mixture for the model at `model_arg` (run folder or .keras): cached beside the model file, refitted when
    the model is newer than the cache."""
    model_file = model_path(model_arg)
    cache = density_path(model_file)
    if cache.exists() and cache.stat().st_mtime >= model_file.stat().st_mtime:
        return GaussianMixture.load(cache)
    found = training_names(model_file)
    if found is None:
        raise UserError(f"cannot find the training images of {model_file} (config.json, split.json and the data folder) "
                        "to fit the latent mixture; use --prior normal")
    folder, names = found
    mixture = fit_density(model, load_faces(folder, model.image_size, progress=progress, names=names), progress=progress)
    mixture.save(cache)
    return mixture


def fit_density(model, faces: FaceSet, indices=None, progress: bool = True) -> GaussianMixture:
    """The mixture over the posterior means of `faces` (or of its `indices`), at most FIT_IMAGES of them spread evenly."""
    indices = np.arange(len(faces)) if indices is None else np.asarray(indices)
    indices = indices[np.unique(np.linspace(0, len(indices) - 1, min(FIT_IMAGES, len(indices))).astype(int))]
    means, _ = encode_faces(model, faces, progress=progress, indices=indices)
    return GaussianMixture.fit(means, COMPONENTS, seed=0)


def prior_density(model, model_arg, prior: str | None, progress: bool = True) -> GaussianMixture | None:
    """What random latents are drawn from: the mixture ("gmm"), None for N(0, I) ("normal"); with no --prior
    given (None), the mixture when the run has one or its training images are found, else N(0, I) with a note."""
    if prior == "normal":
        return None
    try:
        return latent_density(model, model_arg, progress)
    except UserError:
        if prior == "gmm":
            raise
        print(f"note: no latent mixture for {model_arg} (its run's training images were not found); drawing from N(0, I)",
              file=sys.stderr)
        return None
