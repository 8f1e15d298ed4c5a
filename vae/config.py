"""The one configuration shared by every script, saved as config.json in each run folder."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from vae.errors import UserError

MAX_LATENT_DIM = 1024  # the latent mixture holds 10 full covariances of latent_dim^2 each
MAX_WIDTH = 512  # channels of the first convolution; 8x this at the deepest level


def _opt(default, help, runtime=False, choices=None):
    """A field whose `help` becomes the flag's help; `runtime` fields may change when a run resumes."""
    return field(default=default, metadata={"help": help, "runtime": runtime, "choices": choices})


@dataclass
class Config:
    # Data.
    data: str | None = _opt(None, "folder of face images, searched recursively; default: built-in synthetic faces")
    image_size: int = _opt(64, "side of the square images the model sees, a power of two from 16 to 256")
    val_split: float = _opt(0.05, "fraction of files held out for validation (0.05: 5%), chosen by hashing file names")
    flip: bool = _opt(True, "random horizontal flips of training images")
    synthetic_num: int = _opt(6000, "number of synthetic faces rendered when --data is not given")
    # Model.
    latent_dim: int = _opt(128, f"dimension of the latent space, at most {MAX_LATENT_DIM}")
    width: int = _opt(32, f"channels of the first encoder convolution, at most {MAX_WIDTH}; doubled at each halving, up to 8x")
    beta: float = _opt(0.1, "weight of the KL term against the L1 reconstruction term; "
                       "below 1 trades prior fit for sharper faces")
    learn_scale: bool = _opt(False, "learn the Laplace scale of each colour channel with the weights (a calibrated decoder): "
                             "the reconstruction term becomes the negative log-likelihood, whose scale balances the KL")
    bn_momentum: float = _opt(0.9, "momentum of BatchNorm's moving statistics, which validation and sampling use; Keras' "
                              "0.99 lags about 100 steps behind the weights and cost up to 4 dB at high learning rates")
    kl_warmup_epochs: float = _opt(1.0, "epochs over which the KL weight rises linearly from 0 to beta (0: none)")
    free_bits: float = _opt(0.0, "nats per latent dimension below which KL is not penalised, against posterior collapse")
    # Sharper faces.
    adversarial_weight: float = _opt(0.0, "weight of an adversarial patch term: a PatchGAN discriminator learns to tell "
                                     "training faces from reconstructions and prior samples (hinge loss), and the VAE learns "
                                     "to fool it, the term's weight rescaled each step to this times the ratio of the "
                                     "reconstruction and adversarial gradients at the decoder's last layer, as in VQGAN "
                                     "(0: off, no discriminator)")
    adversarial_start_epochs: float = _opt(0.0, "epochs of training before the adversarial term reaches the VAE (the "
                                           "discriminator learns from the start)")
    disc_augment: bool = _opt(False, "augment every image the discriminator sees (DiffAugment: colour, translation, "
                              "cutout), against it memorising a small folder")
    disc_learning_rate: float = _opt(0.0, "peak learning rate of the discriminator's Adam (betas 0.5, 0.9), on the same "
                                     "warm-up and schedule as the VAE's (0: --learning_rate)", runtime=True)
    frequency_weight: float = _opt(4.0, "weight of the focal frequency loss (Jiang et al. 2021) beside the L1 term: the "
                                   "squared error of each image's spectrum, weighted towards the frequencies it gets most "
                                   "wrong; it keeps colours and fine detail that L1 averages away (0: off)")
    ema_decay: float = _opt(0.0, "decay of an exponential moving average of the weights kept beside them (0.999: about "
                            "the last 1000 steps) for validation, grids and the saved models, while training continues "
                            "from the raw weights (0: off)")
    # Optimisation.
    num_epochs: int = _opt(12, "number of passes over the training images (the default run on synthetic faces, "
                           "rendering included, took 10 minutes on 2 Zen 3 cores); a larger one extends a finished run",
                           runtime=True)
    batch_size: int = _opt(64, "images per training step (global, over all replicas)")
    learning_rate: float = _opt(1e-3, "peak learning rate of Adam; may be changed when resuming", runtime=True)
    lr_schedule: str = _opt("cosine", "learning rate after warm-up: a cosine or linear decay that reaches 0 when "
                            "training ends (--num_epochs or --max_minutes, whichever comes first), or constant",
                            choices=["constant", "cosine", "linear"])
    lr_warmup_steps: int = _opt(200, "steps of linear learning-rate warm-up from zero, which keeps high rates stable")
    weight_decay: float = _opt(0.0, "decoupled weight decay of the VAE's kernels (AdamW, Loshchilov & Hutter 2019): each "
                               "step shrinks them by this times the learning rate, against overfitting small folders "
                               "(0: none)")
    clipnorm: float = _opt(0.0, "clip each step's gradient to this global norm; 0 turns clipping off")
    seed: int = _opt(0, "seed of weights, data order, flips and sampling noise")
    max_bad_steps: int = _opt(20, "stop after this many consecutive steps with a NaN or Inf loss or gradient (each is skipped)")
    early_stopping: int = _opt(0, "stop when validation loss has not improved for this many epochs (0: never)")
    # Run.
    out: str = _opt("runs/default", "run folder: config, models, sample grids, history", runtime=True)
    save_every_steps: int = _opt(500, "also checkpoint every this many steps within an epoch "
                                 "(0: only at epoch ends)", runtime=True)
    max_minutes: float = _opt(0.0, "stop cleanly after this many minutes of training, counted over every resume, then "
                              "validate and save (0: no limit); a larger one extends a finished run", runtime=True)
    precision: str = _opt("auto", "float32, mixed_float16, mixed_bfloat16, or auto: mixed_float16 on a GPU, "
                          "mixed_bfloat16 on a CPU with native bfloat16, else float32",
                          runtime=True, choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"])
    jit_compile: str = _opt("auto", "XLA compilation: on, off, or auto (on with a GPU; off on a CPU, "
                            "where compiling cost 10-40 s for no faster steps)", runtime=True, choices=["auto", "on", "off"])
    steps_per_execution: int = _opt(1, "training steps per call into TensorFlow; more cuts Python overhead "
                                    "on fast GPUs", runtime=True)
    strategy: str = _opt("auto", "tf.distribute strategy: auto (mirrored if several GPUs), "
                         "default, mirrored, multiworker",
                         runtime=True, choices=["auto", "default", "mirrored", "multiworker"])

    def validate(self) -> Config:
        """Raise UserError naming the first setting that cannot work."""
        size = self.image_size
        if size < 16 or size > 256 or size & (size - 1):
            raise UserError(f"--image_size {size} is not a power of two from 16 to 256 (try 64)")
        positive = ["latent_dim", "width", "num_epochs", "batch_size", "synthetic_num", "max_bad_steps", "steps_per_execution"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")
        for name, most in (("latent_dim", MAX_LATENT_DIM), ("width", MAX_WIDTH)):
            if getattr(self, name) > most:
                raise UserError(f"--{name} must be at most {most}, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise UserError(f"--learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.val_split < 1:
            raise UserError(f"--val_split must be between 0 and 1 (exclusive), got {self.val_split}")
        for name in ("bn_momentum", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"--{name} must be from 0 to 1 (exclusive), got {getattr(self, name)}")
        for name in ["beta", "clipnorm", "lr_warmup_steps", "kl_warmup_epochs", "free_bits", "early_stopping",
                     "save_every_steps", "max_minutes", "seed", "adversarial_weight", "adversarial_start_epochs",
                     "disc_learning_rate", "frequency_weight", "weight_decay"]:
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise UserError(f"--{name} must be a finite number of at least 0, got {value}")
        for f in dataclasses.fields(self):
            if f.metadata["choices"] and getattr(self, f.name) not in f.metadata["choices"]:
                raise UserError(f"--{f.name} must be one of {', '.join(f.metadata['choices'])}, got {getattr(self, f.name)}")
        return self

    def resolved(self) -> Config:
        """This config with --data and --out as absolute paths, so config.json means the same from any directory."""
        absolute = {name: str(Path(getattr(self, name)).expanduser().resolve())
                    for name in ("data", "out") if getattr(self, name) is not None}
        return dataclasses.replace(self, **absolute)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        from vae.files import write_text_atomic

        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read and check config.json; keys this version does not know are ignored, missing ones get what runs used
        before the field existed (BEFORE_THE_FIELD), else the default."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{path} cannot be read ({e}); pass --overwrite to train this folder afresh") from e
        if not isinstance(values, dict):
            raise UserError(f"{path} is damaged: it holds a {type(values).__name__}, not the settings of a run")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        known = dict(BEFORE_THE_FIELD)
        for name, value in values.items():
            if name in fields:
                known[name] = _checked(path, name, value, fields[name])
        try:
            return cls(**known).validate()
        except UserError as e:
            raise UserError(f"{path} is damaged: {e}") from e

    def changed_settings(self, other: Config) -> list[str]:
        """Names of non-runtime settings that differ from `other` (those a resumed run must keep)."""
        return [f.name for f in dataclasses.fields(self)
                if not f.metadata["runtime"] and not _same(f.name, getattr(self, f.name), getattr(other, f.name))]


# Settings added after runs were saved without them, whose default changed the behaviour: what those runs used.
BEFORE_THE_FIELD = {"bn_momentum": 0.99, "frequency_weight": 0.0}

_KINDS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "str | None": (str, type(None))}


def _checked(path, name: str, value, f: dataclasses.Field):
    """`value` if it has the field's type (an int where a float is due is fine); else UserError naming file and field."""
    kinds = _KINDS[f.type]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise UserError(f"{path} is damaged: {name} is {json.dumps(value)[:40]}, not of type {wanted}; "
                        "fix it or pass --overwrite to train this folder afresh")
    return float(value) if f.type == "float" else value


def _same(name: str, a, b) -> bool:
    """Whether two values of a setting mean the same; two spellings of one folder do."""
    if name == "data" and a is not None and b is not None:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a == b


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default once, and none where it says nothing (on/off flags, no value)."""

    def _get_help_string(self, action):
        help = action.help or ""
        if action.default not in (None, True, False, argparse.SUPPRESS) and action.option_strings and "%(default)" not in help:
            help += " (default: %(default)s)"
        return help


def _help(f: dataclasses.Field) -> str:
    """A field's help; a flag that turns a default-on setting off says so."""
    negative = f.type in ("bool", bool) and f.default
    return "turn off " + f.metadata["help"] if negative else f.metadata["help"]


# Named sets of settings for --preset, each measured at equal wall time in docs/quality.md; flags given beside win.
PRESETS = {
    # The adversarial patch term with augmentation and a weight average: at 30 minutes on 2 cores the samples' SWD at
    # 64 px fell to 0.70x the reference's (the defaults: 1.02x); at 10 minutes it trains a third of the epochs and loses.
    # Measured without the frequency term, before it joined the defaults: the preset keeps it off, as measured.
    "sharp": dict(adversarial_weight=0.3, adversarial_start_epochs=5.0, disc_augment=True, ema_decay=0.999,
                  frequency_weight=0.0),
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per Config field, with help= from the field ('%' escaped: argparse formats help strings), and
    --preset."""
    spelled = {name: " ".join(f"--{k}" if v is True else f"--{k} {v:g}" for k, v in values.items())
               for name, values in PRESETS.items()}
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named set of the settings below, which flags given "
                        "beside it override (docs/quality.md; sharp is for runs of 30 minutes or more): "
                        + "; ".join(f"{name}: {flags}" for name, flags in spelled.items()))
    for f in dataclasses.fields(Config):
        help = _help(f).replace("%", "%%")
        if f.type in ("bool", bool):
            if f.default:
                parser.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", help=help)
            else:
                parser.add_argument(f"--{f.name}", action="store_true", help=help)
            continue
        kind = {"int": int, "float": float}.get(f.type, str)
        choices = f.metadata["choices"]
        parser.add_argument(f"--{f.name}", type=kind, default=f.default, choices=choices,
                            metavar=f.name.upper() if choices is None else None, help=help)


def parse_config_args(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """parser.parse_args(argv), the --preset's settings taking the place of the defaults, so that flags given win."""
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Config:
    """A validated Config from parsed flags, paths made absolute; fields without a flag keep their defaults."""
    known = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in vars(args).items() if k in known}).validate().resolved()


def flags_markdown() -> str:
    """The flag table for README.md (`python -m vae.config` prints it)."""
    rows = ["| flag | default | what |", "|---|---|---|"]
    for f in dataclasses.fields(Config):
        is_bool = f.type in ("bool", bool)
        flag = f"--no_{f.name}" if is_bool and f.default else f"--{f.name}"
        default = "off" if is_bool else ("synthetic faces" if f.default is None else f"`{f.default}`")
        rows.append(f"| `{flag}` | {default} | {_help(f)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(flags_markdown())
