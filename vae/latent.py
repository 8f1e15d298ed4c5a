"""Looking into the latent space: encoding, spherical interpolation, traversals, and a folder's latents as .npz."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vae.data import FaceSet, load_faces, load_image
from vae.errors import UserError
from vae.files import atomic_path
from vae.images import make_grid, save_png
from vae.losses import kl_per_dim
from vae.prior import decode, prior_latents
from vae.progress import progress_bar



def encode(model, images, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of uint8 images (n, size, size, 3)."""
    x = np.asarray(images, np.float32) / 255.0
    mean, log_var = model.encoder.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(mean), np.asarray(log_var)


def encode_faces(model, faces: FaceSet, batch_size: int = 256, progress: bool = True,
                 indices=None) -> tuple[np.ndarray, np.ndarray]:
    """encode() over a FaceSet (or its `indices`), in batches so a large folder never sits in memory as floats."""
    indices = np.arange(len(faces)) if indices is None else np.asarray(indices)
    means, log_vars = [], []
    with progress_bar(len(indices), "encoding", progress) as bar:
        for start in range(0, len(indices), batch_size):
            mean, log_var = encode(model, faces.numpy(indices[start : start + batch_size]), batch_size)
            means.append(mean)
            log_vars.append(log_var)
            bar.update(len(mean))
    return np.concatenate(means), np.concatenate(log_vars)


def mean_kl(mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """KL of q(z|x) from N(0, 1) per latent dimension, in nats, averaged over images: shape (latent_dim,)."""
    return np.asarray(kl_per_dim(mean, log_var)).mean(axis=0)


def slerp(a, b, t) -> np.ndarray:
    """Points along the great circle from a (t = 0) to b (t = 1), White 2016; straight when a and b are parallel.

    Under a Gaussian prior most mass lies near a sphere: straight lines pass through its low-norm inside, arcs do not.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]
    cos = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


def interpolate_images(model, paths: list[str], steps: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Between two image files: encode, slerp the posterior means, decode.

    Returns the strip (first original, `steps` decoded faces, second original) and GIF frames
    (first original, moving face, second original).
    """
    if len(paths) != 2:
        raise UserError(f"--images needs exactly two image files, got {len(paths)}")
    originals = []
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"--images: {path} does not exist")
        try:
            originals.append(load_image(path, model.image_size))
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same to the user
            raise UserError(f"--images: cannot read {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    mean, _ = encode(model, np.stack(originals))
    faces = decode(model, slerp(mean[0], mean[1], np.linspace(0.0, 1.0, _check_steps(steps))))
    strip = make_grid(np.concatenate([originals[:1], faces, originals[1:]]), cols=steps + 2)
    frames = [make_grid(np.stack([originals[0], face, originals[1]]), cols=3) for face in faces]
    return strip, frames


def interpolate_prior(model, pairs: int, steps: int, seed: int, density=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Between `pairs` pairs of random prior points (from `density` if given): a grid with one pair per row, and GIF
    frames with the pairs side by side."""
    if pairs <= 0:
        raise UserError(f"--random must be positive, got {pairs}")
    ends = prior_latents(2 * pairs, model.latent_dim, seed, density=density)
    t = np.linspace(0.0, 1.0, _check_steps(steps))
    faces = decode(model, np.concatenate([slerp(ends[2 * i], ends[2 * i + 1], t) for i in range(pairs)]))
    rows = faces.reshape(pairs, steps, *faces.shape[1:])
    return make_grid(faces, cols=steps), [make_grid(rows[:, k], cols=pairs) for k in range(steps)]


def _check_steps(steps: int) -> int:
    if steps < 2:
        raise UserError(f"--steps must be at least 2, got {steps}")
    return steps


def traversal_grid(model, base: np.ndarray, dims: list[int], steps: int, span: float) -> np.ndarray:
    """One row per latent dimension in `dims`: `base` with that coordinate set to `steps` values from -span to +span
    (the prior's standard deviations), decoded."""
    values = np.linspace(-span, span, _check_steps(steps), dtype=np.float32)
    z = np.repeat(np.asarray(base, np.float32)[None], len(dims) * steps, axis=0)
    for row, dim in enumerate(dims):
        z[row * steps : (row + 1) * steps, dim] = values
    return make_grid(decode(model, z), cols=steps)


def traverse(model, faces: FaceSet, out: Path | str, num_dims: int, steps: int, span: float,
             image: str | None = None, progress: bool = True) -> list[tuple[int, float]]:
    """Write the traversal grid of the `num_dims` dimensions with the largest mean KL over `faces`, around the prior
    mean (or the posterior mean of `image`); return the (dimension, mean KL in nats) of each row."""
    if num_dims <= 0:
        raise UserError(f"--dims must be positive, got {num_dims}")
    kl = mean_kl(*encode_faces(model, faces, progress=progress))
    dims = [int(d) for d in np.argsort(-kl, kind="stable")[: min(num_dims, model.latent_dim)]]
    base = np.zeros(model.latent_dim, np.float32)
    if image is not None:
        if not Path(image).is_file():
            raise UserError(f"--image {image} does not exist")
        base = encode(model, load_image(image, model.image_size)[None])[0][0]
    save_png(traversal_grid(model, base, dims, steps, span), out, min_side=256)
    return [(d, float(kl[d])) for d in dims]


def encode_folder(model, folder: Path | str, out: Path | str, batch_size: int = 256, progress: bool = True) -> FaceSet:
    """Write `out` (.npz): names (paths relative to the folder), mean and log_var (n, latent_dim) of every image."""
    if batch_size < 1:
        raise UserError(f"--batch_size must be positive, got {batch_size}")
    faces = load_faces(folder, model.image_size, progress=progress)
    mean, log_var = encode_faces(model, faces, batch_size, progress)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a bare name
        np.savez(f, names=np.array(faces.names), mean=mean, log_var=log_var)
    return faces
