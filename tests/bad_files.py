"""Every kind of file a scraped face folder holds: broken downloads, stray non-images, and odd but usable images.

Each writer takes the target path; the tables map a file name to its writer, so one folder can hold them all.
"""
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def halves(size: int) -> Image.Image:
    """A square image, red above blue: shows which way it was turned."""
    img = Image.new("RGB", (size, size), BLUE)
    img.paste(RED, (0, 0, size, size // 2))
    return img


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: they compress badly, so half of the file really cuts into the pixel data."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bytes(data: bytes):
    return lambda path: path.write_bytes(data)


def _save(img: Image.Image, fmt: str, **options):
    return lambda path: img.save(path, format=fmt, **options)


def _exif_rotated(path: Path) -> None:
    """Stored with red on top; orientation 6 says 'turn 90 degrees clockwise to view', which puts red on the right."""
    img = halves(64)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, format="JPEG", quality=95, exif=exif)


def _animated_gif(path: Path) -> None:
    """Two frames, red then blue: only the first may be used."""
    first, second = Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)
    first.save(path, format="GIF", save_all=True, append_images=[second], duration=100, loop=0)


def _huge(path: Path) -> None:
    """4000x4000, 48 MB once decoded; made only when written, not held by the table."""
    halves(4000).save(path, quality=90)


def _sixteen_bit(path: Path) -> None:
    """A 16-bit grayscale PNG at half of full scale: 8-bit 128 once converted."""
    Image.fromarray(np.full((32, 32), 32896, np.uint16)).save(path, format="PNG")


# Files that carry an image extension but cannot be used: each must be skipped and counted.
BROKEN = {
    "zero_bytes.jpg": _bytes(b""),
    "truncated.jpg": _bytes(_half(encoded(noise(64, 64), "JPEG", quality=95))),
    "truncated.png": _bytes(_half(encoded(noise(64, 64), "PNG"))),
    "random_bytes.jpg": _bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()),
    "error_page.png": _bytes(b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                             b"<body><h1>Not Found</h1></body></html>\n"),
}

# Not images at all: ignored quietly, never counted.
IGNORED = {
    "notes.txt": _bytes(b"downloaded from somewhere\n"),
    ".DS_Store": _bytes(b"\x00\x00\x00\x01Bud1" + bytes(100)),
    "Thumbs.db": _bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100)),
    "._face.jpg": _bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(50)),  # macOS resource fork
}

# Odd but usable at a model size of 32: each is converted to RGB and used.
USABLE = {
    "grayscale.png": _save(Image.new("L", (32, 32), 100), "PNG"),
    "grayscale_alpha.png": _save(Image.new("LA", (32, 32), (100, 0)), "PNG"),
    "rgba.png": _save(Image.new("RGBA", (32, 32), (255, 0, 0, 128)), "PNG"),
    "palette.png": _save(halves(32).convert("P"), "PNG"),
    "sixteen_bit.png": _sixteen_bit,
    "cmyk.jpg": _save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95),
    "animated.gif": _animated_gif,
    "lossless.webp": _save(halves(32), "WEBP", lossless=True),
    "bitmap.bmp": _save(halves(32), "BMP"),
    "png_inside.jpg": _save(halves(32), "PNG"),
    "UPPER.JPG": _save(halves(32), "JPEG", quality=95),
    "UPPER.PNG": _save(halves(32), "PNG"),
    "wide.png": _save(noise(80, 40), "PNG"),
    "exif_rotated.jpg": _exif_rotated,
    "huge.jpg": _huge,
    "huge.png": _huge,
    "small_but_upscaled.png": _save(halves(16), "PNG"),  # exactly half of 32: the smallest still used
    "name with spaces.png": _save(halves(32), "PNG"),
    "顔 лицо.png": _save(halves(32), "PNG"),
    "face 😀.png": _save(halves(32), "PNG"),
    "nested/deeper/inside.png": _save(halves(32), "PNG"),
}

# Readable, but too small for a model size of 32 (below half of it): skipped and counted like a broken file.
TOO_SMALL = {"thumbnail.png": _save(halves(15), "PNG")}


def write_all(folder: Path, *tables: dict) -> Path:
    """Write every file of the tables under `folder`, plus a symlink that loops back to it."""
    for table in tables:
        for name, write in table.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
    loop = folder / "nested" / "loop"
    loop.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(folder, loop)
    return folder
