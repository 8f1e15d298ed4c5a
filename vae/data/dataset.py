"""Decoded faces in one uint8 cache, split into training and validation, streamed by tf.data."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# isort: off
import vae.backend  # noqa: F401  (TensorFlow, quietly, before the import below)
# isort: on
import numpy as np
import tensorflow as tf
from PIL import Image

from vae.data.image_files import is_validation, load_image, name_hash, printable, scan_folder, skip_reason
from vae.errors import UserError
from vae.progress import progress_bar

DECODE_CHUNK = 1024  # images decoded between two writes into the cache


@dataclass
class FaceSet:
    """Decoded faces in one uint8 variable on the CPU, with their names and what was skipped."""

    names: list[str]  # path of each usable image relative to the folder, in cache order
    images: tf.Variable  # (capacity, size, size, 3) uint8; rows past len(names) are unused
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason), both printable(); folders end in /

    def __len__(self):
        return len(self.names)

    def split(self, val_split: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices of training and validation images; at least one of each when there are two images."""
        val = np.array([is_validation(n, val_split) for n in self.names], dtype=bool)
        if len(self) >= 2 and not val.any():
            val[int(np.argmin([name_hash(n) for n in self.names]))] = True
        if len(self) >= 2 and val.all():
            val[int(np.argmax([name_hash(n) for n in self.names]))] = False
        return np.flatnonzero(~val), np.flatnonzero(val)

    def numpy(self, indices) -> np.ndarray:
        return tf.gather(self.images, np.asarray(indices, dtype=np.int64)).numpy()


def load_faces(
    folder: Path | str, size: int, workers: int | None = None, progress: bool = True, names: list[str] | None = None,
    exclude=(),
) -> FaceSet:
    """Decode every image under `folder` (or only `names`, paths relative to it) once, in parallel threads.

    PIL decodes outside the GIL. Files that cannot be used are skipped and listed, as are run folders and the folders in
    `exclude` (scan_folder); none usable is an error.
    """
    folder = Path(folder)
    if names is None:
        paths, skipped_folders = scan_folder(folder, exclude)
    else:
        paths, skipped_folders = [folder / n for n in names if (folder / n).is_file()], []
    skipped = [(printable(path.relative_to(folder).as_posix()) + "/", why) for path, why in skipped_folders]
    if not paths:
        outside = f" outside {', '.join(name for name, _ in skipped)}" if skipped else ""
        raise UserError(f"no images (jpg, jpeg, png, bmp, gif, webp) found under {folder}{outside}")
    with tf.device("/cpu:0"):
        # Filled chunk by chunk with scatter updates: never a second full-size copy in memory.
        images = tf.Variable(lambda: tf.zeros((len(paths), size, size, 3), tf.uint8), trainable=False)
    names = []

    def decode(path):
        try:
            return load_image(path, size), None
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped and reported, not fatal
            return None, skip_reason(e)

    workers = workers or os.cpu_count() or 1
    # PIL only warns about images too large to decode safely; refuse them. The filter is process-wide,
    # so it is set once here, around the workers, not by each of them (catch_warnings is not thread-safe).
    with warnings.catch_warnings(), ThreadPoolExecutor(workers) as pool, \
            progress_bar(len(paths), "decoding images", progress) as bar:
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for start in range(0, len(paths), DECODE_CHUNK):
            chunk = paths[start : start + DECODE_CHUNK]
            good = []
            for path, (pixels, error) in zip(chunk, pool.map(decode, chunk)):
                name = path.relative_to(folder).as_posix()
                if error is None:
                    good.append(pixels)
                    names.append(name)
                else:
                    skipped.append((printable(name), printable(error)))  # only ever shown, never reopened
            if good:
                rows = tf.range(len(names) - len(good), len(names), dtype=tf.int64)
                images.scatter_update(tf.IndexedSlices(np.stack(good), rows))
            bar.update(len(chunk))
    if not names:
        name, why = skipped[len(skipped_folders)]
        raise UserError(f"none of the {len(paths)} image files under {folder} could be used (the first, {name}: {why})")
    return FaceSet(names, images, skipped)


def epoch_order(num: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The shuffled order and the flip of each image in one epoch: a pure function of (seed, epoch), so a resumed run
    replays it."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(num), rng.random(num) < 0.5


def train_batches(
    faces: FaceSet, indices, batch_size: int, seed: int, epoch: int, skip_batches: int = 0, flip: bool = True,
    device: str | None = None, epochs: int | None = 1,
) -> tf.data.Dataset:
    """Full uint8 batches of `epochs` epochs (None: every epoch from `epoch` on), each in its own order, starting
    after `skip_batches` batches of the first; an epoch's last partial batch is left out.

    One dataset, so one iterator, for a whole run: on CPUs a new iterator each epoch stalled the next step for
    seconds (docs/speed.md). With `device`, batches are prefetched onto it (a GPU), so the copy overlaps the step.
    """
    indices = np.asarray(indices, dtype=np.int64)
    steps = len(indices) // batch_size
    images, kept = faces.images, tf.constant(indices)

    def one_epoch(e):
        # Python runs once per epoch, not per batch: a Dataset.from_generator of batches cost 40% of the step rate
        # on a 2-core CPU (docs/speed.md).
        order, flips = tf.numpy_function(lambda e: epoch_order(len(indices), seed, int(e)), [e], (tf.int64, tf.bool))
        shape = (steps, batch_size)
        rows = tf.reshape(tf.gather(kept, tf.ensure_shape(order, [len(indices)])[: steps * batch_size]), shape)
        flips = tf.reshape(tf.ensure_shape(flips, [len(indices)])[: steps * batch_size], shape) & flip
        return tf.data.Dataset.from_tensor_slices((rows, flips))

    def gather(rows, flips):
        batch = tf.gather(images, rows)
        return tf.where(flips[:, None, None, None], tf.reverse(batch, axis=[2]), batch)

    epochs_ds = tf.data.Dataset.counter(epoch) if epochs is None else tf.data.Dataset.range(epoch, epoch + epochs)
    ds = epochs_ds.flat_map(one_epoch).skip(skip_batches)
    ds = _finish(ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    return ds.apply(tf.data.experimental.prefetch_to_device(device)) if device else ds


def eval_batches(faces: FaceSet, indices, batch_size: int) -> tf.data.Dataset:
    """All images at `indices`, in order, as uint8 batches (the last one may be smaller)."""
    images = faces.images
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64)).batch(batch_size)
    return _finish(ds.map(lambda rows: tf.gather(images, rows), num_parallel_calls=tf.data.AUTOTUNE))


def _finish(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    # Batches are built from an index list, not files: under tf.distribute, split by data, never by file.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # With tf.data's autotuning, deleting the training iterator at the end of fit stalled for 5 to 55 s in about half
    # of the runs on a 2-core CPU; without it, none did, and the cached pipeline was no slower (docs/speed.md).
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
