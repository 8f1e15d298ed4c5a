"""A run folder: what training writes, how a run resumes, and how scripts find its model."""
from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from pathlib import Path

from vae.config import Config
from vae.errors import UserError
from vae.files import atomic_path, write_text_atomic

# Everything training writes; --overwrite removes these and nothing else.
OWN_FILES = ["config.json", "state.json", "model_best.keras", "model_last.keras", "history.csv", "loss_curve.png",
             "split.json", "skipped.txt", "model_best.gmm.npz"]
OWN_DIRS = ["samples", "reconstructions", "checkpoints", "logs"]


class RunFolder:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.state = self.path / "state.json"
        self.best_model = self.path / "model_best.keras"
        self.last_model = self.path / "model_last.keras"
        self.history = self.path / "history.csv"
        self.loss_curve = self.path / "loss_curve.png"
        self.split = self.path / "split.json"
        self.samples = self.path / "samples"
        self.reconstructions = self.path / "reconstructions"
        self.checkpoints = self.path / "checkpoints"
        self.logs = self.path / "logs"

    def read_state(self) -> dict | None:
        """The resume point: epoch (0-based, in progress), step (batches done in it), checkpoint, history, ..."""
        if not self.state.exists():
            return None
        try:
            return json.loads(self.state.read_text())
        except ValueError as e:
            raise UserError(f"{self.state} is damaged ({e}); pass --overwrite to start over") from e

    def check(self, cfg: Config, overwrite: bool) -> dict | None:
        """Whether training may use this folder (reading only); the state to resume from, or None to start fresh."""
        if overwrite or not self.config.exists():
            if not overwrite and self.path.exists() and any(self.path.iterdir()):
                raise UserError(f"--out {self.path} exists and is not a run folder; choose another --out")
            return None
        state = self.read_state()
        if state is None:
            return None  # set up but never trained (its start failed): nothing to keep or to match
        if state.get("finished"):
            raise UserError(
                f"{self.path} holds a finished run ({state['finished']}); pass --overwrite to start over, or choose another --out"
            )
        old = Config.load(self.config)
        changed = cfg.changed_settings(old)
        if changed:
            what = ", ".join(f"--{n} {getattr(old, n)} -> {getattr(cfg, n)}" for n in changed)
            raise UserError(
                f"{self.path} holds a run with other settings ({what}); "
                "rerun with the same settings to resume, pass --overwrite to start over, or choose another --out"
            )
        return state

    def start(self, cfg: Config, overwrite: bool) -> dict | None:
        """check(), then clear the folder if asked and record the settings (runtime ones, such as the rate, may change)."""
        state = self.check(cfg, overwrite)
        if overwrite:
            self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        cfg.save(self.config)
        return state

    def clear(self) -> None:
        for name in OWN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in OWN_DIRS:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def save_checkpoint(self, model, state: dict) -> None:
        """Weights and optimizer state, then state.json pointing at them; a kill at any moment leaves the previous pair intact."""
        name = f"ckpt-e{state['epoch']:04d}-s{state['step']:06d}.weights.h5"
        with atomic_path(self.checkpoints / name) as tmp:
            model.save_weights(tmp)
        write_text_atomic(self.state, json.dumps({**state, "checkpoint": f"checkpoints/{name}"}, indent=1))
        for old in self.checkpoints.glob("ckpt-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def save_state(self, state: dict) -> None:
        """state.json alone, keeping its checkpoint (used to mark the run finished)."""
        previous = self.read_state() or {}
        write_text_atomic(self.state, json.dumps({**state, "checkpoint": previous.get("checkpoint")}, indent=1))

    def write_history(self, rows: list[dict]) -> None:
        """history.csv from the full list of epoch rows, so a resumed run never duplicates one."""
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.history, buffer.getvalue())


def model_path(path: Path | str) -> Path:
    """The .keras file to use: the file itself, or a run folder's best model (its last if there is no best)."""
    path = Path(path)
    if path.is_dir():
        run = RunFolder(path)
        for candidate in (run.best_model, run.last_model):
            if candidate.exists():
                return candidate
        raise UserError(f"{path} holds no model_best.keras or model_last.keras; is it a finished run folder?")
    if not path.exists():
        raise UserError(f"--model {path} does not exist; pass a run folder or a .keras file")
    if path.suffix != ".keras":
        raise UserError(f"--model {path} is not a .keras file; pass a run folder or a .keras file")
    return path


def load_model(path: Path | str, image_size: int | None = None, latent_dim: int | None = None):
    """The trained VAE from a run folder or .keras file, with a one-line error for anything else; see check_model."""
    import keras

    import vae  # noqa: F401  (registers the custom objects)

    file = model_path(path)
    if not zipfile.is_zipfile(file):  # Keras would call a damaged file "not found"
        raise UserError(f"--model {file} is damaged or not a model (a .keras file is a zip archive); "
                        "pass a run folder or a .keras file written by train.py")
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as e:  # noqa: BLE001 - corrupt zip, wrong content, foreign model: all the same to the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load --model {file}: not a model saved by this package ({reason[:200]})") from e
    if not isinstance(model, vae.VAE):
        raise UserError(f"--model {file} holds a {type(model).__name__}, not a VAE trained by this package")
    check_model(model, image_size, latent_dim)
    return model


def check_model(model, image_size: int | None = None, latent_dim: int | None = None) -> None:
    """Raise UserError if the model has another image size or latent dimension than asked (None: anything goes)."""
    for flag, asked in (("image_size", image_size), ("latent_dim", latent_dim)):
        has = getattr(model, flag)
        if asked is not None and asked != has:
            raise UserError(
                f"--{flag} {asked} was asked, but the model has --{flag} {has} "
                f"({model.image_size}px images, latent dimension {model.latent_dim}); "
                f"pass a model trained with --{flag} {asked}, or leave --{flag} out"
            )


def run_config(path: Path | str) -> Config | None:
    """The Config of the run a model belongs to (config.json beside it), if there is one."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return Config.load(folder / "config.json") if (folder / "config.json").exists() else None


def run_data_folder(path: Path | str) -> Path | None:
    """The folder a model's run trained on (config.json's data, or the synthetic faces), if both exist."""
    from vae.training import SYNTHETIC_DIR

    cfg = run_config(path)
    if cfg is None:
        return None
    folder = Path(cfg.data) if cfg.data else SYNTHETIC_DIR
    return folder if folder.is_dir() else None


def validation_names(path: Path | str) -> list[str]:
    """The validation files (relative to the data folder) of a model's run, from split.json."""
    path = Path(path)
    split = RunFolder(path if path.is_dir() else path.parent).split
    if not split.exists():
        raise UserError(f"{split} does not exist, so the run's validation images are unknown; pass --data")
    return json.loads(split.read_text())["validation"]


def training_names(path: Path | str) -> tuple[Path, list[str]] | None:
    """(data folder, its training files) of a model's run: every image there but the validation split; None if unknown."""
    from vae.data import find_images

    folder = run_data_folder(path)
    path = Path(path)
    if folder is None or not RunFolder(path if path.is_dir() else path.parent).split.exists():
        return None
    validation = set(validation_names(path))
    names = [n for n in (p.relative_to(folder).as_posix() for p in find_images(folder)) if n not in validation]
    return (folder, names) if names else None
