"""Reconstructing a folder of images: PNG per image, a comparison grid, and per-image L1, PSNR and SSIM."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vae.data.dataset import load_faces
from vae.data.image_files import printable
from vae.errors import UserError
from vae.evaluation.quality import ssim
from vae.files import refuse_inside, write_csv
from vae.model.objective import psnr
from vae.model.vae import decode, encode
from vae.pictures import GRID_IMAGES, pairs_grid, save_png
from vae.progress import progress_bar

RESERVED = {"comparison.png", "metrics.csv"}


def image_metrics(originals: np.ndarray, reconstructions: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image mean absolute error on [0, 1], PSNR (dB) and SSIM, from uint8 images."""
    a, b = np.asarray(originals, np.float64) / 255.0, np.asarray(reconstructions, np.float64) / 255.0
    return {"l1": np.abs(a - b).mean(axis=(1, 2, 3)), "psnr": np.asarray(psnr(originals, reconstructions)), "ssim": ssim(a, b)}


def output_names(names: list[str]) -> list[str]:
    """Each input's relative path with a .png suffix; clashes (a.jpg, a.png) and reserved names keep the old suffix."""
    wanted = [str(Path(n).with_suffix(".png")) for n in names]
    counts = {w: wanted.count(w) for w in wanted}
    return [n + ".png" if counts[w] > 1 or w in RESERVED else w for n, w in zip(names, wanted)]


def check_output(input_dir: Path, output_dir: Path, outs: list[str] = ()) -> None:
    """Refuse to write anything inside the input folder: the same folder, one inside it, or a way in through a symlink."""
    refuse_inside("--output", output_dir, "--input", input_dir, [*RESERVED, *outs])


def reconstruct_folder(model, input_dir, output_dir, batch_size: int = 128, progress: bool = True) -> dict:
    """Write a reconstruction of every image under input_dir into output_dir; return mean metrics and counts.

    metrics.csv is written last, and one left by an earlier run is removed first: a folder without it is incomplete.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        what = "is a file, not a folder" if input_dir.exists() else "does not exist"
        raise UserError(f"--input {input_dir} {what}; pass a folder of images")
    if batch_size <= 0:
        raise UserError(f"--batch_size must be positive, got {batch_size}")
    check_output(input_dir, output_dir)  # before decoding, which can take minutes
    faces = load_faces(input_dir, model.image_size, progress=progress)
    outs = output_names(faces.names)
    check_output(input_dir, output_dir, outs)
    for name in RESERVED:
        (output_dir / name).unlink(missing_ok=True)
    rows, grid_pairs = [], ([], [])
    with progress_bar(len(faces), "reconstructing", progress) as bar:
        for start in range(0, len(faces), batch_size):
            originals = faces.numpy(range(start, min(start + batch_size, len(faces))))
            recon = decode(model, encode(model, originals, batch_size)[0], batch_size)
            metrics = image_metrics(originals, recon)
            for i, image in enumerate(recon):
                save_png(image, output_dir / outs[start + i])
                rows.append({"file": printable(faces.names[start + i]), "output": printable(outs[start + i]),
                             **{k: round(float(v[i]), 5) for k, v in metrics.items()}})
            room = GRID_IMAGES - len(grid_pairs[0])
            grid_pairs[0].extend(originals[:room])
            grid_pairs[1].extend(recon[:room])
            bar.update(len(originals))
    save_png(pairs_grid(np.array(grid_pairs[0]), np.array(grid_pairs[1])), output_dir / "comparison.png", min_side=256)
    write_csv(output_dir / "metrics.csv", rows, ["file", "output", "l1", "psnr", "ssim"])
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("l1", "psnr", "ssim")}
    return {"images": len(rows), "skipped": faces.skipped, **means}
