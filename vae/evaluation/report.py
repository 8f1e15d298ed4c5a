"""Evaluating a trained VAE on a folder: reconstruction, likelihood, latent usage and sample quality, as a report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vae.data.dataset import FaceSet, load_faces
from vae.errors import UserError
from vae.evaluation.quality import swd
from vae.evaluation.reconstruction import image_metrics
from vae.files import write_text_atomic
from vae.model.objective import abs_error_per_channel, bits_per_dim, kl_per_dim, laplace_nll_of_sums, laplace_scale
from vae.model.sampling import reparameterize
from vae.model.vae import ACTIVE_UNIT_NATS, decode, encode
from vae.pictures import GRID_IMAGES, make_grid, pairs_grid, save_png
from vae.priors import prior_latents
from vae.progress import progress_bar
from vae.run import Run

SCALE_IMAGES = 2000  # training images the Laplace scale is fitted on: enough for 3 digits, cheap to reconstruct
SWD_IMAGES = 2048
SWD_MEANINGFUL = 300  # below this many images the SWD mostly measures sampling noise (two real sets differ a lot)


def evaluation_images(run: Run, data, size: int, progress: bool = True) -> tuple[FaceSet, str]:
    """The images to look at: all under `data`, or else the run's validation split; with a description of them."""
    if data is not None:
        return load_faces(data, size, progress=progress), f"all images under {data}"
    folder = run.data_folder
    if folder is None:
        raise UserError(f"cannot find the data folder of the run {run} (config.json); pass --data")
    names = run.validation_names
    if not names:
        raise UserError(f"the run {run} has no validation images (split.json); pass --data")
    return load_faces(folder, size, progress=progress, names=names), f"the validation split of {folder}"


def _training_images(run: Run, size: int, progress: bool) -> tuple[FaceSet, str] | None:
    """Up to SCALE_IMAGES training images of the run, spread evenly over its sorted files; None if not found."""
    found = run.training_names()
    if found is None:
        return None
    folder, names = found
    chosen = [names[i] for i in np.unique(np.linspace(0, len(names) - 1, min(SCALE_IMAGES, len(names))).astype(int))]
    return load_faces(folder, size, progress=progress, names=chosen), f"{len(chosen)} training images of {folder}"


def _measure(model, faces: FaceSet, rng: np.random.Generator, batch_size: int, desc: str, progress: bool,
             recon_metrics: bool) -> dict[str, np.ndarray]:
    """Per image: the objective's reconstruction term with z drawn from q(z|x), KL per dimension, and (if asked) L1, PSNR and
    SSIM of the reconstruction from the posterior mean, rounded to 8 bits as reconstruct.py writes it."""
    out = {}
    with progress_bar(len(faces), desc, progress) as bar:
        for start in range(0, len(faces), batch_size):
            x = faces.numpy(range(start, min(start + batch_size, len(faces))))
            mean, log_var = encode(model, x, batch_size)
            z = np.asarray(reparameterize(mean, log_var, rng.standard_normal(mean.shape).astype(np.float32)))
            sampled = decode(model, z, batch_size, as_uint8=False)
            batch = {"abs_sums": np.asarray(abs_error_per_channel(x / 255.0, sampled)),
                     "kl_dims": np.asarray(kl_per_dim(mean, log_var))}
            if recon_metrics:
                batch.update(image_metrics(x, decode(model, mean, batch_size)))
            for k, v in batch.items():
                out.setdefault(k, []).append(v)
            bar.update(len(x))
    return {k: np.concatenate(v) for k, v in out.items()}


def evaluate(model, run: Run, data=None, num_samples: int = SWD_IMAGES, seed: int = 0, batch_size: int = 128,
             progress: bool = True, prior: str | None = None, temperature: float = 1.0) -> tuple[dict, dict[str, np.ndarray]]:
    """The report (JSON-ready numbers) and its grids (reconstructions, samples) for a model of `run` (where the run's
    data and split are found) on a folder.

    `prior` is what the samples are drawn from, as in sample.py: a name of vae.priors.PRIORS, or None (the default
    prior when it can be had).
    """
    if num_samples < 1:
        raise UserError(f"--num_samples must be positive, got {num_samples}")
    if batch_size < 1:
        raise UserError(f"--batch_size must be positive, got {batch_size}")
    size = model.image_size
    faces, described = evaluation_images(run, data, size, progress)
    dims = size * size * 3
    measured = _measure(model, faces, np.random.default_rng([seed, 1]), batch_size, "evaluating", progress, True)

    if model.log_scale is not None:
        log_scale, scale_source = np.asarray(model.log_scale, np.float64), "learned with the model, per channel"
    else:
        training = _training_images(run, size, progress)
        if training is None:
            scale_errors = measured["abs_sums"]
            scale_source = f"fitted on the {len(faces)} evaluated images (the run's training images were not found)"
        else:
            scale_faces, scale_source = training[0], f"fitted on {training[1]}"
            scale_errors = _measure(model, scale_faces, np.random.default_rng([seed, 2]), batch_size, "fitting the Laplace scale",
                                    progress, False)["abs_sums"]
        log_scale = np.log([laplace_scale(scale_errors / (size * size))])
    nll = np.asarray(laplace_nll_of_sums(measured["abs_sums"], log_scale, size * size))

    kl = measured["kl_dims"].sum(axis=1)
    per_dim_kl = measured["kl_dims"].mean(axis=0)
    n = min(num_samples, len(faces))
    real = faces.numpy(np.sort(np.random.default_rng([seed, 3]).choice(len(faces), n, replace=False)))
    drawn_from = run.prior(model, prior, progress)
    samples = decode(model, prior_latents(drawn_from, n, seed, temperature), batch_size)
    distances = swd(real, samples, seed)

    report = {
        "model": str(run), "images": len(faces), "data": described, "skipped": len(faces.skipped),
        "image_size": size, "latent_dim": model.latent_dim, "seed": seed,
        "l1": float(measured["l1"].mean()), "psnr": float(measured["psnr"].mean()), "ssim": float(measured["ssim"].mean()),
        "bits_per_dim": float(bits_per_dim(nll, kl, dims).mean()),
        "laplace_scale": [round(float(b), 5) for b in np.exp(log_scale)], "laplace_scale_fitted_on": scale_source,
        "kl_per_image": float(kl.mean()),
        "active_units": int((per_dim_kl > ACTIVE_UNIT_NATS).sum()),
        "swd_images": n, "swd_prior": drawn_from.name, "swd_temperature": temperature,
        "swd_x1e3": distances,
        "swd_warning": None if n >= SWD_MEANINGFUL else
        f"SWD on {n} images is mostly sampling noise; it means something from about {SWD_MEANINGFUL} images on",
    }
    originals = faces.numpy(range(min(GRID_IMAGES, len(faces))))
    grids = {"reconstructions": pairs_grid(originals, decode(model, encode(model, originals)[0])),
             "samples": make_grid(samples[:64], cols=8)}
    return report, grids


def report_table(report: dict) -> str:
    """The report as a markdown table (readable as plain text too)."""
    swd_levels = [k for k in report["swd_x1e3"] if k != "avg"]
    rows = [
        ("images", f"{report['images']} ({report['data']}; {report['skipped']} unreadable skipped)"),
        ("L1, mean abs error on [0, 1]", f"{report['l1']:.4f}"),
        ("PSNR", f"{report['psnr']:.2f} dB"),
        ("SSIM", f"{report['ssim']:.4f}"),
        ("negative ELBO", f"{report['bits_per_dim']:.4f} bits/dim"),
        ("Laplace scale b", f"{', '.join(f'{b:.4f}' for b in report['laplace_scale'])} ({report['laplace_scale_fitted_on']})"),
        ("KL per image", f"{report['kl_per_image']:.2f} nats"),
        ("active units", f"{report['active_units']} of {report['latent_dim']} (mean KL > {ACTIVE_UNIT_NATS} nats)"),
        *((f"SWD x1e3, {k} px", f"{report['swd_x1e3'][k]:.2f}") for k in swd_levels),
        ("SWD x1e3, average", f"{report['swd_x1e3']['avg']:.2f} ({report['swd_images']} samples "
                              f"from the {report['swd_prior']} prior"
                              + (f" at temperature {report['swd_temperature']:g}" if report["swd_temperature"] != 1 else "")
                              + " "
                              "vs as many images" + ("; too few to mean much" if report["swd_warning"] else "") + ")"),
    ]
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def write_report(report: dict, grids: dict[str, np.ndarray], out: Path | str) -> None:
    """report.json, report.md and the grid PNGs it shows, in `out`."""
    out = Path(out)
    for name, grid in grids.items():
        save_png(grid, out / f"{name}.png", min_side=256)
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "report.md", f"""# Evaluation of {report['model']}

{report_table(report)}

L1, PSNR and SSIM compare each image with its reconstruction from the posterior mean, rounded to 8 bits.
The negative ELBO uses one z drawn from q(z|x) per image and the Laplace likelihood of the reconstruction term,
p(x|z) = prod (1 / 2b) exp(-|x - x_hat| / b) on [0, 1]; b is {report['laplace_scale_fitted_on']} (a fitted b is its
maximum-likelihood value, the mean |x - x_hat|); bits per dimension of the 8-bit image, adding log2(255) for the
bin width 1/255.
Active units are latent dimensions whose mean KL over these images exceeds {ACTIVE_UNIT_NATS} nats.
SWD is the sliced Wasserstein distance between random 7x7 patches of each Laplacian-pyramid level (Karras et al.
2018) of {report['swd_images']} images and as many faces decoded from the prior; lower is better, and it is only
comparable between evaluations on equally many images.

## Reconstructions (rows of originals over rows of reconstructions)

![reconstructions](reconstructions.png)

## Samples from the prior

![samples](samples.png)
""")
