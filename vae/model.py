"""The VAE: encoder, sampling and decoder in one keras.Model with its own train_step and test_step."""
import keras
import tensorflow as tf
from keras import ops

from vae.decoder import build_decoder
from vae.distribute import multi_worker
from vae.encoder import build_encoder
from vae.losses import kl_per_dim, l1_per_image
from vae.optimizer import agree_on_finite
from vae.sampling import Sampling

ACTIVE_UNIT_NATS = 0.01  # a latent dimension is active when its mean KL over the data exceeds this


def to_unit_float(images):
    """uint8 images (as the data pipeline yields them, 4x smaller to move) to float32 in [0, 1]."""
    if "int" in str(images.dtype):
        return ops.cast(images, "float32") / 255.0
    return ops.cast(images, "float32")


@keras.saving.register_keras_serializable(package="vae")
class ActiveUnits(keras.metrics.Metric):
    """Number of latent dimensions whose KL, averaged over all images seen, exceeds `threshold` nats."""

    def __init__(self, latent_dim, threshold=ACTIVE_UNIT_NATS, name="active_units", **kwargs):
        super().__init__(name=name, **kwargs)
        self.latent_dim = latent_dim
        self.threshold = threshold
        self.kl_sum = self.add_variable(shape=(latent_dim,), initializer="zeros", name="kl_sum")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, kl_dims, sample_weight=None):
        self.kl_sum.assign_add(ops.sum(kl_dims, axis=0))
        self.count.assign_add(ops.cast(ops.shape(kl_dims)[0], "float32"))

    def result(self):
        mean_kl = self.kl_sum / ops.maximum(self.count, 1.0)
        return ops.sum(ops.cast(mean_kl > self.threshold, "float32"))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="vae")
class VAE(keras.Model):
    """Variational autoencoder with an L1 reconstruction term and a KL term.

    Loss reduction: for each image, the L1 error summed over all pixels and channels, plus beta times
    the KL divergence of q(z|x) from N(0, I) summed over latent dimensions; the loss is the mean of
    that over the batch (under tf.distribute: per-image sums divided by the global batch size).
    With a KL warm-up, beta rises linearly from 0 over the first `kl_warmup_steps` optimizer steps.
    With free bits, each latent dimension's batch-mean KL counts as at least `free_bits` nats.
    Logged `loss` is the objective the step optimised; `kl` is always the true KL. In test_step,
    loss = recon + beta * kl exactly (full beta, true KL): the negative ELBO when beta = 1.

    Calling the model reconstructs from the posterior mean; training samples z.
    """

    def __init__(
        self, image_size=64, latent_dim=128, width=32, beta=1.0, kl_warmup_steps=0, free_bits=0.0, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.width = width
        self.beta = beta
        self.kl_warmup_steps = kl_warmup_steps
        self.free_bits = free_bits
        self.seed = seed
        self.encoder = build_encoder(image_size, latent_dim, width)
        self.decoder = build_decoder(image_size, latent_dim, width)
        self.sampling = Sampling(seed=seed, name="sampling")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.beta_tracker = keras.metrics.Mean(name="beta")
        self.psnr_tracker = keras.metrics.Mean(name="psnr")
        self.active_units = ActiveUnits(latent_dim)
        # Encoder and decoder are functional models, built here; a built model lets load_model
        # restore the optimizer's state too.
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker, self.beta_tracker, self.psnr_tracker, self.active_units]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy Keras averages the first batch across workers, only to build what is unbuilt;
        # multi-worker collectives reject uint8 batches, and this model and its optimizer are built already.
        if self.optimizer is None or not self.optimizer.built:
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def call(self, images, training=False):
        z_mean, _ = self.encoder(to_unit_float(images), training=training)
        return self.decoder(z_mean, training=training)

    def deterministic_loss(self, images):
        """Mean over images of L1 + beta * KL, reconstructing from the posterior mean (no sampling, no metrics)."""
        images = to_unit_float(images)
        z_mean, z_log_var = self.encoder(images, training=False)
        recon = l1_per_image(images, self.decoder(z_mean, training=False))
        return ops.mean(recon + self.beta * ops.sum(kl_per_dim(z_mean, z_log_var), axis=1))

    def current_beta(self):
        """beta, scaled by the KL warm-up's progress over optimizer steps."""
        if not self.kl_warmup_steps:
            return ops.convert_to_tensor(self.beta, "float32")
        progress = ops.cast(self.optimizer.iterations + 1, "float32") / self.kl_warmup_steps
        return self.beta * ops.minimum(progress, 1.0)

    def _forward(self, images, training):
        """(z_mean, L1 of the reconstruction from a sampled z, KL per dimension)."""
        z_mean, z_log_var = self.encoder(images, training=training)
        z = self.sampling([z_mean, z_log_var])
        reconstructions = self.decoder(z, training=training)
        return z_mean, l1_per_image(images, reconstructions), kl_per_dim(z_mean, z_log_var)

    def train_step(self, data):
        images = to_unit_float(data)
        beta = self.current_beta()
        with tf.GradientTape() as tape:
            _, recon, kl_dims = self._forward(images, training=True)
            kl_term = ops.sum(ops.maximum(ops.mean(kl_dims, axis=0), self.free_bits))
            loss = ops.mean(recon) + beta * kl_term
            # Gradients are summed over replicas, so each divides by their number: sum over the global batch.
            replica_loss = loss / self.distribute_strategy.num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(replica_loss)
        grads = tape.gradient(scaled_loss, self.trainable_weights)
        grads, finite = agree_on_finite(loss, grads)
        self.optimizer.apply(grads, self.trainable_weights)

        # A skipped step must not turn the epoch's means into NaN.
        weight = ops.cast(finite, "float32") * ops.ones_like(recon)
        kl = ops.sum(kl_dims, axis=1)
        self.recon_tracker.update_state(ops.where(finite, recon, 0.0), sample_weight=weight)
        self.kl_tracker.update_state(ops.where(finite, kl, 0.0), sample_weight=weight)
        self.loss_tracker.update_state(ops.where(finite, loss, 0.0), sample_weight=ops.cast(finite, "float32"))
        self.beta_tracker.update_state(beta)
        return self._logs({
            "loss": self.loss_tracker.result(),
            "recon": self.recon_tracker.result(),
            "kl": self.kl_tracker.result(),
            "beta": self.beta_tracker.result(),
            "skipped_steps": self.optimizer.skipped_steps,
            "consecutive_skips": self.optimizer.consecutive_skips,
        })

    def test_step(self, data):
        images = to_unit_float(data)
        z_mean, recon, kl_dims = self._forward(images, training=False)
        kl = ops.sum(kl_dims, axis=1)
        self.loss_tracker.update_state(recon + self.beta * kl)
        self.recon_tracker.update_state(recon)
        self.kl_tracker.update_state(kl)
        self.active_units.update_state(kl_dims)
        # PSNR of the deterministic reconstruction (from the posterior mean), as reconstruct.py makes it.
        mse = ops.mean(ops.square(images - ops.cast(self.decoder(z_mean, training=False), "float32")), axis=(1, 2, 3))
        self.psnr_tracker.update_state(-10.0 * ops.log10(ops.maximum(mse, 1e-10)))
        trackers = [self.loss_tracker, self.recon_tracker, self.kl_tracker, self.psnr_tracker, self.active_units]
        return self._logs({m.name: m.result() for m in trackers})

    def _logs(self, logs):
        # Across workers Keras averages each logged value over axis 0, which scalars lack
        # (tensorflow/tensorflow#72388): give them a batch axis of one there.
        if multi_worker(self.distribute_strategy):
            return {k: ops.reshape(ops.cast(v, "float32"), (1,)) for k, v in logs.items()}
        return logs

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "latent_dim": self.latent_dim,
            "width": self.width,
            "beta": self.beta,
            "kl_warmup_steps": self.kl_warmup_steps,
            "free_bits": self.free_bits,
            "seed": self.seed,
        }
