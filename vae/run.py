"""A run: the folder train.py writes, or a bare .keras file, opened once and asked for everything it holds.

A run folder is its user's database: one trainer at a time (a lock the kernel releases), every file
written under a temporary name and renamed when complete, the two newest checkpoints kept so that a
damaged one falls back to the one before, and nothing replaced without --overwrite.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from vae.config import Config
from vae.errors import UserError
from vae.files import PARTIAL, FolderLock, atomic_path, link_atomic, remove_dead_partials, write_csv, write_text_atomic

CHECKPOINT_NAME = re.compile(r"checkpoints/ckpt-e\d{4}-s\d{6}\.(keras|weights\.h5)")  # what save_checkpoint writes
KEEP_CHECKPOINTS = 2  # the newest and the one before, to fall back on when the newest cannot be read
MANIFEST = "manifest.json"  # every file this run wrote: --overwrite removes those and nothing else
# What train.py wrote before runs kept a manifest: --overwrite recognises an earlier version's run folder by these names.
EARLIER_VERSIONS_WROTE = re.compile(
    r"(config\.json|state\.json|model_(best|last)\.(keras|gmm\.npz)|history\.csv|loss_curve\.png|split\.json|skipped\.txt"
    r"|checkpoints/ckpt-e\d{4}-s\d{6}\.(keras|json|weights\.h5)|(samples|reconstructions)/epoch_\d{3,}\.png"
    r"|logs/events\.out\.tfevents\.[^/]+)")


@dataclass
class TrainState:
    """Where training stands: what state.json and each checkpoint's side file hold. Read and checked in from_json."""

    epoch: int  # epochs finished
    step: int  # steps done in epoch `epoch` (0 at an epoch's end)
    checkpoint: str  # the checkpoint of this point, relative to the run folder (checkpoints/ckpt-eNNNN-sNNNNNN.keras)
    history: list[dict]  # one row per finished epoch, as in history.csv
    best_val_loss: float | None  # the lowest validation loss so far: model_best.keras's
    untrained_probe_loss: float  # the untrained model's loss on the probe faces: the health check's yardstick
    finished: str | None = None  # why training ended, once it has
    complete: bool = False  # finished and the latent mixture fitted (or found impossible): nothing left to do
    minutes: float = 0.0  # wall-clock minutes of train.py on this run, over every resume (what --max_minutes counts)
    data_files: str | None = None  # checksum of the training folder's file list (None from earlier versions)
    cycle_step: int = 0  # the optimizer step at which the learning-rate schedule's cycle began (0, or an extension's)
    cycle_minutes: float = 0.0  # minutes trained when it began
    extra: dict = field(default_factory=dict)  # fields of a later version, kept as they are

    @classmethod
    def from_json(cls, values, source: Path) -> TrainState:
        """The state in `values` (parsed JSON) if every field has its type; else UserError naming the file and field."""
        def damaged(what):
            return UserError(f"{source} is damaged: {what}; pass --overwrite to start over")

        if not isinstance(values, dict):
            raise damaged(f"it holds a {type(values).__name__}, not a training state")
        values = dict(values)
        values.setdefault("finished", None)  # written only from the first finished epoch on by earlier versions
        values.setdefault("complete", values["finished"] is not None)  # earlier versions fitted the mixture, or gave up
        values.setdefault("minutes", sum(r.get("seconds", 0) for r in values.get("history", []) if isinstance(r, dict)) / 60)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        for name, f in fields.items():
            if name not in values and f.default is dataclasses.MISSING:
                raise damaged(f"{name} is missing")
            value = values.get(name, f.default)
            if isinstance(value, bool) is not (f.type == "bool") or not isinstance(value, _STATE_TYPES[f.type]):
                raise damaged(f"{name} is {json.dumps(value)[:40]}")
        state = cls(**{k: values[k] for k in fields if k in values}, extra={k: v for k, v in values.items() if k not in fields})
        if min(state.epoch, state.step, state.cycle_step) < 0 or not all(isinstance(r, dict) for r in state.history):
            raise damaged("epoch, step or history out of range")
        # Only a name this package writes, so no file outside the run folder is ever opened or linked because state.json said so.
        if not CHECKPOINT_NAME.fullmatch(state.checkpoint):
            raise damaged(f"checkpoint {json.dumps(state.checkpoint)[:60]} is not a checkpoint of this run folder "
                          "(checkpoints/ckpt-eNNNN-sNNNNNN.keras)")
        return state

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        return json.dumps({**values.pop("extra"), **values}, indent=1)

    def at(self, epoch: int, step: int) -> TrainState:
        """This state moved to a point within an epoch (a mid-epoch checkpoint)."""
        return dataclasses.replace(self, epoch=epoch, step=step)

    def end_epoch(self, row: dict) -> None:
        """Record a validated epoch: its history row and the best loss."""
        self.history.append(row)
        if self.best_val_loss is None or row["val_loss"] < self.best_val_loss:
            self.best_val_loss = row["val_loss"]
        self.epoch, self.step = row["epoch"], 0

    def finish_reason(self, cfg: Config, budget_spent: bool) -> str | None:
        """Why training is finished after the last epoch of the history under `cfg`'s settings, or None if it goes on."""
        if budget_spent:
            return f"time budget of {cfg.max_minutes:g} minutes spent in epoch {self.epoch}"
        if self.epoch >= cfg.num_epochs:
            return f"trained {self.epoch} epochs"
        if cfg.early_stopping and self.history:
            losses = [r["val_loss"] for r in self.history]
            if len(losses) - 1 - losses.index(min(losses)) >= cfg.early_stopping:
                return f"early stopping: validation loss has not improved for {cfg.early_stopping} epochs"
        return None

    def extends_under(self, cfg: Config) -> bool:
        """Whether a finished run goes on under `cfg` (a larger --num_epochs or --max_minutes than finished it)."""
        spent = bool(cfg.max_minutes) and self.minutes >= cfg.max_minutes
        return self.finished is not None and self.step == 0 and self.finish_reason(cfg, spent) is None


_STATE_TYPES = {"int": (int,), "str": (str,), "list[dict]": (list,), "float | None": (float, int, type(None)),
                "float": (float, int), "str | None": (str, type(None)), "bool": (bool,), "dict": (dict,)}


def file_checksum(path: Path) -> str:
    """sha256 of a file's bytes: what ties a fitted prior to the model it was fitted for."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def names_checksum(names) -> str:
    """Checksum of a list of file names, whatever their order."""
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8", "surrogateescape")).hexdigest()


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
        self.manifest_file = self.folder / MANIFEST
        self._model_file = Path(model_file) if model_file is not None else None
        self._lock = FolderLock(self.lock_file)
        self._written: set[str] | None = None  # the manifest, once the trainer has read it

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
        from vae.data.image_files import find_images

        folder = self.data_folder
        if folder is None or not self.split_file.exists():
            return None
        validation = set(self.validation_names)
        names = [n for n in (p.relative_to(folder).as_posix() for p in find_images(folder)) if n not in validation]
        return (folder, names) if names else None

    @staticmethod
    def prior_file(prior_class, model_file: Path) -> Path:
        """Where train.py saves the fitted prior of a model: beside it (model_best.gmm.npz)."""
        return model_file.with_name(f"{model_file.stem}.{prior_class.name}.npz")

    def saved_prior(self, prior_class, model_file: Path | None = None):
        """The prior train.py fitted for the model (default: the one in use), or None if it is missing or was fitted for
        other bytes than the model's (a stale file is never used)."""
        from vae.priors import PriorUnavailable

        model_file = model_file or self.model_file
        path = self.prior_file(prior_class, model_file)
        if not path.exists():
            return None
        try:
            prior, checksum = prior_class.load(path)
        except UserError as e:
            raise PriorUnavailable(str(e)) from e
        return prior if checksum == file_checksum(model_file) else None

    def prior(self, model, name: str | None = None, progress: bool = True):
        """What random latents are drawn from: the prior called `name` (vae.priors.PRIORS); with no --prior (None), the
        default prior when it can be had, else N(0, I) with a note. A fitted prior train.py did not save for this model
        is fitted in memory, said on stderr, and written nowhere: readers never write into a run folder."""
        from vae.priors import DEFAULT, PRIORS, PriorUnavailable, StandardNormal

        kind = PRIORS[name] if name else DEFAULT
        if not kind.fitted:
            return kind.fit(model)
        try:
            found = self.saved_prior(kind)
            if found is not None:
                return found
            training = self.training_names()
            if training is None:
                raise PriorUnavailable(f"the {kind.name} prior of {self.model_file} was not saved by train.py, and its "
                                       "training images cannot be found (config.json, split.json and the data folder) "
                                       "to fit it")
            from vae.data.dataset import load_faces

            folder, names = training
            fitted = kind.fit(model, load_faces(folder, model.image_size, progress=progress, names=names), progress=progress)
            print(f"note: {self.prior_file(kind, self.model_file).name} is missing or belongs to another model, so the "
                  f"{kind.name} prior was fitted in memory for this command (nothing is written)", file=sys.stderr)
            return fitted
        except PriorUnavailable as e:
            if name:
                raise UserError(f"{e}; use --prior normal") from e
            print(f"note: {e}; drawing from N(0, I)", file=sys.stderr)
            return StandardNormal(model.latent_dim)

    # Writing (train.py, the one writer, under the lock).

    def lock(self) -> None:
        """Become the one trainer of this folder, or raise UserError naming the one that is."""
        self._lock.acquire("train.py is training it")

    def unlock(self) -> None:
        self._lock.release()

    def read_state(self) -> TrainState | None:
        """The resume point, checked; None if absent."""
        if not self.state_file.exists():
            return None
        try:
            values = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{self.state_file} is damaged ({e}); pass --overwrite to start over") from e
        return None if values is None else TrainState.from_json(values, self.state_file)

    def holds_training(self) -> bool:
        """Whether anything here is the fruit of training: a model, a checkpoint or a history."""
        return (self.best_model.exists() or self.last_model.exists() or self.history_file.exists()
                or any(self.checkpoints.glob("ckpt-*")))

    def check(self, cfg: Config, overwrite: bool) -> TrainState | None:
        """Whether training may use this folder (reading only): the state to resume from, or None to start fresh."""
        if overwrite:
            self.removable()  # refuses a folder that is not a run of this package
            return None
        if not self.config_file.exists():
            # The lock and the manifest (and their temporary names while they are written) are a starting trainer's
            # first files, before config.json: another trainer checking at that moment must reach the lock and be told
            # who holds it, not that this is no run folder.
            ours = (self.lock_file, self.manifest_file)
            others = ([p.name for p in self.folder.iterdir() if p not in ours and not p.name.startswith(PARTIAL)]
                      if self.folder.is_dir() else [])
            if others or self.folder.exists() and not self.folder.is_dir():
                raise UserError(f"--out {self.folder} exists and is not a run folder; choose another --out")
            return None
        state = self.read_state()
        if state is None:
            if self.holds_training():
                raise UserError(f"{self.folder} holds a trained model but no state.json (deleted?), so it cannot resume; "
                                "pass --overwrite to start over (it replaces the model), or choose another --out")
            return None  # set up but never trained (its start failed): nothing to keep or to match
        if state.finished and state.complete and not state.extends_under(cfg):
            raise UserError(f"{self.folder} holds a finished run ({state.finished}); pass a larger --num_epochs or "
                            "--max_minutes to train it further, --overwrite to start over, or choose another --out")
        old = Config.load(self.config_file)
        changed = cfg.changed_settings(old)
        if changed:
            what = ", ".join(f"--{n} {getattr(old, n)} -> {getattr(cfg, n)}" for n in changed)
            raise UserError(f"{self.folder} holds a run with other settings ({what}); "
                            "rerun with the same settings to resume, pass --overwrite to start over, or choose another --out")
        return state

    def claim(self, cfg: Config, overwrite: bool) -> None:
        """check() and lock: what train.py does before it loads TensorFlow, so that a second trainer is refused at once."""
        self.check(cfg, overwrite)  # before the lock, which would create a file in a folder that is not ours
        self.lock()

    def start(self, cfg: Config, overwrite: bool) -> TrainState | None:
        """claim(), check again under the lock, clear if asked, record the settings; the state to resume, or None."""
        self.claim(cfg, overwrite)  # a no-op lock if train.py claimed the folder already
        state = self.check(cfg, overwrite)
        if overwrite:
            self.clear()
        remove_dead_partials(self.folder)
        self._written = set(self._read_manifest() or [])
        self.record(self.config_file)
        cfg.save(self.config_file)
        return state

    # The manifest: what this run wrote, recorded before each file is written.

    def _read_manifest(self) -> list[str] | None:
        if not self.manifest_file.exists():
            return None
        try:
            names = json.loads(self.manifest_file.read_text(encoding="utf-8"))["written"]
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return names
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raise UserError(f"{self.manifest_file} is damaged, so what this run wrote is unknown; move the folder's files you "
                        "want to keep and delete it, or choose another --out")

    def record(self, *paths: Path) -> None:
        """Add files this run is about to write to its manifest."""
        new = {p.relative_to(self.folder).as_posix() for p in paths} - self._written
        if new:
            self._written |= new
            write_text_atomic(self.manifest_file, json.dumps({"written": sorted(self._written)}, indent=0))

    def removable(self) -> list[Path]:
        """The files --overwrite removes: those the manifest lists (or, in an earlier version's run folder, those that
        version wrote); UserError naming what is there if the folder is not a run of this package."""
        if not self.folder.exists():
            return []
        if not self.folder.is_dir():
            raise UserError(f"--out {self.folder} is a file, not a run folder; choose another --out")
        names = self._read_manifest()
        files = [p for p in self.folder.rglob("*") if p.is_file() or p.is_symlink()]
        if names is None:
            if not files or files == [self.lock_file]:
                return files
            if not self.state_file.exists():
                shown = ", ".join(sorted(p.relative_to(self.folder).as_posix() for p in files)[:5])
                raise UserError(f"--overwrite: {self.folder} is not a run folder of train.py (it has no {MANIFEST} or "
                                f"state.json), so nothing in it is removed; it holds {shown}"
                                f"{' and more' if len(files) > 5 else ''}; choose another --out")
            self.read_state()  # an earlier version's run: recognised only with a state.json that checks out
            return [p for p in files if EARLIER_VERSIONS_WROTE.fullmatch(p.relative_to(self.folder).as_posix())]
        listed = {self.folder / n for n in names}
        return [p for p in files if p in listed]

    def clear(self) -> None:
        """Remove what this package wrote (under the lock) and the folders it leaves empty; say what is kept."""
        removed = self.removable()
        for path in removed:
            if path != self.lock_file:
                path.unlink(missing_ok=True)
        self.manifest_file.unlink(missing_ok=True)
        for folder in sorted({p.parent for p in removed}, key=lambda p: len(p.parts), reverse=True):
            if folder != self.folder and not any(folder.iterdir()):
                folder.rmdir()
        kept = sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*")
                      if p.is_file() and p != self.lock_file)
        if kept:
            print(f"note: --overwrite kept {len(kept)} files train.py did not write: {', '.join(kept[:5])}"
                  f"{' and more' if len(kept) > 5 else ''}", file=sys.stderr)

    def save_checkpoint(self, model, state: TrainState) -> TrainState:
        """Model, optimizer and `state` at this point, then state.json pointing at them; the two newest are kept.
        Returns the state with its checkpoint. A kill at any moment leaves the previous pair intact."""
        name = f"ckpt-e{state.epoch:04d}-s{state.step:06d}"
        file = self.checkpoints / f"{name}.keras"
        self.record(file, file.with_suffix(".json"), self.state_file)
        with atomic_path(file) as tmp:
            model.save(tmp)
        state = dataclasses.replace(state, checkpoint=f"checkpoints/{file.name}")
        write_text_atomic(file.with_suffix(".json"), state.to_json())
        self.save_state(state)
        for old in sorted(self.checkpoints.glob("ckpt-*.keras"), reverse=True)[KEEP_CHECKPOINTS:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        return state

    def save_state(self, state: TrainState) -> None:
        self.record(self.state_file)
        write_text_atomic(self.state_file, state.to_json())

    def link_model(self, checkpoint: Path, to: Path) -> None:
        """model_last.keras / model_best.keras: the same bytes as a checkpoint, never written twice."""
        self.record(to)
        link_atomic(checkpoint, to)

    def resume_point(self, state: TrainState, say) -> TrainState:
        """The newest checkpoint that is intact, and its state: a damaged or missing one is reported in one line
        through say(), and the one before it is used."""
        candidates = [state, *self._older_states(state.checkpoint)]
        for candidate, following in zip(candidates, [*candidates[1:], None]):
            path = self.folder / candidate.checkpoint
            problem = checkpoint_problem(path)
            if problem is None:
                return candidate
            if following is None:
                raise UserError(f"no intact checkpoint in {self.checkpoints} ({path.name}: {problem}); "
                                "pass --overwrite to start over")
            say(f"warning: checkpoint {path.name} is {problem}; "
                f"resuming from the one before it, {Path(following.checkpoint).name}")
        raise AssertionError("unreachable")

    def state_before(self, checkpoint: str) -> TrainState | None:
        """The state of the newest intact-looking checkpoint older than `checkpoint`, or None."""
        older = self._older_states(checkpoint)
        return older[0] if older else None

    def _older_states(self, newest: str) -> list[TrainState]:
        """States of the intact-looking checkpoints older than `newest`, newest first, from their side files."""
        states = []
        for side in sorted(self.checkpoints.glob("ckpt-*.json"), reverse=True):
            if f"checkpoints/{side.with_suffix('.keras').name}" >= newest:
                continue
            try:
                states.append(TrainState.from_json(json.loads(side.read_text(encoding="utf-8")), side))
            except (OSError, ValueError, UserError):
                continue
        return states

    def write_history(self, rows: list[dict]) -> None:
        """history.csv from the full list of epoch rows, so a resumed run never duplicates one."""
        self.record(self.history_file)
        write_csv(self.history_file, rows)

    def save_prior(self, prior, model_file: Path) -> None:
        """The fitted prior of `model_file`, tied to its bytes by their checksum."""
        path = self.prior_file(type(prior), model_file)
        self.record(path)
        prior.save(path, file_checksum(model_file))

    def check_data(self, state: TrainState, names: list[str]) -> None:
        """UserError, with the differences, if the training folder's files are not those the run trained on: steps per
        epoch, the validation split and the schedule would change, and the best model be chosen on other faces."""
        if state.data_files is None or names_checksum(names) == state.data_files:
            return
        try:
            before = set(json.loads(self.split_file.read_text(encoding="utf-8"))["files"])
        except (OSError, ValueError, KeyError, TypeError):
            before = None
        now = set(names)
        if before is None:
            what = f"its {len(now)} files are not those the run trained on"
        else:
            added, removed = sorted(now - before), sorted(before - now)
            what = ", ".join(f"{len(n)} files {verb} ({', '.join(n[:3])}{', ...' if len(n) > 3 else ''})"
                             for n, verb in ((added, "added"), (removed, "removed")) if n)
        folder = self.config.data if self.config and self.config.data else "the synthetic faces"
        raise UserError(f"the data folder {folder} changed since the run trained on it: {what}; put it back as it was to "
                        "resume, pass --overwrite to start over, or choose another --out")

    def write_split(self, val_split: float, names: list[str], validation: list[str]) -> None:
        """split.json: the validation files, and every file of the training folder (to name what changed on a resume)."""
        self.record(self.split_file)
        write_text_atomic(self.split_file, json.dumps({"val_split": val_split, "validation": validation,
                                                       "files": sorted(names)}, indent=0))


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
