"""What every script shares: a parser with --debug and checked flag types, and one-line errors instead of tracebacks."""
from __future__ import annotations

import argparse
import difflib
import errno
import math
import os
import sys
from pathlib import Path

import vae
from vae.config import HelpFormatter
from vae.errors import Stopped, UserError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with the nearest flag suggested for a mistyped one.

    Flags are never abbreviated: --num_epoch is refused with a suggestion, not silently read as --num_epochs."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # sub-command parsers come through here too
        super().__init__(*args, **kwargs)
        self._typed: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._typed = list(sys.argv[1:] if args is None else args)  # for error(), which argparse gives only a message
        return super().parse_known_args(args, namespace)

    def error(self, message):
        flags = [f for f in self._option_string_actions if f.startswith("--")]
        if not message.startswith("unrecognized arguments: "):
            # A mistyped flag explains the rest (--modle leaves --model missing), but argparse names the rest first.
            unknown = [a.split("=")[0] for a in self._typed if a.startswith("--") and a.split("=")[0] not in flags]
            if any(difflib.get_close_matches(a, flags, 1, 0.75) for a in unknown):
                message = f"unrecognized arguments: {' '.join(unknown)}"
        hint = ""
        if message.startswith("unrecognized arguments: "):
            typed = [a.split("=")[0] for a in message.split(": ", 1)[1].split() if a.startswith("-")]
            guesses = [g for a in typed for g in difflib.get_close_matches(a, flags, 1, 0.75)]
            hint = f"did you mean {', '.join(guesses)}? " if guesses else ""
        raise UserError(f"{message}; {hint}see python {self.prog} --help")


def make_parser(description: str) -> Parser:
    parser = Parser(description=description, formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full Python traceback and TensorFlow's own log on errors")
    return parser


def _number(kind, low: float, inclusive: bool, what: str):
    """An argparse type: a finite `kind` above `low` (or at least it, if inclusive); the error names the rule."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


positive_int = _number(int, 1, True, "a whole number of at least 1")
seed_int = _number(int, 0, True, "a whole number of at least 0")
positive_float = _number(float, 0.0, False, "a positive finite number")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--model, and the optional --image_size and --latent_dim that it must then match."""
    parser.add_argument("--model", required=True, help="run folder (its best model) or a .keras file")
    parser.add_argument("--image_size", type=positive_int, help="if given, refuse a model trained for another image size")
    parser.add_argument("--latent_dim", type=positive_int, help="if given, refuse a model with another latent dimension")


def add_prior_flag(parser: argparse.ArgumentParser, purpose: str, priors: dict, default) -> None:
    """--prior: what random latents are drawn from, one of `priors` (vae.priors.PRIORS)."""
    kinds = "; ".join(f"{name}: {cls.description}" for name, cls in priors.items())
    parser.add_argument("--prior", choices=list(priors),
                        help=f"{purpose} ({kinds}); default: {default.name} when train.py fitted it or the run's "
                             "training images are found, else normal")


def check_suffix(flag: str, path: str, suffix: str, writer: str) -> Path:
    """`path` if it ends in `suffix` (any case); else UserError, since the file would not hold what its name says."""
    if Path(path).suffix.lower() != suffix:
        raise UserError(f"{flag} {path}: {writer} writes {suffix} files; give a name ending in {suffix}")
    return Path(path)


# Errors of the disk rather than of the program: what happened, to which file, and what to do.
FIXABLE = {
    errno.ENOSPC: "no space left on device writing {path}; free space and rerun",
    errno.EDQUOT: "disk quota exceeded writing {path}; free space (or raise the quota) and rerun",
    errno.EROFS: "{path} is on a read-only file system; choose a writable place and rerun",
    errno.EACCES: "permission denied for {path}; change its permissions or choose another place",
}


def invoke(main, argv: list[str] | None = None) -> None:
    """Call main(argv); turn errors into one line on stderr and an exit code (tracebacks with --debug).

    2: the user can fix it (flags, files, folders, permissions); 1: anything unforeseen; 130: interrupted.
    """
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    if debug and "tensorflow" not in sys.modules:  # TensorFlow's own log, at the level the user had set
        os.environ["VAE_SHOW_TF_LOGS"] = "1"
        if vae.USER_TF_LOG_LEVEL is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = vae.USER_TF_LOG_LEVEL
    try:
        main(argv)
    except UserError as e:
        if debug:
            raise
        _fail(str(e), 2)
    except Stopped as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if debug:
            raise
        if e.errno in FIXABLE:  # the disk or its permissions, not the program: the user can fix it, so exit 2
            _fail(FIXABLE[e.errno].format(path=e.filename or "a file"), 2)
        where = f"{e.filename}: " if e.filename else ""
        code = 2 if e.filename else 1  # a path the user gave or chose: fixable; else unforeseen
        _fail(f"cannot use {where}{e.strerror or type(e).__name__}" if e.filename else f"{type(e).__name__}: {e}", code)
    except Exception as e:  # noqa: BLE001 - the point is to catch what we did not foresee
        if debug:
            raise
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _fail(f"{type(e).__name__}: {detail} (rerun with --debug for the traceback)", 1)


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
