"""The training run: data, model, one fit call per epoch, and everything written after each."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from vae import data as data_lib
from vae.callbacks import EpochBar, NonFiniteStop, StepCheckpoint, TimeBudget
from vae.config import Config
from vae.distribute import make_strategy
from vae.errors import UserError
from vae.files import atomic_path, write_text_atomic
from vae.images import make_grid, pairs_grid, save_png
from vae.model import VAE
from vae.optimizer import current_learning_rate, make_optimizer
from vae.run_folder import RunFolder

SYNTHETIC_DIR = Path(__file__).resolve().parent.parent / "data" / "synthetic"
GRID_SIZE = 64  # faces in each per-epoch sample grid
RECON_SIZE = 32  # validation faces in each per-epoch reconstruction grid


def say(text: str) -> None:
    print(text, flush=True)


def train(cfg: Config, overwrite: bool = False) -> RunFolder:
    """Train (or resume) the run in cfg.out; return its folder."""
    started = time.monotonic()
    run = RunFolder(cfg.out)
    state = run.start(cfg, overwrite)
    if state is not None:
        say(f"resuming from epoch {state['epoch'] + 1}, step {state['step']}")
    faces = load_training_faces(cfg, run)
    train_idx, val_idx = faces.split(cfg.val_split)
    write_text_atomic(run.split, json.dumps({"val_split": cfg.val_split, "validation": [faces.names[i] for i in val_idx]}, indent=0))
    if len(train_idx) < cfg.batch_size:
        raise UserError(f"only {len(train_idx)} training images, fewer than --batch_size {cfg.batch_size}; lower --batch_size")
    steps = len(train_idx) // cfg.batch_size
    say(f"{len(train_idx)} training and {len(val_idx)} validation images, {steps} steps per epoch")

    model = build_model(cfg, steps)
    if state is not None and state.get("checkpoint"):
        model.load_weights(run.path / state["checkpoint"])
    state = state or {"epoch": 0, "step": 0, "history": [], "best_val_loss": None}

    fixed_z = np.random.default_rng(cfg.seed).standard_normal((GRID_SIZE, cfg.latent_dim)).astype("float32")
    fixed_val = faces.numpy(val_idx[:RECON_SIZE])
    val_ds = data_lib.eval_batches(faces, val_idx, cfg.batch_size)

    def checkpoint(epoch, step):
        run.save_checkpoint(model, {**state, "epoch": epoch, "step": step})

    bar = EpochBar(steps, cfg.num_epochs)
    nonfinite = NonFiniteStop(cfg.max_bad_steps)
    budget = TimeBudget(cfg.max_minutes, started)
    callbacks = [bar, StepCheckpoint(cfg.save_every_steps, steps, checkpoint), nonfinite, budget]

    for epoch in range(state["epoch"], cfg.num_epochs):
        first_step = state["step"]
        for cb in callbacks:
            cb.start_epoch(epoch, first_step)
        t0 = time.perf_counter()
        ds = data_lib.train_batches(faces, train_idx, cfg.batch_size, cfg.seed, epoch, first_step, cfg.flip)
        fit = model.fit(ds, initial_epoch=epoch, epochs=epoch + 1, verbose=0, callbacks=callbacks, shuffle=False)
        seconds = time.perf_counter() - t0
        if nonfinite.tripped_at is not None:
            raise UserError(diverged_message(cfg, run, model, state, nonfinite.tripped_at))

        done = bar.last_step
        train_logs = {k: v[-1] for k, v in fit.history.items() if k != "consecutive_skips"}
        val_logs = model.evaluate(val_ds, return_dict=True, verbose=0)
        row = {
            "epoch": epoch + 1,
            "steps": done,
            **{k: float(v) for k, v in train_logs.items()},
            **{f"val_{k}": float(v) for k, v in val_logs.items()},
            "learning_rate": current_learning_rate(model.optimizer),
            "seconds": round(seconds, 2),
            "images_per_second": round((done - first_step) * cfg.batch_size / seconds, 1),
        }
        state["history"].append(row)
        write_epoch_outputs(run, model, state["history"], fixed_z, fixed_val)
        if state["best_val_loss"] is None or row["val_loss"] < state["best_val_loss"]:
            state["best_val_loss"] = row["val_loss"]
            save_model(model, run.best_model)
        save_model(model, run.last_model)

        finished = finish_reason(cfg, state["history"], epoch, budget.spent)
        state.update(epoch=epoch + 1, step=0, finished=finished)
        run.save_checkpoint(model, state)
        say(epoch_line(row, cfg.num_epochs))
        if finished:
            break
    say(f"done: {state['finished']}; best validation loss {state['best_val_loss']:.2f}; models in {run.path}")
    return run


def load_training_faces(cfg: Config, run: RunFolder) -> data_lib.FaceSet:
    """Decode the training folder (or the synthetic faces) and report skipped files in one line."""
    if cfg.data is None:
        from vae.synthetic import materialize

        folder = materialize(SYNTHETIC_DIR, cfg.synthetic_num, cfg.image_size, seed=0)
    else:
        folder = Path(cfg.data)
    faces = data_lib.load_faces(folder, cfg.image_size)
    if faces.skipped:
        shown = ", ".join(f"{name} ({why})" for name, why in faces.skipped[:5])
        more = f" and {len(faces.skipped) - 5} more" if len(faces.skipped) > 5 else ""
        write_text_atomic(run.path / "skipped.txt", "".join(f"{n}\t{w}\n" for n, w in faces.skipped))
        say(f"warning: skipped {len(faces.skipped)} of {len(faces) + len(faces.skipped)} image files: {shown}{more} "
            f"(list in {run.path / 'skipped.txt'})")
    return faces


def build_model(cfg: Config, steps_per_epoch: int) -> VAE:
    """The compiled VAE, its optimizer built, inside the chosen strategy's scope."""
    keras.utils.set_random_seed(cfg.seed)
    with make_strategy(cfg.strategy).scope():
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
            )
        )
        model.optimizer.build(model.trainable_weights)
    return model


def save_model(model: keras.Model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def write_epoch_outputs(run: RunFolder, model: VAE, history: list[dict], fixed_z, fixed_val) -> None:
    """The per-epoch sample grid, reconstruction grid and history."""
    run.write_history(history)
    epoch = history[-1]["epoch"]
    samples = model.decoder.predict(fixed_z, verbose=0)
    save_png(make_grid(samples, cols=8), run.samples / f"epoch_{epoch:03d}.png", min_side=256)
    if len(fixed_val):
        recon = model.predict(fixed_val, verbose=0)
        save_png(pairs_grid(fixed_val, recon), run.reconstructions / f"epoch_{epoch:03d}.png", min_side=256)


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


def diverged_message(cfg: Config, run: RunFolder, model: VAE, state: dict, where: tuple[int, int]) -> str:
    """Explain a stop for non-finite steps; leave a loadable model behind without touching any checkpoint."""
    epoch, step = where
    lower = 1e-3 if cfg.learning_rate > 1e-3 else cfg.learning_rate / 10
    cause = (
        f"training stopped at epoch {epoch + 1}, step {step}: {cfg.max_bad_steps} consecutive steps had a NaN or Inf "
        f"loss or gradient (each was skipped); the learning rate {cfg.learning_rate:g} is likely too high"
    )
    saved = run.read_state()
    if saved and saved.get("checkpoint"):
        return (
            f"{cause}. The last good checkpoint ({saved['checkpoint']}, epoch {saved['epoch'] + 1}, step {saved['step']}) "
            f"is intact: rerun with --learning_rate {lower:g} to resume from it"
        )
    # Skipped steps never changed the weights, so they are the last finite ones.
    if not run.last_model.exists():
        save_model(model, run.last_model)
    return (
        f"{cause}. No checkpoint was written before it; {run.last_model} holds the last finite weights. "
        f"Start over with --learning_rate {lower:g} --overwrite"
    )


def epoch_line(row: dict, num_epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{num_epochs}", f"loss {row['loss']:.1f}", f"recon {row['recon']:.1f}",
             f"kl {row['kl']:.1f}", f"val_loss {row['val_loss']:.1f}", f"val_psnr {row.get('val_psnr', math.nan):.2f} dB",
             f"active {int(row['val_active_units'])}", f"{row['images_per_second']:.0f} img/s", f"{row['seconds']:.0f}s"]
    if row.get("skipped_steps"):
        parts.append(f"skipped {int(row['skipped_steps'])} non-finite steps")
    return " | ".join(parts)
