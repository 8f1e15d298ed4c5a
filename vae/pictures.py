"""What the package shows: grids of faces, written as PNG and GIF files."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from vae.files import atomic_path

GIF_MIN_SIDE = 128  # GIF frames are enlarged (nearest) to at least this, so a 64 px face can be seen
GIF_FRAME_MS = 80
GRID_IMAGES = 32  # originals over reconstructions in comparison grids: four rows of eight pairs


def to_uint8(images) -> np.ndarray:
    """Float images in [0, 1] (or uint8) to uint8."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    # NaN (from a diverged model) shows as black rather than as undefined bytes.
    return (np.clip(np.nan_to_num(images, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_grid(images, cols: int, gap: int = 2) -> np.ndarray:
    """Tile (n, h, w, 3) images into rows of `cols`, with white gaps; a short last row is padded white."""
    images = to_uint8(images)
    n, h, w, c = images.shape
    rows = -(-n // cols)
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + k * (w + gap) : gap + k * (w + gap) + w] = img
    return grid


def pairs_grid(originals, reconstructions, cols: int = 8) -> np.ndarray:
    """Rows of originals, each over the row of their reconstructions."""
    originals, reconstructions = to_uint8(originals), to_uint8(reconstructions)
    rows = []
    for start in range(0, len(originals), cols):
        rows += [originals[start : start + cols], reconstructions[start : start + cols]]
    pad = [np.concatenate([r, np.full((cols - len(r), *r.shape[1:]), 255, np.uint8)]) for r in rows]
    return make_grid(np.concatenate(pad), cols)


def save_png(array, path: Path | str, min_side: int = 0) -> Path:
    """Write a uint8 image atomically; small images are enlarged (nearest) to `min_side` so they can be seen."""
    img = Image.fromarray(to_uint8(array))
    if min_side and max(img.size) < min_side:
        factor = -(-min_side // max(img.size))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def save_gif(frames: list[np.ndarray], path: Path | str, frame_ms: int = GIF_FRAME_MS) -> Path:
    """An endlessly looping GIF that plays the frames forward then back, its shorter side enlarged (nearest) to at
    least GIF_MIN_SIDE; written atomically."""
    frames = [to_uint8(f) for f in frames]
    factor = max(1, -(-GIF_MIN_SIDE // min(frames[0].shape[:2])))
    frames = [f.repeat(factor, axis=0).repeat(factor, axis=1) for f in frames + frames[-2:0:-1]]
    # One palette for all frames, undithered: what does not move keeps its pixels, and the GIF stores only what changed.
    palette = Image.fromarray(np.concatenate(frames)).quantize(256, dither=Image.Dither.NONE)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return Path(path)


def blank_png(width: int, height: int, channels: int = 3) -> bytes:
    """A PNG of black pixels, compressed row by row so it is never held whole (9400x9400 RGB: 0.26 MB): what a
    decompression bomb looks like, for the tests and benchmarks of the pixel limit."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(1 + channels * width)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, {3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
