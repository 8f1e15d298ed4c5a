"""TensorBoard logs of a run: per-epoch scalars and the sample and reconstruction grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

SCALARS = ["loss", "recon", "kl", "beta", "val_loss", "val_recon", "val_kl", "val_psnr", "val_active_units",
           "learning_rate", "images_per_second", "skipped_steps"]


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
