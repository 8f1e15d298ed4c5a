"""A run: the folder train.py writes, or a bare .keras file, opened once and asked for everything it holds.

A run folder is its user's database: one trainer at a time (a lock the kernel releases), every file
written under a temporary name and renamed when complete, the two newest checkpoints kept so that a
damaged one falls back to the one before, and nothing replaced without --overwrite.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from functools import cached_property
from pathlib import Path

from vae.config import Config
from vae.errors import UserError
from vae.files import FolderLock, atomic_path, link_atomic, remove_dead_partials, write_csv, write_text_atomic

CHECKPOINT_NAME = re.compile(r"checkpoints/ckpt-e\d{4}-s\d{6}\.(keras|weights\.h5)")  # what save_checkpoint writes
KEEP_CHECKPOINTS = 2  # the newest and the one before, to fall back on when the newest cannot be read
# What state.json must hold, and of which types; anything else means it was damaged.
STATE_FIELDS = {"epoch": (int,), "step": (int,), "checkpoint": (str,), "history": (list,),
                "best_val_loss": (float, int, type(None)), "finished": (str, type(None)), "untrained_probe_loss": (float, int)}


class Run:
    """The files of one run. Readers open it with Run.open(--model); train.py builds it from --out."""

    def __init__(self, folder: Path | str, model_file: Path | str | None = None):
        self.folder = Path(folder)
        self.config_file = self.folder / "config.json"
        self.state_file = self.folder / "state.json"
        self.best_model = self.folder / "model_best.keras"
        self.last_model = self.folder / "model_last.keras"
        self.history_file = self.folder / "history.csv"
        self.loss_curve = self.folder / "loss_curve.png"
        self.split_file = self.folder / "split.json"
        self.skipped_file = self.folder / "skipped.txt"
        self.samples = self.folder / "samples"
        self.reconstructions = self.folder / "reconstructions"
        self.checkpoints = self.folder / "checkpoints"
        self.logs = self.folder / "logs"
        self.evaluation = self.folder / "evaluation"
        self.lock_file = self.folder / "train.lock"
        self._model_file = Path(model_file) if model_file is not None else None
        self._lock = FolderLock(self.lock_file)

    # Everything training writes (--overwrite removes these and nothing else), and the mixture beside each model.
    def own_files(self) -> list[Path]:
        return [self.config_file, self.state_file, self.best_model, self.last_model, self.history_file, self.loss_curve,
                self.split_file, self.skipped_file, self.mixture_file_of(self.best_model), self.mixture_file_of(self.last_model)]

    def own_folders(self) -> list[Path]:
        return [self.samples, self.reconstructions, self.checkpoints, self.logs, self.evaluation]

    @classmethod
    def open(cls, path: Path | str) -> Run:
        """The run of --model: a run folder (its best model, else its last) or a .keras file (with its folder's run, if any)."""
        path = Path(path)
        if path.is_dir():
            run = cls(path)
            if not run.model_file.exists():
                raise UserError(f"{path} holds no model_best.keras or model_last.keras; is it a finished run folder?")
            return run
        if not path.exists():
            raise UserError(f"--model {path} does not exist; pass a run folder or a .keras file")
        if path.suffix != ".keras":
            raise UserError(f"--model {path} is not a .keras file; pass a run folder or a .keras file")
        return cls(path.parent, model_file=path)

    @property
    def model_file(self) -> Path:
        """The .keras file readers use: the one opened, else the best model, else the last."""
        if self._model_file is not None:
            return self._model_file
        return self.best_model if self.best_model.exists() or not self.last_model.exists() else self.last_model

    def __str__(self) -> str:
        return str(self._model_file or self.folder)

    # Reading.

    @cached_property
    def config(self) -> Config | None:
        """The settings the model was trained with (config.json beside it), checked; None for a bare .keras file."""
        return Config.load(self.config_file) if self.config_file.exists() else None

    def load_model(self, image_size: int | None = None, latent_dim: int | None = None):
        """The trained VAE, with a one-line error for a damaged or foreign file; --image_size/--latent_dim must match if given."""
        from vae.model.vae import VAE, load_vae

        file = self.model_file
        if not zipfile.is_zipfile(file):  # Keras would call a damaged file "not found"
            raise UserError(f"--model {file} is damaged or not a model (a .keras file is a zip archive); "
                            "pass a run folder or a .keras file written by train.py")
        model = load_vae(file)
        for flag, asked in (("image_size", image_size), ("latent_dim", latent_dim)):
            has = getattr(model, flag)
            if asked is not None and asked != has:
                raise UserError(f"--{flag} {asked} was asked, but the model has --{flag} {has} "
                                f"({model.image_size}px images, latent dimension {model.latent_dim}); "
                                f"pass a model trained with --{flag} {asked}, or leave --{flag} out")
        assert isinstance(model, VAE)
        return model

    @property
    def data_folder(self) -> Path | None:
        """The folder the run trained on (config.json's data, or the synthetic faces), if it still exists."""
        from vae.data.synthetic import SYNTHETIC_DIR

        if self.config is None:
            return None
        folder = Path(self.config.data) if self.config.data else SYNTHETIC_DIR
        return folder if folder.is_dir() else None

    @cached_property
    def validation_names(self) -> list[str]:
        """The validation files (relative to the data folder), from split.json."""
        if not self.split_file.exists():
            raise UserError(f"{self.split_file} does not exist, so the run's validation images are unknown; pass --data")
        try:
            names = json.loads(self.split_file.read_text(encoding="utf-8"))["validation"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{self.split_file} is damaged ({e}); pass --data") from e
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{self.split_file} is damaged: validation is not a list of file names; pass --data")
        return names

    def training_names(self) -> tuple[Path, list[str]] | None:
        """(data folder, its training files): every image there but the validation split; None if unknown."""
        from vae.data.decode import find_images

        folder = self.data_folder
        if folder is None or not self.split_file.exists():
            return None
        validation = set(self.validation_names)
        names = [n for n in (p.relative_to(folder).as_posix() for p in find_images(folder)) if n not in validation]
        return (folder, names) if names else None

    @staticmethod
    def mixture_file_of(model_file: Path) -> Path:
        return model_file.with_name(model_file.stem + ".gmm.npz")

    @property
    def mixture_file(self) -> Path:
        """Where the latent mixture of the model in use is cached."""
        return self.mixture_file_of(self.model_file)

    def prior(self, model, prior: str | None = None, progress: bool = True):
        """What random latents are drawn from: the run's latent mixture ("gmm") or None for N(0, I) ("normal"); with no
        --prior (None), the mixture when it is cached or can be fitted, else N(0, I) with a note on stderr."""
        from vae.model.prior import GaussianMixture, MixtureUnavailable, fit_mixture

        if prior == "normal":
            return None
        cache = self.mixture_file
        try:
            if cache.exists() and cache.stat().st_mtime >= self.model_file.stat().st_mtime:
                return GaussianMixture.load(cache)
            found = self.training_names()
            if found is None:
                raise MixtureUnavailable(f"cannot find the training images of {self.model_file} (config.json, split.json "
                                         "and the data folder) to fit the latent mixture")
            from vae.data.dataset import load_faces

            folder, names = found
            mixture = fit_mixture(model, load_faces(folder, model.image_size, progress=progress, names=names), progress=progress)
            mixture.save(cache)
            return mixture
        except MixtureUnavailable as e:
            if prior == "gmm":
                raise UserError(f"{e}; use --prior normal") from e
            print(f"note: {e}; drawing from N(0, I)", file=sys.stderr)
            return None

    # Writing (train.py, the one writer, under the lock).

    def lock(self) -> None:
        """Become the one trainer of this folder, or raise UserError naming the one that is."""
        self._lock.acquire("train.py is training it")

    def unlock(self) -> None:
        self._lock.release()

    def read_state(self) -> dict | None:
        """The resume point, checked (epoch in progress, steps done in it, checkpoint, history, ...); None if absent."""
        if not self.state_file.exists():
            return None
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{self.state_file} is damaged ({e}); pass --overwrite to start over") from e
        if state is None:
            return None
        return check_state(state, self.state_file)

    def holds_training(self) -> bool:
        """Whether anything here is the fruit of training: a model, a checkpoint or a history."""
        return (self.best_model.exists() or self.last_model.exists() or self.history_file.exists()
                or any(self.checkpoints.glob("ckpt-*")))

    def check(self, cfg: Config, overwrite: bool) -> dict | None:
        """Whether training may use this folder (reading only): the state to resume from, or None to start fresh."""
        if overwrite:
            return None
        if not self.config_file.exists():
            others = [p.name for p in self.folder.iterdir() if p != self.lock_file] if self.folder.is_dir() else []
            if others or self.folder.exists() and not self.folder.is_dir():
                raise UserError(f"--out {self.folder} exists and is not a run folder; choose another --out")
            return None
        state = self.read_state()
        if state is None:
            if self.holds_training():
                raise UserError(f"{self.folder} holds a trained model but no state.json (deleted?), so it cannot resume; "
                                "pass --overwrite to start over (it replaces the model), or choose another --out")
            return None  # set up but never trained (its start failed): nothing to keep or to match
        if state["finished"]:
            raise UserError(f"{self.folder} holds a finished run ({state['finished']}); "
                            "pass --overwrite to start over, or choose another --out")
        old = Config.load(self.config_file)
        changed = cfg.changed_settings(old)
        if changed:
            what = ", ".join(f"--{n} {getattr(old, n)} -> {getattr(cfg, n)}" for n in changed)
            raise UserError(f"{self.folder} holds a run with other settings ({what}); "
                            "rerun with the same settings to resume, pass --overwrite to start over, or choose another --out")
        return state

    def start(self, cfg: Config, overwrite: bool) -> dict | None:
        """check(), lock, check again under the lock, clear if asked, record the settings; the state to resume, or None."""
        self.check(cfg, overwrite)  # before the lock, which would create a file in a folder that is not ours
        self.lock()
        state = self.check(cfg, overwrite)
        if overwrite:
            self.clear()
        remove_dead_partials(self.folder)
        cfg.save(self.config_file)
        return state

    def clear(self) -> None:
        for path in self.own_files():
            path.unlink(missing_ok=True)
        for path in self.own_folders():
            shutil.rmtree(path, ignore_errors=True)

    def save_checkpoint(self, model, state: dict) -> str:
        """Model, optimizer and `state` at this point, then state.json pointing at them; the two newest are kept.
        Returns the checkpoint's path relative to the folder. A kill at any moment leaves the previous pair intact."""
        name = f"ckpt-e{state['epoch']:04d}-s{state['step']:06d}"
        file = self.checkpoints / f"{name}.keras"
        with atomic_path(file) as tmp:
            model.save(tmp)
        state = {**state, "checkpoint": f"checkpoints/{file.name}"}
        write_text_atomic(file.with_suffix(".json"), json.dumps(state, indent=1))
        write_text_atomic(self.state_file, json.dumps(state, indent=1))
        for old in sorted(self.checkpoints.glob("ckpt-*.keras"), reverse=True)[KEEP_CHECKPOINTS:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        return state["checkpoint"]

    def link_model(self, checkpoint: Path, to: Path) -> None:
        """model_last.keras / model_best.keras: the same bytes as a checkpoint, never written twice."""
        link_atomic(checkpoint, to)

    def resume_point(self, state: dict, say) -> dict:
        """The newest checkpoint that is intact, and its state: a damaged or missing one is reported in one line
        through say(), and the one before it is used."""
        candidates = [state, *self._older_states(state["checkpoint"])]
        for candidate, following in zip(candidates, [*candidates[1:], None]):
            path = self.folder / candidate["checkpoint"]
            problem = checkpoint_problem(path)
            if problem is None:
                return candidate
            if following is None:
                raise UserError(f"no intact checkpoint in {self.checkpoints} ({path.name}: {problem}); "
                                "pass --overwrite to start over")
            say(f"warning: checkpoint {path.name} is {problem}; "
                f"resuming from the one before it, {Path(following['checkpoint']).name}")
        raise AssertionError("unreachable")

    def state_before(self, checkpoint: str) -> dict | None:
        """The state of the newest intact-looking checkpoint older than `checkpoint`, or None."""
        older = self._older_states(checkpoint)
        return older[0] if older else None

    def _older_states(self, newest: str) -> list[dict]:
        """States of the intact-looking checkpoints older than `newest`, newest first, from their side files."""
        states = []
        for side in sorted(self.checkpoints.glob("ckpt-*.json"), reverse=True):
            if f"checkpoints/{side.with_suffix('.keras').name}" >= newest:
                continue
            try:
                states.append(check_state(json.loads(side.read_text(encoding="utf-8")), side))
            except (OSError, ValueError, UserError):
                continue
        return states

    def write_history(self, rows: list[dict]) -> None:
        """history.csv from the full list of epoch rows, so a resumed run never duplicates one."""
        write_csv(self.history_file, rows)


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with a checkpoint file, in a few words; None if it is intact (every stored byte checks out)."""
    if not path.exists():
        return "missing"
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # reads every member and checks its CRC
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            return f"damaged ({type(e).__name__})"
        return None if bad is None else f"damaged ({bad} fails its checksum)"
    try:  # a .weights.h5 checkpoint of an earlier version
        import h5py

        with h5py.File(path, "r") as f:
            f.visit(lambda name: None)
    except Exception as e:  # noqa: BLE001 - h5py raises OSError, KeyError, ... for a damaged file
        return f"damaged ({type(e).__name__})"
    return None


def check_state(state, source: Path) -> dict:
    """`state` if every field has its type; else UserError naming the file and the field."""
    if not isinstance(state, dict):
        raise UserError(f"{source} is damaged: it holds a {type(state).__name__}, not a training state; "
                        "pass --overwrite to start over")
    state.setdefault("finished", None)  # written only from the first finished epoch on by earlier versions
    for name, kinds in STATE_FIELDS.items():
        value = state.get(name)
        if name not in state or isinstance(value, bool) or not isinstance(value, kinds):
            raise UserError(f"{source} is damaged: {name} is {json.dumps(value)[:40] if name in state else 'missing'}; "
                            "pass --overwrite to start over")
    if state["epoch"] < 0 or state["step"] < 0 or not all(isinstance(r, dict) for r in state["history"]):
        raise UserError(f"{source} is damaged: epoch, step or history out of range; pass --overwrite to start over")
    # Only a name this package writes, so no file outside the run folder is ever opened or linked because state.json said so.
    if not CHECKPOINT_NAME.fullmatch(state["checkpoint"]):
        raise UserError(f"{source} is damaged: checkpoint {json.dumps(state['checkpoint'])[:60]} is not a checkpoint of this "
                        "run folder (checkpoints/ckpt-eNNNN-sNNNNNN.keras); pass --overwrite to start over")
    return state
