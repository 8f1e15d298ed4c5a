"""numpy's BLAS held to a few threads for a block. OpenBLAS's threads spin-wait for each other, so next to one busy
TensorFlow process on 2 cores a mixture fit on two of them took 16 times as long as alone."""
from __future__ import annotations

import contextlib
import ctypes
from functools import cache
from pathlib import Path

import numpy as np

# OpenBLAS's calls as numpy's wheels name them (scipy-openblas, 64-bit integers), then as plain builds do.
SYMBOLS = [(f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}")
           for prefix in ("scipy_openblas", "openblas") for suffix in ("64_", "")]


@cache
def _openblas() -> tuple[tuple, ...]:
    """(get, set) thread calls of each OpenBLAS loaded in this process; none where numpy uses another BLAS (MKL,
    Accelerate), which is then left as it is."""
    maps = Path("/proc/self/maps")
    if maps.exists():
        lines = (line.split(maxsplit=5) for line in maps.read_text().splitlines())
        paths = {parts[5] for parts in lines if len(parts) == 6 and "openblas" in Path(parts[5]).name.lower()}
    else:  # macOS and Windows: the library numpy's wheel brings
        root = Path(np.__file__).parent
        paths = {str(p) for p in [*root.parent.glob("numpy.libs/*openblas*"), *root.glob(".dylibs/*openblas*")]}
    found = []
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        found += [(getattr(library, get), getattr(library, set_)) for get, set_ in SYMBOLS
                  if hasattr(library, get) and hasattr(library, set_)][:1]
    return tuple(found)


def thread_counts() -> list[int]:
    """The threads each loaded OpenBLAS would use now."""
    return [get() for get, _ in _openblas()]


@contextlib.contextmanager
def limited(threads: int = 1):
    """numpy's BLAS on at most `threads` threads inside the block, and as before after it."""
    calls, before = _openblas(), thread_counts()
    for (_, set_), count in zip(calls, before):
        set_(min(count, threads))
    try:
        yield
    finally:
        for (_, set_), count in zip(calls, before):
            set_(count)
