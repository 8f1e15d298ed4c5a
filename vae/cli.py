"""What every script shares: a parser with --debug, and one-line errors instead of tracebacks."""
from __future__ import annotations

import argparse
import sys

from vae.errors import UserError


def make_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
    return parser


def run(main, argv: list[str] | None = None) -> None:
    """Call main(argv); turn errors into one line on stderr and a non-zero exit (tracebacks with --debug)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        main(argv)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the point is to catch what we did not foresee
        if debug:
            raise
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {detail} (rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
