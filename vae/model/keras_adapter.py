"""Where Keras offers no public API for what this package needs: every use of a private Keras name lives here, each
with why, and tests/test_keras_adapter.py fails loudly when a Keras upgrade changes one."""
import keras

# The names this module relies on, by class: the test checks they still exist before checking what they do.
PRIVATE_NAMES = {
    keras.Model: ["_maybe_symbolic_build"],
    keras.optimizers.LossScaleOptimizer: ["_stateful_handle_finite_grads", "_stateful_handle_non_finite_grads", "_variables"],
    keras.optimizers.Optimizer: ["_learning_rate"],
}


class BuiltBeforeFit:
    """A keras.Model mixin for models built (with their optimizers) before fit(): under a tf.distribute strategy Keras
    averages the first batch across workers only to build what is unbuilt, and multi-worker collectives reject the
    uint8 batches this package feeds; there is no public switch for it. An unbuilt model's `build_optimizers()` runs
    first, since Keras would build its one `optimizer` on every trainable weight, a second network's too."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.optimizer is None or not self.optimizer.built:
            if self.optimizer is not None:
                with self.distribute_strategy.scope():
                    self.build_optimizers()
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


class CountingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """LossScaleOptimizer (which skips non-finite steps correctly under every tf.distribute strategy) with hooks on the
    two branches it takes: Keras has no public callback for "this step was skipped"."""

    def on_finite_step(self):
        """Called in the finite branch, before the update."""

    def on_non_finite_step(self):
        """Called in the non-finite branch."""

    def finite_step(self, grads, trainable_variables):
        """The update of a finite step (LossScaleOptimizer's: unscale, apply, maybe grow the scale)."""
        super()._stateful_handle_finite_grads(grads, trainable_variables)

    def non_finite_step(self):
        """LossScaleOptimizer's own bookkeeping of a skipped step (halve the scale)."""
        super()._stateful_handle_non_finite_grads()

    def _stateful_handle_finite_grads(self, grads, trainable_variables):
        self.on_finite_step()
        self.finite_step(grads, trainable_variables)

    def _stateful_handle_non_finite_grads(self):
        self.on_non_finite_step()
        self.non_finite_step()

    def own_variables(self) -> list:
        """The wrapper's own variables (loss scale, its step counter, and any a subclass adds), not the inner optimizer's."""
        return list(self._variables)


def learning_rate_schedule(optimizer):
    """The LearningRateSchedule object an optimizer (or the one a LossScaleOptimizer wraps) follows: Keras keeps it only in
    a private attribute; the public `learning_rate` is its value now."""
    return getattr(optimizer, "inner_optimizer", optimizer)._learning_rate
