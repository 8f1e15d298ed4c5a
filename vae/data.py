"""Face images from a folder: find, decode once into a uint8 cache, split, and stream with tf.data."""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

from vae.errors import UserError
from vae.progress import progress_bar

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
DECODE_CHUNK = 1024  # images decoded between two writes into the cache


class UnusableImage(ValueError):
    """A readable file that is still skipped; the message is the reason shown to the user."""


def find_images(folder: Path | str) -> list[Path]:
    """Image files under `folder`, recursively, sorted; symlinked folders are followed once (no loops).

    Files are chosen by extension, in any case; macOS's "._name.jpg" resource forks are metadata, not images.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"--data {folder} does not exist; pass a folder of face images")
    if not folder.is_dir():
        raise UserError(f"--data {folder} is a file, not a folder; pass the folder that holds the images")
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(root) / f for f in sorted(files)
                  if Path(f).suffix.lower() in IMAGE_EXTENSIONS and not f.startswith("._")]
    return found


def load_image(path: Path | str, size: int) -> np.ndarray:
    """One image as (size, size, 3) uint8 RGB: orientation from EXIF, center square, resize, alpha over white.

    The small-image rule: an image whose short side is at least half of `size` is upscaled; a smaller one
    is refused (UnusableImage), because upscaled 2x or more it would only teach the model blur.
    Only the first frame of an animation is used. Raises on anything PIL cannot read.
    """
    if os.path.getsize(path) == 0:
        raise UnusableImage("empty file")
    with Image.open(path) as img:
        if min(img.size) * 2 < size:
            raise UnusableImage(f"{img.size[0]}x{img.size[1]} is below half the model's {size}px")
        img.draft("RGB", (size, size))  # JPEG only: decode at reduced scale, so huge files stay cheap
        ImageOps.exif_transpose(img, in_place=True)
        if img.mode in ("P", "PA", "1"):  # resizing these would pick the nearest pixel instead of averaging
            img = img.convert("RGBA")
        if img.width != img.height:
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side))
        # Resized before any conversion, so a huge image is never copied whole into another mode.
        img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(_to_rgb(img), dtype=np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: transparency composited over white, 16-bit scaled down to 8-bit."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        depth = 65535.0 if img.mode.startswith("I;16") or np.asarray(img).max() > 255 else 255.0
        img = Image.fromarray((np.asarray(img, dtype=np.float32) * (255.0 / depth)).round().astype(np.uint8))
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def skip_reason(error: Exception) -> str:
    """Why a file was skipped, in a few words (PIL's own messages repeat the whole path)."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image PIL can read"
    if isinstance(error, OSError) and "truncated" in str(error):
        return "truncated file"
    if isinstance(error, (UnusableImage, OSError)):
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{type(error).__name__}: {error}".splitlines()[0]


def printable(text: str) -> str:
    """A file name (or a message holding one) that can be printed and written as UTF-8.

    Names that are not valid UTF-8 on disk (old zips, Latin-1 systems) reach Python with surrogates, which
    print() and write_text() refuse; those bytes become U+FFFD.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def skipped_summary(skipped: list[tuple[str, str]], total: int) -> str:
    """'skipped N of M image files: a.jpg (why), ...' from (name, reason) pairs, naming at most 5 of them."""
    shown = ", ".join(f"{name} ({why})" for name, why in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"skipped {len(skipped)} of {total} image files: {shown}{more}"


def is_validation(name: str, val_split: float) -> bool:
    """Whether a file belongs to the validation split: a hash of its relative path, so adding files never moves others."""
    return _hash(name) / 2**64 < val_split


@dataclass
class FaceSet:
    """Decoded faces in one uint8 variable on the CPU, with their names and what was skipped."""

    names: list[str]  # path of each usable image relative to the folder, in cache order
    images: tf.Variable  # (capacity, size, size, 3) uint8; rows past len(names) are unused
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason), both printable()

    def __len__(self):
        return len(self.names)

    def split(self, val_split: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices of training and validation images; at least one of each when there are two images."""
        val = np.array([is_validation(n, val_split) for n in self.names], dtype=bool)
        if len(self) >= 2 and not val.any():
            val[int(np.argmin([_hash(n) for n in self.names]))] = True
        if len(self) >= 2 and val.all():
            val[int(np.argmax([_hash(n) for n in self.names]))] = False
        return np.flatnonzero(~val), np.flatnonzero(val)

    def numpy(self, indices) -> np.ndarray:
        return tf.gather(self.images, np.asarray(indices, dtype=np.int64)).numpy()


def _hash(name: str) -> int:
    """A stable 64-bit hash of a file name (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8", errors="surrogateescape")).digest()[:8], "big")


def load_faces(
    folder: Path | str, size: int, workers: int | None = None, progress: bool = True, names: list[str] | None = None
) -> FaceSet:
    """Decode every image under `folder` (or only `names`, paths relative to it) once, in parallel threads.

    PIL decodes outside the GIL. Files that cannot be used are skipped and listed; none usable is an error.
    """
    folder = Path(folder)
    paths = find_images(folder) if names is None else [folder / n for n in names if (folder / n).is_file()]
    if not paths:
        raise UserError(f"no images (jpg, jpeg, png, bmp, gif, webp) found under {folder}")
    with tf.device("/cpu:0"):
        # Filled chunk by chunk with scatter updates: never a second full-size copy in memory.
        images = tf.Variable(lambda: tf.zeros((len(paths), size, size, 3), tf.uint8), trainable=False)
    names, skipped = [], []

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
        name, why = skipped[0]
        raise UserError(f"none of the {len(paths)} image files under {folder} could be used (the first, {name}: {why})")
    return FaceSet(names, images, skipped)


def epoch_order(num: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The shuffled order and the flip of each image in one epoch: a pure function of (seed, epoch), so a resumed run replays it."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(num), rng.random(num) < 0.5


def train_batches(
    faces: FaceSet, indices, batch_size: int, seed: int, epoch: int, skip_batches: int = 0, flip: bool = True,
    device: str | None = None,
) -> tf.data.Dataset:
    """One epoch of full uint8 batches in this epoch's order, starting after `skip_batches` batches.

    With `device`, batches are prefetched onto it (a GPU), so the copy overlaps the previous step.
    """
    order, flips = epoch_order(len(indices), seed, epoch)
    start = skip_batches * batch_size
    rows = np.asarray(indices, dtype=np.int64)[order][start:]
    flips = (flips & flip)[start:]
    images = faces.images

    def gather(rows, flips):
        batch = tf.gather(images, rows)
        return tf.where(flips[:, None, None, None], tf.reverse(batch, axis=[2]), batch)

    ds = tf.data.Dataset.from_tensor_slices((rows, flips)).batch(batch_size, drop_remainder=True)
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
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
