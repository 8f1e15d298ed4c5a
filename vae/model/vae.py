"""The VAE: encoder, sampling and decoder in one keras.Model with its own train_step and test_step; encoding and
decoding arrays with it; loading a saved one."""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from vae.errors import UserError
from vae.model.archive import check_keras_archive
from vae.model.decoder import build_decoder
from vae.model.encoder import KERAS_BN_MOMENTUM, build_encoder
from vae.model.keras_adapter import BuiltBeforeFit
from vae.model.objective import objective, psnr, to_unit_float
from vae.model.optimizer import agree_on_finite
from vae.model.sampling import Sampling
from vae.pictures import to_uint8
from vae.progress import progress_bar

ACTIVE_UNIT_NATS = 0.01  # a latent dimension is active when its mean KL over the data exceeds this


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
class VAE(BuiltBeforeFit, keras.Model):
    """Variational autoencoder with an L1 reconstruction term and a KL term (vae.model.objective).

    Loss reduction: for each image, the L1 error summed over all pixels and channels (with `learn_scale`, the
    Laplace negative log-likelihood with a learned scale per channel), plus beta times the KL divergence of
    q(z|x) from N(0, I) summed over latent dimensions; the loss is the mean of that over the batch (under
    tf.distribute: per-image sums divided by the global batch size).
    With a KL warm-up, beta rises linearly from 0 over the first `kl_warmup_steps` optimizer steps.
    With free bits, each latent dimension's batch-mean KL counts as at least `free_bits` nats.
    Logged `loss` is the objective the step optimised; `kl` is always the true KL. In test_step,
    loss = recon term + beta * kl exactly (full beta, true KL): the negative ELBO when beta = 1 with a learned
    scale. `recon` is always logged as the L1 sum, comparable between the two.

    Calling the model reconstructs from the posterior mean; training samples z.
    """

    def __init__(
        self, image_size=64, latent_dim=128, width=32, beta=1.0, kl_warmup_steps=0, free_bits=0.0, seed=None,
        learn_scale=False, bn_momentum=KERAS_BN_MOMENTUM, **kwargs
    ):
        super().__init__(**kwargs)
        self.learn_scale = learn_scale
        self.bn_momentum = bn_momentum
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.width = width
        self.beta = beta
        self.kl_warmup_steps = kl_warmup_steps
        self.free_bits = free_bits
        self.seed = seed
        self.encoder = build_encoder(image_size, latent_dim, width, bn_momentum)
        self.decoder = build_decoder(image_size, latent_dim, width, bn_momentum)
        self.sampling = Sampling(seed=seed, name="sampling")
        self.inference = TracedNetworks(self.encoder, self.decoder)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.beta_tracker = keras.metrics.Mean(name="beta")
        self.psnr_tracker = keras.metrics.Mean(name="psnr")
        self.active_units = ActiveUnits(latent_dim)
        # A calibrated decoder: the Laplace scale of each colour channel, learned with the weights.
        self.log_scale = self.add_weight(name="log_scale", shape=(3,), initializer=keras.initializers.Constant(math.log(0.2)),
                                         dtype="float32") if learn_scale else None
        # Encoder and decoder are functional models, built here; a built model lets load_model
        # restore the optimizer's state too.
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker, self.beta_tracker, self.psnr_tracker, self.active_units]

    def call(self, images, training=False):
        z_mean, _ = self.encoder(to_unit_float(images), training=training)
        return self.decoder(z_mean, training=training)

    def deterministic_loss(self, images):
        """L1 + beta * KL reconstructing from the posterior mean: no sampling, no metrics. The L1 form even with a
        learned scale: always positive, so its ratio to the untrained model's value tells a blow-up."""
        images = to_unit_float(images)
        z_mean, z_log_var = self.encoder(images, training=False)
        return objective(images, self.decoder(z_mean, training=False), z_mean, z_log_var, self.beta).loss

    def current_beta(self):
        """beta, scaled by the KL warm-up's progress over optimizer steps."""
        if not self.kl_warmup_steps:
            return ops.convert_to_tensor(self.beta, "float32")
        progress = ops.cast(self.optimizer.iterations + 1, "float32") / self.kl_warmup_steps
        return self.beta * ops.minimum(progress, 1.0)

    def _forward(self, images, beta, free_bits, training):
        """(z_mean, the objective's terms) with z drawn from q(z|x)."""
        z_mean, z_log_var = self.encoder(images, training=training)
        reconstructions = self.decoder(self.sampling([z_mean, z_log_var]), training=training)
        return z_mean, objective(images, reconstructions, z_mean, z_log_var, beta, free_bits, self.log_scale)

    def train_step(self, data):
        import tensorflow as tf  # training runs on TensorFlow; encoding and decoding run under any Keras backend

        images = to_unit_float(data)
        beta = self.current_beta()
        with tf.GradientTape() as tape:
            _, terms = self._forward(images, beta, self.free_bits, training=True)
            # Gradients are summed over replicas, so each divides by their number: sum over the global batch.
            replica_loss = terms.loss / self.distribute_strategy.num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(replica_loss)
        grads = tape.gradient(scaled_loss, self.trainable_weights)
        grads, finite = agree_on_finite(terms.loss, grads)
        self.optimizer.apply(grads, self.trainable_weights)

        # A skipped step must not turn the epoch's means into NaN.
        weight = ops.cast(finite, "float32") * ops.ones_like(terms.recon)
        self.recon_tracker.update_state(ops.where(finite, terms.recon, 0.0), sample_weight=weight)
        self.kl_tracker.update_state(ops.where(finite, terms.kl, 0.0), sample_weight=weight)
        self.loss_tracker.update_state(ops.where(finite, terms.loss, 0.0), sample_weight=ops.cast(finite, "float32"))
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
        z_mean, terms = self._forward(images, self.beta, 0.0, training=False)
        batch = ops.cast(ops.shape(images)[0], "float32")
        self.loss_tracker.update_state(terms.loss, sample_weight=batch)
        self.recon_tracker.update_state(terms.recon)
        self.kl_tracker.update_state(terms.kl)
        self.active_units.update_state(terms.kl_dims)
        # PSNR of the deterministic reconstruction (from the posterior mean), as reconstruct.py makes it.
        self.psnr_tracker.update_state(psnr(images, self.decoder(z_mean, training=False)))
        trackers = [self.loss_tracker, self.recon_tracker, self.kl_tracker, self.psnr_tracker, self.active_units]
        return self._logs({m.name: m.result() for m in trackers})

    def _logs(self, logs):
        # Across workers Keras averages each logged value over axis 0, which scalars lack
        # (tensorflow/tensorflow#72388): give them a batch axis of one there.
        if spans_workers(self.distribute_strategy):
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
            "learn_scale": self.learn_scale,
            "bn_momentum": self.bn_momentum,
        }


def spans_workers(strategy) -> bool:
    """Whether a tf.distribute strategy spans several worker processes."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, [])) for job in ("chief", "worker")) > 1


def load_vae(path):
    """A VAE saved by this package, or UserError in one line for anything else (corrupt, foreign, not a model)."""
    check_keras_archive(path)  # before Keras inflates anything
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - corrupt zip, wrong content, foreign model: all the same to the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load --model {path}: not a model saved by this package ({reason[:200]})") from e
    if not isinstance(model, VAE):
        raise UserError(f"--model {path} holds a {type(model).__name__}, not a VAE trained by this package")
    return model


class TracedNetworks:
    """The encoder and decoder in inference mode as functions traced once (on TensorFlow): keras' predict() spends 30-50 ms
    setting up every call, which a live page or a loop over batches would pay again and again."""

    def __init__(self, encoder, decoder):
        self.encoder, self.decoder = _traced(encoder), _traced(decoder)


def _traced(network):
    call = lambda x: network(x, training=False)  # noqa: E731
    if keras.backend.backend() != "tensorflow":
        return call
    import tensorflow as tf

    return tf.function(call, input_signature=[tf.TensorSpec([None, *network.input.shape[1:]], tf.float32)])


def encode(model: VAE, images, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of uint8 images (n, size, size, 3)."""
    parts = [model.inference.encoder(np.asarray(images[i : i + batch_size], np.float32) / 255.0)
             for i in range(0, max(len(images), 1), batch_size)]
    return tuple(np.concatenate([np.asarray(p[k]) for p in parts]) for k in (0, 1))


def decode(model: VAE, z, batch_size: int = 256, as_uint8: bool = True) -> np.ndarray:
    """Faces for latent vectors (n, size, size, 3): uint8, or (as_uint8=False) the decoder's floats on [0, 1]."""
    z = np.asarray(z, np.float32)
    batches = (np.asarray(model.inference.decoder(z[i : i + batch_size])) for i in range(0, max(len(z), 1), batch_size))
    return np.concatenate([to_uint8(b) if as_uint8 else b.astype(np.float32) for b in batches])


def encode_faces(model: VAE, faces, indices=None, batch_size: int = 256, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """encode() over a FaceSet (or its `indices`), in batches so a large folder never sits in memory as floats."""
    indices = np.arange(len(faces)) if indices is None else np.asarray(indices)
    means, log_vars = [], []
    with progress_bar(len(indices), "encoding", progress) as bar:
        for start in range(0, len(indices), batch_size):
            mean, log_var = encode(model, faces.numpy(indices[start : start + batch_size]), batch_size)
            means.append(mean)
            log_vars.append(log_var)
            bar.update(len(mean))
    return np.concatenate(means), np.concatenate(log_vars)
