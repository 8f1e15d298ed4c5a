"""Progress bars on a terminal, plain lines elsewhere (logs, CI, pipes)."""
from __future__ import annotations

import sys

from tqdm import tqdm


def interactive() -> bool:
    return sys.stdout.isatty()


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "img") -> tqdm:
    """A tqdm bar on stdout when it is a terminal; otherwise a silent stand-in with the same methods."""
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stdout, leave=False, dynamic_ncols=True,
        disable=not (enabled and interactive()),
    )
