"""The training run: data, model, one fit call per epoch, checkpoints, and everything written after each epoch."""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vae import data as data_lib
from vae.callbacks import EpochBar, NonFiniteStop, StepCheckpoint, TimeBudget
from vae.config import Config
from vae.density import FIT_IMAGES, density_path, fit_density
from vae.device import prefetch_device, resolve_jit, use_precision
from vae.distribute import barrier, is_chief, make_strategy
from vae.errors import UserError
from vae.files import atomic_path, write_text_atomic
from vae.images import make_grid, pairs_grid, save_png
from vae.model import VAE
from vae.optimizer import current_learning_rate, make_optimizer
from vae.plots import plot_history
from vae.run_folder import RunFolder, load_model
from vae.tensorboard import TensorBoardLog

SYNTHETIC_DIR = Path(__file__).resolve().parent.parent / "data" / "synthetic"
GRID_SIZE = 64  # faces in each per-epoch sample grid
PROBE_SIZE = 32  # fixed validation faces: the reconstruction grid, and the health check before each checkpoint
BLOWUP = 10.0  # a loss this many times the untrained model's means the weights blew up, finite or not


def say(text: str) -> None:
    print(text, flush=True)


def train(cfg: Config, overwrite: bool = False) -> RunFolder:
    """Train (or resume) the run in cfg.out; return its folder."""
    trainer = Trainer(cfg, overwrite)
    try:
        return trainer.run()
    finally:
        if trainer.scratch is not None:
            shutil.rmtree(trainer.scratch, ignore_errors=True)


class Trainer:
    def __init__(self, cfg: Config, overwrite: bool):
        self.started = time.monotonic()
        self.cfg = cfg
        self.strategy = make_strategy(cfg.strategy)
        if cfg.max_minutes and isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise UserError("--max_minutes cannot be used with --strategy multiworker: each worker's clock would decide alone")
        main = RunFolder(cfg.out)
        if is_chief(self.strategy):
            self.folder, self.scratch = main, None
            resumed = main.start(cfg, overwrite)
            barrier(self.strategy)
        else:
            # Every worker runs the same steps (collectives need all of them) but writes to its own
            # scratch folder, removed at the end; it resumes from the chief's checkpoint once the
            # chief has prepared the run folder.
            barrier(self.strategy)
            resumed = main.check(cfg, overwrite=False)
            self.scratch = Path(tempfile.mkdtemp(prefix="vae-worker-"))
            self.folder = RunFolder(self.scratch)
            self.folder.start(cfg, overwrite=False)
        if resumed is not None:
            say(f"resuming from epoch {resumed['epoch'] + 1}, step {resumed['step']}")
        self.faces = load_training_faces(cfg, self.folder)
        self.train_idx, self.val_idx = self.faces.split(cfg.val_split)
        names = [self.faces.names[i] for i in self.val_idx]
        write_text_atomic(self.folder.split, json.dumps({"val_split": cfg.val_split, "validation": names}, indent=0))
        if len(self.train_idx) < cfg.batch_size:
            raise UserError(f"only {len(self.train_idx)} training images, fewer than --batch_size {cfg.batch_size}; lower --batch_size")
        self.steps = len(self.train_idx) // cfg.batch_size
        say(f"{len(self.train_idx)} training and {len(self.val_idx)} validation images, {self.steps} steps per epoch")
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            say(f"{type(self.strategy).__name__}: {replicas} replicas, {cfg.batch_size // replicas} images each per step")

        self.model = build_model(cfg, self.steps, self.strategy)
        self.fixed_z = np.random.default_rng(cfg.seed).standard_normal((GRID_SIZE, cfg.latent_dim)).astype("float32")
        self.probe = self.faces.numpy(self.val_idx[:PROBE_SIZE])
        if resumed is None:
            # The untrained model is the first good state: a run that diverges at once still leaves
            # a checkpoint and a loadable model behind.
            self.state = {"epoch": 0, "step": 0, "history": [], "best_val_loss": None,
                          "untrained_probe_loss": self.probe_loss()}
            self.folder.save_checkpoint(self.model, self.state)
        else:
            self.state = resumed
            self.model.load_weights(main.path / resumed["checkpoint"])
        self.blowup = None  # what went wrong, once training is found diverged

    def run(self) -> RunFolder:
        cfg, state = self.cfg, self.state
        tensorboard = TensorBoardLog(self.folder.logs)
        bar = EpochBar(self.steps, cfg.num_epochs)
        nonfinite = NonFiniteStop(cfg.max_bad_steps)
        budget = TimeBudget(cfg.max_minutes, self.started)
        callbacks = [bar, StepCheckpoint(cfg.save_every_steps, self.steps, self.checkpoint), nonfinite, budget]
        val_ds = data_lib.eval_batches(self.faces, self.val_idx, cfg.batch_size)

        for epoch in range(state["epoch"], cfg.num_epochs):
            first_step = state["step"]
            for cb in callbacks:
                cb.start_epoch(epoch, first_step)
            t0 = time.perf_counter()
            ds = data_lib.train_batches(self.faces, self.train_idx, cfg.batch_size, cfg.seed, epoch, first_step, cfg.flip,
                                        device=prefetch_device(self.strategy))
            fit = self.model.fit(ds, initial_epoch=epoch, epochs=epoch + 1, verbose=0, callbacks=callbacks, shuffle=False)
            seconds = time.perf_counter() - t0
            if nonfinite.tripped_at is not None:
                at_epoch, at_step = nonfinite.tripped_at
                self.blowup = (f"training stopped at epoch {at_epoch + 1}, step {at_step}: {cfg.max_bad_steps} consecutive "
                               "steps had a NaN or Inf loss or gradient (each was skipped)")
            if self.blowup:
                raise UserError(self.diverged())

            val_logs = self.model.evaluate(val_ds, return_dict=True, verbose=0)
            if not self.healthy(val_logs["loss"]):
                self.blowup = f"training stopped after epoch {epoch + 1}: the validation loss is {val_logs['loss']:.4g}"
                raise UserError(self.diverged())
            row = {
                "epoch": epoch + 1,
                "steps": bar.last_step,
                **{k: float(v[-1]) for k, v in fit.history.items() if k != "consecutive_skips"},
                **{f"val_{k}": float(v) for k, v in val_logs.items()},
                "learning_rate": current_learning_rate(self.model.optimizer),
                "seconds": round(seconds, 2),
                "images_per_second": round((bar.last_step - first_step) * cfg.batch_size / seconds, 1),
            }
            state["history"].append(row)
            if state["best_val_loss"] is None or row["val_loss"] < state["best_val_loss"]:
                state["best_val_loss"] = row["val_loss"]
                save_model(self.model, self.folder.best_model)
            save_model(self.model, self.folder.last_model)
            state.update(epoch=epoch + 1, step=0, finished=finish_reason(cfg, state["history"], epoch, budget.spent))
            self.folder.save_checkpoint(self.model, state)

            grids = epoch_grids(self.model, self.fixed_z, self.probe)
            for name, grid in grids.items():
                save_png(grid, self.folder.path / name / f"epoch_{epoch + 1:03d}.png", min_side=256)
            tensorboard.epoch(row, grids)
            self.folder.write_history(state["history"])
            plot_history(state["history"], self.folder.loss_curve)
            say(epoch_line(row, cfg.num_epochs))
            if state["finished"]:
                break
        if self.scratch is None:
            # Fitted now, while the training faces are decoded, so `sample.py --prior gmm` starts at once.
            say(f"fitting the latent mixture of sample.py --prior gmm on {min(FIT_IMAGES, len(self.train_idx))} training images")
            best = load_model(self.folder.best_model)
            fit_density(best, self.faces, self.train_idx, progress=False).save(density_path(self.folder.best_model))
        where = f"models in {self.folder.path}" if self.scratch is None else f"the chief wrote the models to {self.cfg.out}"
        say(f"done: {state['finished']}; best validation loss {state['best_val_loss']:.2f}; {where}")
        return self.folder

    def probe_loss(self) -> float:
        """Loss of the fixed validation faces through the posterior means: cheap, deterministic, no metric side effects."""
        return float(keras.ops.convert_to_numpy(self.model.deterministic_loss(self.probe)))

    def healthy(self, loss: float) -> bool:
        return math.isfinite(loss) and loss < BLOWUP * self.state["untrained_probe_loss"]

    def checkpoint(self, epoch: int, step: int) -> None:
        """A mid-epoch checkpoint, only of weights that pass the health check; otherwise stop as diverged."""
        loss = self.probe_loss()
        if not self.healthy(loss):
            self.blowup = f"training stopped at epoch {epoch + 1}, step {step}: the loss of {len(self.probe)} validation faces is {loss:.4g}"
            self.model.stop_training = True
            return
        self.folder.save_checkpoint(self.model, {**self.state, "epoch": epoch, "step": step})

    def diverged(self) -> str:
        """The message for a run that blew up; the last checkpoint (healthy by construction) stays as it is."""
        saved = self.folder.read_state()
        lr = self.cfg.learning_rate
        if not self.folder.last_model.exists():
            self.model.load_weights(self.folder.path / saved["checkpoint"])
            save_model(self.model, self.folder.last_model)
        return (
            f"{self.blowup}; the learning rate {lr:g} is likely too high. The last good checkpoint "
            f"({saved['checkpoint']}: epoch {saved['epoch'] + 1}, step {saved['step']}) is intact and "
            f"{self.folder.last_model} loads: rerun with --learning_rate {1e-3 if lr > 1e-3 else lr / 10:g} to resume from it"
        )


def load_training_faces(cfg: Config, folder: RunFolder) -> data_lib.FaceSet:
    """Decode the training folder (or the synthetic faces) and report skipped files in one line."""
    if cfg.data is None:
        from vae.synthetic import materialize

        source = materialize(SYNTHETIC_DIR, cfg.synthetic_num, cfg.image_size, seed=0)
    else:
        source = Path(cfg.data)
    faces = data_lib.load_faces(source, cfg.image_size)
    if faces.skipped:
        write_text_atomic(folder.path / "skipped.txt", "".join(f"{n}\t{w}\n" for n, w in faces.skipped))
        summary = data_lib.skipped_summary(faces.skipped, len(faces) + len(faces.skipped))
        say(f"warning: {summary} (list in {folder.path / 'skipped.txt'})")
    return faces


def build_model(cfg: Config, steps_per_epoch: int, strategy: tf.distribute.Strategy | None = None) -> VAE:
    """The compiled VAE, its optimizer built, inside the strategy's scope (default: the one --strategy names)."""
    keras.utils.set_random_seed(cfg.seed)
    policy = use_precision(cfg.precision)
    with (strategy or make_strategy(cfg.strategy)).scope():
        model = VAE(
            image_size=cfg.image_size,
            latent_dim=cfg.latent_dim,
            width=cfg.width,
            beta=cfg.beta,
            kl_warmup_steps=int(round(cfg.kl_warmup_epochs * steps_per_epoch)),
            free_bits=cfg.free_bits,
            seed=cfg.seed,
        )
        model.compile(
            optimizer=make_optimizer(
                cfg.learning_rate,
                total_steps=cfg.num_epochs * steps_per_epoch,
                warmup_steps=cfg.lr_warmup_steps,
                schedule=cfg.lr_schedule,
                clipnorm=cfg.clipnorm,
                loss_scaling=policy == "mixed_float16",
                loss_terms=cfg.image_size**2 * 3,
            ),
            jit_compile=resolve_jit(cfg.jit_compile),
            steps_per_execution=cfg.steps_per_execution,
        )
        model.optimizer.build(model.trainable_weights)
    return model


def save_model(model: keras.Model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def epoch_grids(model: VAE, fixed_z, fixed_val) -> dict[str, np.ndarray]:
    """The grids shown after every epoch, named after their folders: faces from fixed z, validation reconstructions."""
    grids = {"samples": make_grid(model.decoder.predict(fixed_z, verbose=0), cols=8)}
    if len(fixed_val):
        grids["reconstructions"] = pairs_grid(fixed_val, model.predict(fixed_val, verbose=0))
    return grids


def finish_reason(cfg: Config, history: list[dict], epoch: int, budget_spent: bool) -> str | None:
    if budget_spent:
        return f"time budget of {cfg.max_minutes:g} minutes spent in epoch {epoch + 1}"
    if epoch + 1 >= cfg.num_epochs:
        return f"trained {cfg.num_epochs} epochs"
    if cfg.early_stopping:
        best = int(np.argmin([r["val_loss"] for r in history]))
        if len(history) - 1 - best >= cfg.early_stopping:
            return f"early stopping: validation loss has not improved for {cfg.early_stopping} epochs"
    return None


def epoch_line(row: dict, num_epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{num_epochs}", f"loss {row['loss']:.1f}", f"recon {row['recon']:.1f}",
             f"kl {row['kl']:.1f}", f"val_loss {row['val_loss']:.1f}", f"val_psnr {row['val_psnr']:.2f} dB",
             f"active {int(row['val_active_units'])}", f"{row['images_per_second']:.0f} img/s", f"{row['seconds']:.0f}s"]
    if row.get("skipped_steps"):
        parts.append(f"skipped {int(row['skipped_steps'])} non-finite steps")
    return " | ".join(parts)
