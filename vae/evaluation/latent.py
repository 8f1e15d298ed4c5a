"""Looking into the latent space: sampling faces, spherical interpolation, traversals, and a folder's latents as .npz."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vae.data.dataset import FaceSet, load_faces
from vae.data.image_files import load_image
from vae.errors import UserError
from vae.files import atomic_path, is_run_folder, refuse_inside
from vae.model.objective import kl_per_dim
from vae.model.vae import decode, encode, encode_faces
from vae.pictures import make_grid, save_png
from vae.priors import prior_chunks, prior_latents
from vae.progress import progress_bar

MAX_STEPS = 100  # faces along one interpolation or traversal row
MAX_ROWS = 32  # rows of one picture: random interpolations, traversed dimensions
FACE_FILES = "face_*.png"  # what sample_faces writes into --individual


def check_outputs(run, outs: list[tuple[str, Path]], inputs: list[tuple[str, str | Path | None]] = ()) -> None:
    """UserError if an output (flag, path) is or lands inside what the command reads: an input (flag, file or folder;
    None: not given), the run's data folder (the next run on it would train on the output), or the run folder, which
    is train.py's. Checked before the model is loaded, so a mistake costs no time."""
    inputs = [*inputs, ("the run's data folder", run.data_folder)]
    if is_run_folder(run.folder):
        inputs.append(("the run folder of --model", run.folder))
    for in_flag, given in (i for i in inputs if i[1] is not None):
        for out_flag, out in outs:
            if not Path(given).is_file():
                refuse_inside(out_flag, out, in_flag, given)
            elif Path(out).resolve() == Path(given).resolve():
                raise UserError(f"{out_flag} {out} is {in_flag} {given}; choose another name, the input is never written")


def face_name(index: int, num: int) -> str:
    """The file of face `index` of `num` in --individual: face_0000.png, or wider when `num` needs more digits."""
    return f"face_{index:0{max(4, len(str(num - 1)))}d}.png"


def check_individual(folder: Path | str, overwrite: bool) -> list[Path]:
    """The face_*.png files `folder` already holds; UserError if there are some and not `overwrite`, or if it is a file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--individual {folder} is a file; give a folder for the faces")
    older = sorted(folder.glob(FACE_FILES)) if folder.is_dir() else []
    if older and not overwrite:
        raise UserError(f"--individual {folder} already holds {len(older)} {FACE_FILES} files; pass --overwrite to replace "
                        "those of the same names (no other file is touched), or choose another folder")
    return older


def sample_faces(model, prior, out, num: int, seed: int, temperature: float = 1.0, individual=None,
                 grid_max: int = 1024, batch_size: int = 256) -> None:
    """Decode `num` prior draws chunk by chunk, so memory stays bounded; write each face into `individual` if given,
    then the grid of the first `grid_max` faces, last: once the grid exists, everything asked for was written."""
    shown, start = [], 0
    with progress_bar(num, "sampling", enabled=num > grid_max) as bar:
        for z in prior_chunks(prior, num, seed, temperature):
            faces = decode(model, z, batch_size)
            if individual is not None:
                for i, face in enumerate(faces):
                    save_png(face, Path(individual) / face_name(start + i, num))
            shown.append(faces[: max(0, grid_max - start)])
            start += len(faces)
            bar.update(len(faces))
    grid = np.concatenate(shown)
    save_png(make_grid(grid, cols=math.ceil(math.sqrt(len(grid)))), out, min_side=256)


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


def interpolate_prior(model, pairs: int, steps: int, seed: int, prior) -> tuple[np.ndarray, list[np.ndarray]]:
    """Between `pairs` pairs of random points of `prior`: a grid with one pair per row, and GIF
    frames with the pairs side by side."""
    check_interpolation(pairs, steps)
    ends = prior_latents(prior, 2 * pairs, seed)
    t = np.linspace(0.0, 1.0, _check_steps(steps))
    faces = decode(model, np.concatenate([slerp(ends[2 * i], ends[2 * i + 1], t) for i in range(pairs)]))
    rows = faces.reshape(pairs, steps, *faces.shape[1:])
    return make_grid(faces, cols=steps), [make_grid(rows[:, k], cols=pairs) for k in range(steps)]


def check_interpolation(pairs: int | None, steps: int) -> None:
    """UserError unless the rows (random pairs, if any) and the steps are within bounds."""
    if pairs is not None and not 0 < pairs <= MAX_ROWS:
        raise UserError(f"--random must be from 1 to {MAX_ROWS}, got {pairs}")
    _check_steps(steps)


def _check_steps(steps: int) -> int:
    if not 2 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must be from 2 to {MAX_STEPS}, got {steps}")
    return steps


def traversal_grid(model, base: np.ndarray, dims: list[int], steps: int, span: float) -> np.ndarray:
    """One row per latent dimension in `dims`: `base` with that coordinate set to `steps` values from -span to +span
    (the prior's standard deviations), decoded."""
    values = np.linspace(-span, span, _check_steps(steps), dtype=np.float32)
    z = np.repeat(np.asarray(base, np.float32)[None], len(dims) * steps, axis=0)
    for row, dim in enumerate(dims):
        z[row * steps : (row + 1) * steps, dim] = values
    return make_grid(decode(model, z), cols=steps)


def check_traversal(model, num_dims: int, steps: int, span: float) -> None:
    """UserError unless the traversal's rows, columns and span are within bounds (checked before any image is read)."""
    most = min(MAX_ROWS, model.latent_dim)
    if not 0 < num_dims <= most:
        raise UserError(f"--dims must be from 1 to {most}, got {num_dims}")
    if not (span > 0 and math.isfinite(span)):
        raise UserError(f"--span must be a positive number, got {span}")
    _check_steps(steps)


def traverse(model, faces: FaceSet, out: Path | str, num_dims: int, steps: int, span: float,
             image: str | None = None, progress: bool = True) -> list[tuple[int, float]]:
    """Write the traversal grid of the `num_dims` dimensions with the largest mean KL over `faces`, around the prior
    mean (or the posterior mean of `image`); return the (dimension, mean KL in nats) of each row."""
    check_traversal(model, num_dims, steps, span)
    kl = mean_kl(*encode_faces(model, faces, progress=progress))
    dims = [int(d) for d in np.argsort(-kl, kind="stable")[:num_dims]]
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
    mean, log_var = encode_faces(model, faces, batch_size=batch_size, progress=progress)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a bare name
        np.savez(f, names=np.array(faces.names), mean=mean, log_var=log_var)
    return faces
