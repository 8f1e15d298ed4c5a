"""The training run: data, model, one fit call per epoch, checkpoints, resume, and everything written after each epoch."""
from __future__ import annotations

import dataclasses
import errno
import math
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vae.config import Config
from vae.data.dataset import FaceSet, eval_batches, load_faces, train_batches
from vae.data.image_files import skipped_summary
from vae.errors import Stopped, UserError
from vae.files import atomic_path, write_text_atomic
from vae.model.optimizer import DISCRIMINATOR_BETAS, current_learning_rate, make_optimizer, start_cycle
from vae.model.vae import VAE, averaged_weights, load_vae, save_averaged
from vae.pictures import save_png
from vae.priors import DEFAULT, PriorUnavailable
from vae.run import Run, TrainState, names_checksum
from vae.training.callbacks import EpochAware, EpochBar, NonFiniteStop, StepCheckpoint, StopOnSignal, TimeBudget
from vae.training.device import barrier, describe_device, is_chief, make_strategy, prefetch_device, resolve_jit, use_precision
from vae.training.reporting import TensorBoardLog, epoch_grids, epoch_line, plot_history, say

GRID_SIZE = 64  # faces in each per-epoch sample grid
PROBE_SIZE = 32  # fixed validation faces: the reconstruction grid, and the health check before each checkpoint
BLOWUP = 10.0  # a loss this many times the untrained model's means the weights blew up, finite or not
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
PLOT_EVERY_S = 60  # the loss curve takes about half a second to draw on a small CPU: not after every short epoch


def train(cfg: Config, overwrite: bool = False, run: Run | None = None) -> Run:
    """Train (or resume) the run in cfg.out (`run`, if train.py claimed it already); return it."""
    trainer = Trainer(cfg, run)
    try:
        trainer.start(overwrite)
        return trainer.run()
    except OSError as e:
        if e.errno not in DISK_FULL or not hasattr(trainer, "state"):
            raise
        raise UserError(trainer.disk_full(e)) from e
    finally:
        trainer.close()


class Trainer:
    def __init__(self, cfg: Config, run: Run | None = None):
        self.started = time.monotonic()
        self.cfg = cfg
        self.chief_run = run or Run(cfg.out)
        self.own_run, self.scratch = self.chief_run, None  # a worker writes to a scratch run
        # The first curve comes a plotting interval after the start (or at the end): one of a single epoch shows nothing.
        self.plotted, self.plot_spaced = self.started, False
        self.seconds_by_phase, self.last_mark = {}, time.perf_counter()  # where the run's time went, printed at the end

    def mark(self, name: str) -> None:
        """Add the time since the previous mark to `name`'s total."""
        now = time.perf_counter()
        self.seconds_by_phase[name] = self.seconds_by_phase.get(name, 0.0) + now - self.last_mark
        self.last_mark = now

    def start(self, overwrite: bool) -> None:
        """Take the run folder, decode the data, build the model, and load the checkpoint to resume from, if any."""
        cfg = self.cfg
        self.strategy = make_strategy(cfg.strategy)
        if cfg.max_minutes and isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise UserError("--max_minutes cannot be used with --strategy multiworker: each worker's clock would decide alone")
        if is_chief(self.strategy):
            resumed = self.chief_run.start(cfg, overwrite)
            barrier(self.strategy)
        else:
            # Every worker runs the same steps (collectives need all of them) but writes to its own
            # scratch folder, removed at the end; it resumes from the chief's checkpoint once the
            # chief has prepared the run folder.
            barrier(self.strategy)
            resumed = self.chief_run.check(cfg, overwrite=False)
            self.scratch = Path(tempfile.mkdtemp(prefix="vae-worker-"))
            self.own_run = Run(self.scratch)
            self.own_run.start(cfg, overwrite=False)
        if resumed is not None:
            resumed = self.chief_run.resume_point(resumed, say)
            say(f"resuming from epoch {resumed.epoch + 1}, step {resumed.step}")
        say(describe_device(cfg.precision, cfg.jit_compile))
        self.mark("setup")
        self.faces = load_training_faces(cfg, self.own_run)
        self.mark("decoding")
        if resumed is not None:
            self.chief_run.check_data(resumed, self.faces.names)
        self.train_idx, self.val_idx = self.faces.split(cfg.val_split)
        self.own_run.write_split(cfg.val_split, self.faces.names, [self.faces.names[i] for i in self.val_idx])
        if len(self.train_idx) < cfg.batch_size:
            raise UserError(f"only {len(self.train_idx)} training images, fewer than --batch_size {cfg.batch_size}; "
                            "lower --batch_size")
        self.steps = len(self.train_idx) // cfg.batch_size
        say(f"{len(self.train_idx)} training and {len(self.val_idx)} validation images, {self.steps} steps per epoch")
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            say(f"{type(self.strategy).__name__}: {replicas} replicas, {cfg.batch_size // replicas} images each per step")

        self.model = build_model(cfg, self.steps, self.strategy)
        self.fixed_z = np.random.default_rng(cfg.seed).standard_normal((GRID_SIZE, cfg.latent_dim)).astype("float32")
        self.probe = self.faces.numpy(self.val_idx[:PROBE_SIZE])
        self.tensorboard = TensorBoardLog(self.own_run.logs, self.own_run.record)
        if resumed is None:
            # The untrained model is the first good state: a run that diverges at once still leaves
            # a checkpoint and a loadable model behind.
            fresh = TrainState(epoch=0, step=0, checkpoint="", history=[], best_val_loss=None,
                               untrained_probe_loss=self.probe_loss(), data_files=names_checksum(self.faces.names))
            self.state = self.own_run.save_checkpoint(self.model, fresh)
        else:
            self.state = resumed = self.load_checkpoint(resumed)
            if resumed.extends_under(cfg):
                # A warm restart: the schedule's warm-up and decay begin again from here, over the epochs (or minutes) added.
                self.state = dataclasses.replace(resumed, finished=None, complete=False, cycle_minutes=resumed.minutes,
                                                 cycle_step=int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
                say(f"extending the finished run ({resumed.finished}): the learning rate warms up and decays again "
                    f"over the rest of --num_epochs {cfg.num_epochs}" + (f" or --max_minutes {cfg.max_minutes:g}"
                                                                         if cfg.max_minutes else ""))
            for optimizer in self.model.optimizers():
                start_cycle(optimizer, self.state.cycle_step)
            if resumed.step == 0 and resumed.history:
                self.publish_epoch(resumed.history[-1], catching_up=True)
        self.state.data_files = names_checksum(self.faces.names)  # runs of earlier versions recorded none
        self.minutes_before = self.state.minutes
        self.divergence = None  # what went wrong, once training is found diverged
        self.mark("model")

    def load_checkpoint(self, state: TrainState) -> TrainState:
        """Load the checkpoint of `state` into the model; one that passes its checksum yet does not load falls back to the
        one before, as a damaged one does. Returns the state of the checkpoint loaded."""
        while True:
            try:
                self.model.load_weights(self.chief_run.folder / state.checkpoint)
                return state
            except Exception as e:  # noqa: BLE001 - intact bytes that do not fit this model: Keras raises several types
                reason = f"{Path(state.checkpoint).name} does not load into the model ({str(e).splitlines()[0][:150]})"
                older = self.chief_run.state_before(state.checkpoint)
                if older is None:
                    raise UserError(f"no checkpoint loads: {reason}; pass --overwrite to start over") from e
                say(f"warning: checkpoint {reason}; resuming from the one before it, {Path(older.checkpoint).name}")
                state = self.chief_run.resume_point(older, say)
                say(f"resuming from epoch {state.epoch + 1}, step {state.step}")

    def close(self) -> None:
        """Release the run folder (and remove a worker's scratch folder)."""
        if hasattr(self, "signals"):
            self.signals.uninstall()
        self.own_run.unlock()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def run(self) -> Run:
        cfg, state = self.cfg, self.state
        def steps_done(epoch):  # of `epoch`, before its fit call: those of an interrupted epoch, else none
            return self.state.step if epoch == self.state.epoch else 0

        self.position = EpochAware(steps_done)
        self.nonfinite = NonFiniteStop(steps_done, cfg.max_bad_steps)
        self.budget = TimeBudget(steps_done, cfg.max_minutes, self.minutes_trained, state.cycle_minutes)
        self.signals = StopOnSignal(steps_done, self.steps, self.checkpoint)
        self.signals.install()
        self.step_callbacks = [self.position, EpochBar(steps_done, self.steps, cfg.num_epochs),
                               StepCheckpoint(steps_done, cfg.save_every_steps, self.steps, self.checkpoint), self.nonfinite,
                               self.budget, self.signals]
        self.val_ds = eval_batches(self.faces, self.val_idx, cfg.batch_size)
        epoch, step = state.epoch, state.step
        if step and epoch < cfg.num_epochs:
            # The rest of an interrupted epoch on its own: Keras counts the same steps in every epoch of one fit call.
            self.fit(epoch, step, 1)
            epoch += 1
        if epoch < cfg.num_epochs and not self.state.finished:
            self.fit(epoch, 0, cfg.num_epochs - epoch)
        if self.scratch is None:
            self.complete()
            self.mark("prior fit")
        state = self.state
        where = f"models in {self.own_run.folder}" if self.scratch is None else f"the chief wrote the models to {self.cfg.out}"
        say(f"done: {state.finished}; best validation loss {state.best_val_loss:.2f}; {where}")
        say("time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds_by_phase.items()))
        return self.own_run

    def fit(self, epoch: int, first_step: int, epochs: int) -> None:
        """`epochs` epochs from `epoch` (its first `first_step` steps done) in one fit call, so one data iterator: on CPUs
        a new iterator each epoch stalled the next step for seconds. Each epoch ends in end_epoch()."""
        cfg = self.cfg
        ds = train_batches(self.faces, self.train_idx, cfg.batch_size, cfg.seed, epoch, first_step, cfg.flip,
                           device=prefetch_device(self.strategy), epochs=epochs)
        hooks = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: self.begin_epoch(e),
                                               on_epoch_end=lambda e, logs: self.end_epoch(e, logs))
        self.model.fit(ds, initial_epoch=epoch, epochs=epoch + epochs, steps_per_epoch=self.steps - first_step,
                       verbose=0, shuffle=False, callbacks=[hooks, *self.step_callbacks])

    def begin_epoch(self, epoch: int) -> None:
        self.epoch_started = time.perf_counter()
        self.mark("grids, history, plots" if self.seconds_by_phase.get("training steps") else "model")

    def end_epoch(self, epoch: int, logs: dict) -> None:
        """Validate, checkpoint and publish a finished (or stopped) epoch; stop training when the run is finished."""
        cfg, state = self.cfg, self.state
        seconds = time.perf_counter() - self.epoch_started
        self.mark("training steps")
        if self.nonfinite.tripped_at is not None:
            at_epoch, at_step = self.nonfinite.tripped_at
            self.divergence = (f"training stopped at epoch {at_epoch + 1}, step {at_step}: {cfg.max_bad_steps} consecutive "
                           "steps had a NaN or Inf loss or gradient (each was skipped)")
        if self.divergence:
            raise UserError(self.diverged())
        if self.signals.received and self.position.last_step < self.steps:  # checkpointed at that step
            raise Stopped(f"stopped by {self.signals.received} at epoch {epoch + 1}, step {self.position.last_step}; "
                          "rerun to resume", self.signals.number)
        with averaged_weights(self.model):  # validation, model_best and the grids judge the averages (--ema_decay)
            val_logs = self.model.evaluate(self.val_ds, return_dict=True, verbose=0)
        if not self.healthy(val_logs["recon"] + cfg.beta * val_logs["kl"]):
            self.divergence = f"training stopped after epoch {epoch + 1}: the validation loss is {val_logs['loss']:.4g}"
            raise UserError(self.diverged())
        row = {
            "epoch": epoch + 1,
            "steps": self.position.last_step,
            **{k: float(v) for k, v in logs.items() if not k.endswith("consecutive_skips")},
            **{f"val_{k}": float(v) for k, v in val_logs.items()},
            "learning_rate": current_learning_rate(self.model.optimizer),
            "seconds": round(seconds, 2),
            "images_per_second": round((self.position.last_step - state.step) * cfg.batch_size / seconds, 1),
        }
        state.end_epoch(row)
        state.finished = state.finish_reason(cfg, self.budget.exhausted)
        state.minutes = self.minutes_trained()
        self.mark("validation")
        self.state = state = self.own_run.save_checkpoint(self.model, state)
        self.mark("checkpoints")
        self.publish_epoch(row)
        self.mark("grids, history, plots")
        say(epoch_line(row, cfg.num_epochs))
        if state.finished:
            self.model.stop_training = True
        elif self.signals.received:
            raise Stopped(f"stopped by {self.signals.received} after epoch {epoch + 1}; rerun to resume", self.signals.number)

    def publish_epoch(self, row: dict, catching_up: bool = False) -> None:
        """What a finished epoch leaves beside its checkpoint: model_last and (if best) model_best, the grids, TensorBoard,
        history and loss curve. Idempotent, so a resumed run redoes what a kill cut short."""
        state, out = self.state, self.own_run
        checkpoint = out.folder / state.checkpoint
        if checkpoint.suffix == ".keras":  # an earlier version's .weights.h5 checkpoint came with its models written
            best = row["val_loss"] == state.best_val_loss
            if self.model.averages:  # the checkpoint holds the raw weights; readers get the averages
                out.record(out.last_model, out.best_model)
                with atomic_path(out.last_model) as tmp:
                    save_averaged(self.model, tmp)
                if best:
                    out.link_model(out.last_model, out.best_model)
            else:
                out.link_model(checkpoint, out.last_model)
                if best:
                    out.link_model(checkpoint, out.best_model)
        names = [f"{folder}/epoch_{row['epoch']:03d}.png" for folder in ("samples", "reconstructions")]
        if not catching_up or not all((out.folder / n).exists() for n in names[: 1 + bool(len(self.probe))]):
            with averaged_weights(self.model):
                grids = epoch_grids(self.model, self.fixed_z, self.probe)
            for name, grid in grids.items():
                out.record(out.folder / name / f"epoch_{row['epoch']:03d}.png")
                save_png(grid, out.folder / name / f"epoch_{row['epoch']:03d}.png", min_side=256)
            self.tensorboard.epoch(row, grids)
        out.write_history(state.history)
        if catching_up or state.finished or time.monotonic() - self.plotted >= PLOT_EVERY_S:
            out.record(out.loss_curve)
            plot_history(state.history, out.loss_curve)
            self.plotted = time.monotonic()
        elif not self.plot_spaced:
            say(f"note: epochs are short, so loss_curve.png is redrawn at most every {PLOT_EVERY_S} s and at the end "
                "(history.csv and TensorBoard get every epoch)")
            self.plot_spaced = True

    def complete(self) -> None:
        """What finishes a run after its last epoch: the prior sample.py uses by default, fitted for model_best while the
        training faces are decoded and tied to its bytes; then the state says the run is complete."""
        run, best = self.chief_run, self.chief_run.best_model
        if run.saved_prior(DEFAULT, best) is None:
            say(f"fitting the {DEFAULT.name} prior of sample.py on the {len(self.train_idx)} training images")
            # Readers load the model in float32 whatever precision it trained in: fit the latents they will see.
            keras.config.set_dtype_policy("float32")
            try:
                run.save_prior(DEFAULT.fit(load_vae(best), self.faces, self.train_idx, progress=False), best)
            except PriorUnavailable as e:
                say(f"note: {e}; sample.py will draw from N(0, I)")
        self.state.complete = True
        run.save_state(self.state)

    def minutes_trained(self) -> float:
        """Wall-clock minutes of train.py on this run: those of earlier processes, and this one's so far."""
        return self.minutes_before + (time.monotonic() - self.started) / 60.0

    def probe_loss(self) -> float:
        """Loss of the fixed validation faces through the posterior means: cheap, deterministic, no metric side effects."""
        return float(keras.ops.convert_to_numpy(self.model.deterministic_loss(self.probe)))

    def healthy(self, loss: float) -> bool:
        return math.isfinite(loss) and loss < BLOWUP * self.state.untrained_probe_loss

    def checkpoint(self, epoch: int, step: int) -> None:
        """A mid-epoch checkpoint, only of weights that pass the health check; otherwise stop as diverged."""
        loss = self.probe_loss()
        if not self.healthy(loss):
            self.divergence = (f"training stopped at epoch {epoch + 1}, step {step}: "
                           f"the loss of {len(self.probe)} validation faces is {loss:.4g}")
            self.model.stop_training = True
            return
        self.own_run.save_checkpoint(self.model, dataclasses.replace(self.state.at(epoch, step), minutes=self.minutes_trained()))

    def disk_full(self, error: OSError) -> str:
        """The message for a write that found the disk full: the path, and the checkpoint a rerun resumes from."""
        saved = self.own_run.read_state()
        return (f"{error.strerror.lower()} writing {error.filename}; the last checkpoint ({saved.checkpoint}: epoch "
                f"{saved.epoch + 1}, step {saved.step}) is intact: free space and rerun to resume from it")

    def diverged(self) -> str:
        """The message for a run that blew up; the last checkpoint (healthy by construction) stays as it is."""
        saved = self.own_run.read_state()
        lr = self.cfg.learning_rate
        if not self.own_run.last_model.exists():
            self.own_run.link_model(self.own_run.folder / saved.checkpoint, self.own_run.last_model)
        return (
            f"{self.divergence}; the learning rate {lr:g} is likely too high. The last good checkpoint "
            f"({saved.checkpoint}: epoch {saved.epoch + 1}, step {saved.step}) is intact and "
            f"{self.own_run.last_model} loads: rerun with --learning_rate {1e-3 if lr > 1e-3 else lr / 10:g} to resume from it"
        )


def load_training_faces(cfg: Config, out: Run) -> FaceSet:
    """Decode the training folder (or the synthetic faces) and report skipped files in one line."""
    if cfg.data is None:
        from vae.data.synthetic import SYNTHETIC_DIR, materialize

        source = materialize(SYNTHETIC_DIR, cfg.synthetic_num, cfg.image_size, seed=0)
    else:
        source = Path(cfg.data)
    faces = load_faces(source, cfg.image_size, exclude=[out.folder])  # an --out inside --data holds outputs, not faces
    if faces.skipped:
        out.record(out.skipped_file)
        write_text_atomic(out.skipped_file, "".join(f"{n}\t{w}\n" for n, w in faces.skipped))
        summary = skipped_summary(faces.skipped, len(faces) + len(faces.skipped))
        say(f"warning: {summary} (list in {out.skipped_file})")
    return faces


def build_model(cfg: Config, steps_per_epoch: int, strategy: tf.distribute.Strategy | None = None) -> VAE:
    """The compiled VAE, its optimizers built, inside the strategy's scope (default: the one --strategy names)."""

    keras.utils.set_random_seed(cfg.seed)
    policy = use_precision(cfg.precision)
    with (strategy or make_strategy(cfg.strategy)).scope():
        model = VAE(
            image_size=cfg.image_size,
            latent_dim=cfg.latent_dim,
            width=cfg.width,
            beta=cfg.beta,
            learn_scale=cfg.learn_scale,
            bn_momentum=cfg.bn_momentum,
            kl_warmup_steps=int(round(cfg.kl_warmup_epochs * steps_per_epoch)),
            free_bits=cfg.free_bits,
            seed=cfg.seed,
            frequency_weight=cfg.frequency_weight,
            adversarial_weight=cfg.adversarial_weight,
            adversarial_start_steps=int(round(cfg.adversarial_start_epochs * steps_per_epoch)),
            disc_augment=cfg.disc_augment,
            ema_decay=cfg.ema_decay,
        )
        schedule = dict(total_steps=cfg.num_epochs * steps_per_epoch, warmup_steps=cfg.lr_warmup_steps,
                        schedule=cfg.lr_schedule, clipnorm=cfg.clipnorm, loss_scaling=policy == "mixed_float16")
        disc_optimizer = make_optimizer(cfg.disc_learning_rate or cfg.learning_rate, **schedule,
                                        betas=DISCRIMINATOR_BETAS) if cfg.adversarial_weight else None
        model.compile(
            optimizer=make_optimizer(cfg.learning_rate, **schedule, loss_terms=cfg.image_size**2 * 3,
                                     weight_decay=cfg.weight_decay),
            disc_optimizer=disc_optimizer,
            jit_compile=resolve_jit(cfg.jit_compile),
            steps_per_execution=cfg.steps_per_execution,
        )
        model.build_optimizers()
    return model
