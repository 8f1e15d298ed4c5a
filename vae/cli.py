"""What every script shares: a parser with --debug, and one-line errors instead of tracebacks."""
from __future__ import annotations

import argparse
import difflib
import sys

from vae.errors import UserError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with the nearest flag suggested for a mistyped one."""

    def error(self, message):
        hint = ""
        if message.startswith("unrecognized arguments: "):
            flags = [f for f in self._option_string_actions if f.startswith("--")]
            typed = [a.split("=")[0] for a in message.split(": ", 1)[1].split() if a.startswith("-")]
            guesses = [g for a in typed for g in difflib.get_close_matches(a, flags, 1, 0.75)]
            hint = f"did you mean {', '.join(guesses)}? " if guesses else ""
        raise UserError(f"{message}; {hint}see python {self.prog} --help")


def make_parser(description: str) -> argparse.ArgumentParser:
    parser = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
    return parser


def add_prior_flag(parser, purpose: str) -> None:
    """--prior: what random latents are drawn from."""
    parser.add_argument("--prior", choices=["normal", "gmm"],
                        help=f"{purpose}: gmm, a Gaussian mixture fitted to the latent means of the run's training images "
                             "(fitted once, cached beside the model); or normal, N(0, I); default: gmm when the run's "
                             "mixture or training images are found, else normal")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--model, and the optional --image_size and --latent_dim that it must then match."""
    parser.add_argument("--model", required=True, help="run folder (its best model) or a .keras file")
    parser.add_argument("--image_size", type=int, help="if given, refuse a model trained for another image size")
    parser.add_argument("--latent_dim", type=int, help="if given, refuse a model with another latent dimension")


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
