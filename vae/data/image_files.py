"""Image files: finding them in a folder, decoding one safely into a square RGB array, and why one was skipped.

Numpy and PIL only: the app and the tools that never train import this without TensorFlow."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vae.errors import UserError
from vae.files import is_run_folder

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
# Pixels decoded at most (after a JPEG's reduced-scale decode): a face is 64 px, and ten uploads of a 9400x9400 PNG of
# 0.26 MB, each decoded whole, took the explorer from 0.6 to 4.0 GB. A 4096x4096 RGBA PNG takes 130 MB to decode.
MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE
RUN_FOLDER = "a run folder of train.py: its grids are not faces"
OWN_OUT = "this run's own --out"


class UnusableImage(ValueError):
    """A readable file that is still skipped; the message is the reason shown to the user."""


def find_images(folder: Path | str, exclude=()) -> list[Path]:
    """Image files under `folder`, recursively, sorted (scan_folder without the folders it skipped)."""
    return scan_folder(folder, exclude)[0]


def scan_folder(folder: Path | str, exclude=()) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files under `folder`, recursively, sorted; (folder, why) of each folder skipped in it).

    Files are chosen by extension, in any case; macOS's "._name.jpg" resource forks are metadata, not images.
    Run folders of train.py and the folders in `exclude` are skipped: their grids are outputs, not faces. A symlinked
    folder is followed once, unless it leads back to `folder` or above it, which would pull in every sibling.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"--data {folder} does not exist; pass a folder of face images")
    if not folder.is_dir():
        raise UserError(f"--data {folder} is a file, not a folder; pass the folder that holds the images")
    if is_run_folder(folder):
        raise UserError(f"--data {folder} is {RUN_FOLDER}; pass the folder of face images it trained on")
    top = Path(os.path.realpath(folder))
    excluded = {os.path.realpath(p) for p in exclude}
    found, skipped, seen = [], [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        kept = []
        for name in sorted(dirs):
            path = Path(root) / name
            target = os.path.realpath(path)
            if target in seen or (path.is_symlink() and top.is_relative_to(target)):
                continue
            if target in excluded or is_run_folder(path):
                skipped.append((path, OWN_OUT if target in excluded else RUN_FOLDER))
                continue
            kept.append(name)
        dirs[:] = kept
        found += [Path(root) / f for f in sorted(files)
                  if Path(f).suffix.lower() in IMAGE_EXTENSIONS and not f.startswith("._")]
    return found, skipped


def load_image(path: Path | str, size: int) -> np.ndarray:
    """One image as (size, size, 3) uint8 RGB: orientation from EXIF, center square, resize, alpha over white.

    The small-image rule: an image whose short side is at least half of `size` is upscaled; a smaller one
    is refused (UnusableImage), because upscaled 2x or more it would only teach the model blur.
    Only the first frame of an animation is used. Raises on anything PIL cannot read.
    """
    if os.path.getsize(path) == 0:
        raise UnusableImage("empty file")
    with Image.open(path) as img:
        width, height = img.size
        if min(img.size) * 2 < size:
            raise UnusableImage(f"{width}x{height} is below half the model's {size}px")
        img.draft("RGB", (size, size))  # JPEG only: decode at reduced scale, so huge files stay cheap
        if img.width * img.height > MAX_PIXELS:  # the header's size: nothing is decoded yet
            raise UnusableImage(f"{width}x{height} has too many pixels to decode safely (at most {MAX_SIDE}x{MAX_SIDE})")
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
    """A file name (or a message holding one) that can be printed and written as UTF-8, on one line.

    Names that are not valid UTF-8 on disk (old zips, Latin-1 systems) reach Python with surrogates, which
    print() and write_text() refuse; those bytes become U+FFFD. Tabs, newlines and other unprintable characters
    become backslash escapes, so a name stays one field of a "name<TAB>reason" line.
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def skipped_summary(skipped: list[tuple[str, str]], total: int) -> str:
    """'skipped N of M image files: a.jpg (why), ...' from (name, reason) pairs, naming at most 5 of them.

    `total` counts the usable files and every skipped entry; folders (names ending in /) are counted apart."""
    folders = sum(name.endswith("/") for name, _ in skipped)
    files = len(skipped) - folders
    counts = [f"{folders} folder{'s' if folders > 1 else ''}"] if folders else []
    counts += [f"{files} of {total - folders} image files"] if files or not folders else []
    shown = ", ".join(f"{name} ({why})" for name, why in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"skipped {' and '.join(counts)}: {shown}{more}"


def is_validation(name: str, val_split: float) -> bool:
    """Whether a file belongs to the validation split: a hash of its relative path, so adding files never moves others."""
    return name_hash(name) / 2**64 < val_split


def name_hash(name: str) -> int:
    """A stable 64-bit hash of a file name (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8", errors="surrogateescape")).digest()[:8], "big")
