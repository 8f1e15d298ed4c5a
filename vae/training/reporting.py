"""What a run reports after each epoch: the line in the log, the loss-curve figure, the sample and reconstruction
grids, and TensorBoard."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vae.files import atomic_path
from vae.model.vae import decode, encode
from vae.pictures import make_grid, pairs_grid

SCALARS = ["loss", "recon", "kl", "beta", "val_loss", "val_recon", "val_kl", "val_psnr", "val_active_units",
           "learning_rate", "images_per_second", "skipped_steps"]


def say(text: str) -> None:
    print(text, flush=True)


def epoch_line(row: dict, num_epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{num_epochs}", f"loss {row['loss']:.1f}", f"recon {row['recon']:.1f}",
             f"kl {row['kl']:.1f}", f"val_loss {row['val_loss']:.1f}", f"val_psnr {row['val_psnr']:.2f} dB",
             f"active {int(row['val_active_units'])}", f"{row['images_per_second']:.0f} img/s", f"{row['seconds']:.0f}s"]
    if row.get("skipped_steps"):
        parts.append(f"skipped {int(row['skipped_steps'])} non-finite steps")
    return " | ".join(parts)


def epoch_grids(model, fixed_z, fixed_val) -> dict[str, np.ndarray]:
    """The grids shown after every epoch, named after their folders: faces from fixed z, validation reconstructions."""
    grids = {"samples": make_grid(decode(model, fixed_z), cols=8)}
    if len(fixed_val):
        grids["reconstructions"] = pairs_grid(fixed_val, decode(model, encode(model, fixed_val)[0]))
    return grids


def plot_history(history: list[dict], path: Path) -> None:
    """Loss, reconstruction and KL (training and validation) and validation PSNR per epoch, in one PNG."""
    epochs = [r["epoch"] for r in history]
    # A bare Figure (no pyplot, no display) with a fixed layout: a third of the time tight_layout takes.
    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, key, title in zip(axes, ["loss", "recon", "kl"], ["loss (recon + beta KL)", "reconstruction (L1 sum)", "KL (nats)"]):
        ax.plot(epochs, [r[key] for r in history], "o-", label="training", ms=3)
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", label="validation", ms=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[3].plot(epochs, [r["val_psnr"] for r in history], "s-", color="tab:green", ms=3)
    axes[3].set_title("validation PSNR (dB)")
    axes[3].set_xlabel("epoch")
    axes[3].grid(alpha=0.3)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.14, top=0.91, wspace=0.22)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")


class TensorBoardLog:
    def __init__(self, logdir: Path):
        self.writer = tf.summary.create_file_writer(str(logdir))

    def epoch(self, row: dict, images: dict[str, np.ndarray]) -> None:
        """Scalars of one history row and uint8 grid images, all at step = epoch number."""
        with self.writer.as_default(step=row["epoch"]):
            for name in SCALARS:
                if name in row:
                    tf.summary.scalar(name, row[name])
            for name, grid in images.items():
                tf.summary.image(name, grid[None])
        self.writer.flush()
