"""The latent density of a trained run: a Gaussian mixture over its training images' latent means, fitted once and cached."""
from __future__ import annotations

from pathlib import Path

from vae.data import FaceSet, load_faces
from vae.errors import UserError
from vae.gmm import GaussianMixture
from vae.latent import encode_faces
from vae.run_folder import model_path, training_names

COMPONENTS = 10  # as in Ghosh et al. 2020; more components mostly memorise a small training set


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
    """The mixture over the posterior means of `faces` (or of its `indices`)."""
    means, _ = encode_faces(model, faces, progress=progress, indices=indices)
    return GaussianMixture.fit(means, COMPONENTS, seed=0)
