"""Adam with a learning-rate schedule, wrapped so that steps with non-finite gradients are skipped and counted."""
import math

import keras
from keras import ops

from vae.model.keras_adapter import CountingLossScaleOptimizer, learning_rate_schedule

DISCRIMINATOR_BETAS = (0.5, 0.9)  # VQGAN's Adam: a short memory of the gradients, for a target that moves every step
# Weight decay shrinks kernels only: a bias, BatchNorm's scale and shift and a learned Laplace scale set levels, which
# decay would bias, not capacity (AdamW's usual exclusions).
NOT_DECAYED = ["bias", "gamma", "beta", "log_scale"]


@keras.saving.register_keras_serializable(package="vae")
class SkipNonFinite(CountingLossScaleOptimizer):
    """Skips any step whose gradients hold a NaN or Inf, and counts skipped and consecutive skipped steps.

    Built on LossScaleOptimizer, which already skips such steps correctly under every tf.distribute
    strategy. The loss is scaled only when `loss_scaling` is on (float16); otherwise the scale stays 1.
    One per network: a model with several optimizers has a guard on each.
    """

    def __init__(self, inner_optimizer, loss_scaling=False, **kwargs):
        kwargs.setdefault("initial_scale", 2.0**15 if loss_scaling else 1.0)
        super().__init__(inner_optimizer, **kwargs)
        self.loss_scaling = loss_scaling

    def build(self, var_list):
        super().build(var_list)
        counter = dict(shape=(), dtype="int", initializer="zeros", aggregation="only_first_replica")
        self.skipped_steps = self.add_variable(name="skipped_steps", **counter)
        self.consecutive_skips = self.add_variable(name="consecutive_skips", **counter)

    def on_finite_step(self):
        self.consecutive_skips.assign(0)

    def on_non_finite_step(self):
        self.skipped_steps.assign_add(1)
        self.consecutive_skips.assign_add(1)

    def finite_step(self, grads, trainable_variables):
        if self.loss_scaling:
            super().finite_step(grads, trainable_variables)
        else:
            self.inner_optimizer.apply(grads, trainable_variables=trainable_variables)

    def non_finite_step(self):
        if self.loss_scaling:
            super().non_finite_step()

    def save_own_variables(self, store):
        # Only the wrapper's own counters: the inner optimizer's moments are saved under it already, and saving
        # them here too (as LossScaleOptimizer does) made every checkpoint 1.7 times larger.
        for i, variable in enumerate(self.own_variables()):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        if len(store.keys()) == len(self.variables):  # a file of an earlier version, with both copies
            super().load_own_variables(store)
            return
        for i, variable in enumerate(self.own_variables()):
            variable.assign(store[str(i)])

    def get_config(self):
        return {**super().get_config(), "loss_scaling": self.loss_scaling}


@keras.saving.register_keras_serializable(package="vae")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then constant, or a cosine or linear decay that reaches 0
    when training ends: after `total_steps`, or when the time budget is spent, whichever comes first.

    `time_spent` is the fraction of the time budget used so far, set by the trainer after each step (0 without one).
    `cycle_start` is the step at which warm-up and decay begin: 0, or where the trainer extended a finished run (a warm
    restart, as in SGDR: Loshchilov & Hutter 2017).
    """

    def __init__(self, peak, warmup_steps, total_steps, decay="constant"):
        self.peak, self.warmup_steps, self.total_steps, self.decay = peak, warmup_steps, total_steps, decay
        self.time_spent = keras.Variable(0.0, trainable=False, dtype="float32", name="time_spent")
        self.cycle_start = keras.Variable(0.0, trainable=False, dtype="float32", name="cycle_start")

    def __call__(self, step):
        step = ops.cast(step, "float32") - ops.convert_to_tensor(self.cycle_start)
        length = ops.maximum(self.total_steps - ops.convert_to_tensor(self.cycle_start) - self.warmup_steps, 1.0)
        warm = ops.minimum(1.0, (step + 1.0) / self.warmup_steps) if self.warmup_steps else 1.0
        steps_spent = ops.clip((step - self.warmup_steps) / length, 0.0, 1.0)
        spent = ops.maximum(steps_spent, ops.minimum(ops.convert_to_tensor(self.time_spent), 1.0))
        decay = {"constant": 1.0, "cosine": 0.5 * (1.0 + ops.cos(math.pi * spent)), "linear": 1.0 - spent}[self.decay]
        return self.peak * warm * decay

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "decay": self.decay}


def make_optimizer(learning_rate, total_steps, warmup_steps, schedule="constant", clipnorm=0.0, loss_scaling=False,
                   loss_terms=1, betas=(0.9, 0.999), weight_decay=0.0):
    """Adam on a WarmupDecay schedule (constant, cosine or linear after the warm-up), skipping non-finite steps.

    `loss_terms`: how many per-pixel terms the loss sums; float16 loss scaling starts that much lower
    than the usual 2**15, which assumes a mean, so its first steps do not all overflow.
    `betas`: Adam's two decay rates; the discriminator's are VQGAN's (0.5, 0.9).
    `weight_decay`: decoupled (AdamW): each step multiplies every kernel by 1 - weight_decay * learning rate.
    """
    rate = WarmupDecay(learning_rate, min(warmup_steps, max(total_steps - 1, 0)), total_steps, schedule)
    adam = keras.optimizers.Adam(rate, beta_1=betas[0], beta_2=betas[1], global_clipnorm=clipnorm or None,
                                 weight_decay=weight_decay or None)
    if weight_decay:
        adam.exclude_from_weight_decay(var_names=NOT_DECAYED)
    if not loss_scaling:
        return SkipNonFinite(adam)
    return SkipNonFinite(adam, loss_scaling=True, initial_scale=2.0 ** max(0, 15 - math.ceil(math.log2(loss_terms))))


def report_time_spent(optimizer, fraction: float) -> None:
    """Tell the optimizer's schedule what fraction of the time budget is spent, if it decays by time (WarmupDecay)."""
    schedule = learning_rate_schedule(optimizer)
    if hasattr(schedule, "time_spent"):
        schedule.time_spent.assign(min(fraction, 1.0))


def start_cycle(optimizer, step: int) -> None:
    """Begin the schedule's warm-up and decay at `step` (a WarmupDecay's; 0 is where every run begins)."""
    schedule = learning_rate_schedule(optimizer)
    if hasattr(schedule, "cycle_start"):
        schedule.cycle_start.assign(float(step))


def current_learning_rate(optimizer) -> float:
    """The rate the next step uses (the schedule's value now)."""
    return float(ops.convert_to_numpy(optimizer.learning_rate))


def agree_on_finite(loss, grads):
    """Make the step's gradients non-finite on every replica when any replica's loss or gradients are.

    SkipNonFinite decides from the first replica's gradients; poisoning one tensor everywhere makes
    all replicas (and all workers) take the same branch, so no collective is left waiting.
    Returns (grads, finite).
    """
    import tensorflow as tf

    local_ok = ops.all(ops.stack([ops.all(ops.isfinite(loss))] + [ops.all(ops.isfinite(g)) for g in grads]))
    bad = tf.distribute.get_replica_context().all_reduce("SUM", 1.0 - ops.cast(local_ok, "float32"))
    finite = ops.equal(bad, 0.0)
    poison = ops.where(finite, 0.0, float("nan"))
    return [grads[0] + ops.cast(poison, grads[0].dtype)] + list(grads[1:]), finite
