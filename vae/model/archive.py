"""A .keras file checked before Keras reads it: a zip whose members, once inflated, cannot exhaust memory.

Keras reads config.json whole and the weights whole or extracted: a 4.5 MB file whose config.json inflated to 2 GiB
made sample.py peak at 4.8 GB, and a zipped 4 GiB weights file at 4.9 GB, before either was refused. The sizes are
read from the zip's central directory, which is all that is read here.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from vae.data.image_files import printable
from vae.errors import UserError

WEIGHTS_SUFFIX = ".h5"  # model.weights.h5 (and the shards Keras may write beside it)
MAX_MEMBER = 4 * 2**20  # config.json and metadata.json: this package's are under 10 KB
# The largest model the flags allow (256 px, --width 512, --latent_dim 1024) has 1.6 G parameters: 6.5 GB of float32,
# about 20 GB with Adam's two moments in a checkpoint.
MAX_WEIGHTS = 32 * 2**30
# Keras stores members uncompressed and HDF5 floats deflate little; only a bomb inflates much beyond its stored bytes.
MAX_RATIO = 10
RATIO_FLOOR = 2**20  # small members may deflate as far as they like: they cannot hurt
MAX_MEMBERS = 1000


def check_keras_archive(path: Path | str) -> None:
    """UserError in one line if the .keras file at `path` would inflate too large; nothing but its directory is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"--model {path} is damaged or not a model (a .keras file is a zip archive: {e})") from e
    if len(members) > MAX_MEMBERS:
        raise UserError(f"--model {path} holds {len(members)} files (a model has a few); not a model saved by this package")
    for member in members:
        name = printable(member.filename)  # a crafted name may hold a newline
        limit = MAX_WEIGHTS if member.filename.endswith(WEIGHTS_SUFFIX) else MAX_MEMBER
        if member.file_size > limit:
            raise UserError(f"--model {path} is refused: its {name} would inflate to {_size(member.file_size)} "
                            f"(at most {_size(limit)}); not a model saved by this package")
        if member.file_size > max(RATIO_FLOOR, MAX_RATIO * member.compress_size):
            raise UserError(f"--model {path} is refused: its {name} would inflate from "
                            f"{_size(member.compress_size)} to {_size(member.file_size)} (a decompression bomb); "
                            "not a model saved by this package")


def _size(num: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num >= scale:
            return f"{num / scale:.1f} {unit}"
    return f"{num} bytes"
