"""Keras callbacks that act within an epoch: progress bar, step checkpoints, non-finite stop, time budget."""
from __future__ import annotations

import signal
import threading

import keras

from vae.model.optimizer import report_time_spent
from vae.progress import progress_bar


class EpochAware(keras.callbacks.Callback):
    """Knows the epoch and the step within it, also when an epoch resumes part-way: Keras counts each fit call's batches
    from 0, so `steps_done(epoch)` says how many of the epoch's steps ran before this fit call."""

    def __init__(self, steps_done):
        super().__init__()
        self.steps_done = steps_done
        self.epoch = self.first_step = self.last_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.first_step = self.last_step = self.steps_done(epoch)

    def on_train_batch_end(self, batch, logs=None):
        # `batch` counts from 0 in each fit call; with steps_per_execution it is the last step run.
        self.last_step = self.first_step + batch + 1
        self.after_step(self.last_step, logs or {})

    def after_step(self, step: int, logs: dict) -> None:
        pass


class EpochBar(EpochAware):
    """One bar per epoch with live loss, recon and KL; nothing when stdout is not a terminal."""

    def __init__(self, steps_done, steps_per_epoch: int, num_epochs: int):
        super().__init__(steps_done)
        self.steps_per_epoch, self.num_epochs = steps_per_epoch, num_epochs
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.bar = progress_bar(self.steps_per_epoch, f"epoch {epoch + 1}/{self.num_epochs}", unit="step")
        self.bar.update(self.first_step)

    def after_step(self, step, logs):
        if not self.bar.disable:
            self.bar.set_postfix({k: f"{float(logs[k]):.4g}" for k in ("loss", "recon", "kl")}, refresh=False)
            self.bar.update(step - self.bar.n)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()


class StepCheckpoint(EpochAware):
    """Calls save(epoch, step) every `every` steps counted over the whole run (0: never)."""

    def __init__(self, steps_done, every: int, steps_per_epoch: int, save):
        super().__init__(steps_done)
        self.every, self.steps_per_epoch, self.save = every, steps_per_epoch, save

    def after_step(self, step, logs):
        if not self.every or step >= self.steps_per_epoch:  # the epoch's end is checkpointed anyway
            return
        if any(int(v) for k, v in logs.items() if k.endswith("consecutive_skips")):  # never checkpoint mid-NaN
            return
        done = self.epoch * self.steps_per_epoch + step
        if done // self.every > (done - self._stride()) // self.every:
            self.save(self.epoch, step)

    def _stride(self) -> int:
        return max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)


class NonFiniteStop(EpochAware):
    """Stops training after `patience` consecutive steps skipped for a NaN or Inf loss or gradient."""

    def __init__(self, steps_done, patience: int):
        super().__init__(steps_done)
        self.patience = patience
        self.tripped_at = None  # (epoch, step) when it stopped training

    def after_step(self, step, logs):
        # Every optimizer's guard counts its own (a second network's logs "<name>_consecutive_skips").
        if max((int(v) for k, v in logs.items() if k.endswith("consecutive_skips")), default=0) >= self.patience:
            self.tripped_at = (self.epoch, step)
            self.model.stop_training = True


class StopOnSignal(EpochAware):
    """Turns SIGTERM (what docker stop, Kubernetes and Slurm send before SIGKILL) and SIGINT into a clean stop: the step in
    progress finishes, then save(epoch, step) checkpoints and training stops. A second signal interrupts at once."""

    def __init__(self, steps_done, steps_per_epoch: int, save):
        super().__init__(steps_done)
        self.steps_per_epoch, self.save = steps_per_epoch, save
        self.received = None  # the signal's name, once one came
        self.number = 0
        self.previous = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for number in (signal.SIGTERM, signal.SIGINT):
            self.previous[number] = signal.signal(number, self._handle)

    def uninstall(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def _handle(self, number, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received, self.number = signal.Signals(number).name, number
        if self.model is not None:
            self.model.stop_training = True

    def after_step(self, step, logs):
        if self.received is not None and step < self.steps_per_epoch:  # an epoch's end is checkpointed anyway
            self.model.stop_training = True
            self.save(self.epoch, step)


class TimeBudget(EpochAware):
    """Stops training after the step in progress once the run has trained `minutes` (minutes_trained(), over every
    resume); tells the learning-rate schedule how much of its cycle's time is spent, so a decay reaches 0 when the time
    is up. The cycle began at `cycle_minutes`: 0, or where a finished run was extended."""

    def __init__(self, steps_done, minutes: float, minutes_trained, cycle_minutes: float = 0.0):
        super().__init__(steps_done)
        self.minutes, self.minutes_trained, self.cycle_minutes = minutes, minutes_trained, cycle_minutes
        self.exhausted = False

    def after_step(self, step, logs):
        if not self.minutes:
            return
        trained = self.minutes_trained()
        for optimizer in self.model.optimizers():
            report_time_spent(optimizer, (trained - self.cycle_minutes) / max(self.minutes - self.cycle_minutes, 1e-9))
        if trained >= self.minutes:
            self.exhausted = True
            self.model.stop_training = True
