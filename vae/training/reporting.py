"""What a run reports after each epoch: the line in the log, the loss-curve figure, the sample and reconstruction
grids, and TensorBoard."""
from __future__ import annotations

import io
import itertools
import os
import socket
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from vae.files import atomic_path
from vae.model.vae import ADVERSARIAL_LOGS, decode, encode
from vae.pictures import make_grid, pairs_grid

SCALARS = ["loss", "recon", "kl", "beta", "val_loss", "val_recon", "val_kl", "val_psnr", "val_active_units",
           "learning_rate", "images_per_second", "skipped_steps", "frequency", *ADVERSARIAL_LOGS, "disc_skipped_steps"]
_LOG_NUMBERS = itertools.count()  # event files made by this process, in their names as tf.summary numbers them


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


def loss_curve_figure(history: list[dict]) -> Figure:
    """Loss, reconstruction and KL (training and validation) and validation PSNR per epoch, four panels in one Figure."""
    epochs = [r["epoch"] for r in history]
    # A bare Figure (no pyplot, no display) with a fixed layout: a third of the time tight_layout takes.
    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        # The values themselves: a curve that barely moves read 0.000075 to 0.000325 under a 10.6 offset.
        ax.ticklabel_format(axis="y", useOffset=False)
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
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.91, wspace=0.26)
    return fig


def plot_history(history: list[dict], path: Path) -> None:
    """loss_curve_figure of `history`, as a PNG at `path`."""
    with atomic_path(path) as tmp:
        loss_curve_figure(history).savefig(tmp, dpi=90, format="png")


class TensorBoardLog:
    """A run's TensorBoard event file, appended one epoch at a time, that always ends on a whole record.

    Written here, not by tf.summary's writer: on a full disk that one left a torn record and reported success for it,
    and keeps its own buffer and offset, so nothing can cut its file back. Each epoch's records go in as one append;
    one that fails is cut back off and raised as an OSError naming the file."""

    def __init__(self, logdir: Path, record=lambda path: None):
        self.logdir = Path(logdir)
        self.record = record  # told the file's path before it is made (the run folder's manifest)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path: Path | None = None  # made by the first epoch, so a run stopped before one leaves no empty log
        self.size = 0  # bytes of whole records in it

    def epoch(self, row: dict, images: dict[str, np.ndarray]) -> None:
        """Scalars of one history row and uint8 grid images, all at step = epoch number."""
        summary = summary_pb2.Summary()
        for name in SCALARS:
            if name in row:
                summary.value.extend(scalar_pb(name, row[name]).value)
        for name, grid in images.items():
            png = io.BytesIO()
            Image.fromarray(grid).save(png, format="PNG")
            # tf.summary.image's layout: width, height, then the encoded images.
            tensor = tensor_util.make_tensor_proto([str(grid.shape[1]).encode(), str(grid.shape[0]).encode(), png.getvalue()])
            summary.value.add(tag=name, metadata=image_metadata.create_summary_metadata(None, None), tensor=tensor)
        events = [event_pb2.Event(wall_time=time.time(), step=int(row["epoch"]), summary=summary)]
        if self.path is None:
            self.path = self.logdir / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                                       f"{os.getpid()}.{next(_LOG_NUMBERS)}.v2")
            self.record(self.path)
        if not self.size:
            events.insert(0, event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        records = io.BytesIO()
        framing = RecordWriter(records)
        for event in events:
            framing.write(event.SerializeToString())
        self._append(records.getvalue())

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            if self.size:
                os.ftruncate(fd, self.size)
            else:  # nothing whole in it: it was made for this append
                self.path.unlink(missing_ok=True)
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        finally:
            os.close(fd)
        self.size += len(data)
