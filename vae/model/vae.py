"""The VAE: encoder, sampling and decoder in one keras.Model with its own train_step and test_step (with, optionally, an
adversarial patch term whose discriminator trains in the same step, and a moving average of the weights); encoding and
decoding arrays with it; loading a saved one."""
from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
from keras import ops

from vae.errors import UserError
from vae.model.archive import check_keras_archive
from vae.model.decoder import build_decoder
from vae.model.discriminator import CheckpointedSeed, DiffAugment, build_discriminator, hinge_losses
from vae.model.encoder import KERAS_BN_MOMENTUM, build_encoder
from vae.model.keras_adapter import BuiltBeforeFit
from vae.model.objective import objective, psnr, to_unit_float
from vae.model.optimizer import agree_on_finite
from vae.model.sampling import Sampling
from vae.pictures import to_uint8
from vae.progress import progress_bar

ACTIVE_UNIT_NATS = 0.01  # a latent dimension is active when its mean KL over the data exceeds this
MAX_ADAPTIVE_WEIGHT = 1e4  # VQGAN's clamp of the adversarial term's adaptive weight
ADVERSARIAL_LOGS = ("disc_loss", "disc_accuracy", "adversarial", "adaptive_weight")  # epoch means of the adversarial term


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
class PriorDraws(CheckpointedSeed, keras.layers.Layer):
    """z ~ N(0, I): one latent vector per image of the batch it is called on."""

    def __init__(self, latent_dim, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images):
        return keras.random.normal((ops.shape(images)[0], self.latent_dim), seed=self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "seed": self.seed}


@keras.saving.register_keras_serializable(package="vae")
class VAE(BuiltBeforeFit, keras.Model):
    """Variational autoencoder with an L1 reconstruction term and a KL term (vae.model.objective).

    Loss reduction: for each image, the L1 error summed over all pixels and channels (with `learn_scale`, the
    Laplace negative log-likelihood with a learned scale per channel), plus beta times the KL divergence of
    q(z|x) from N(0, I) summed over latent dimensions; the loss is the mean of that over the batch (under
    tf.distribute: per-image sums divided by the global batch size).
    With a KL warm-up, beta rises linearly from 0 over the first `kl_warmup_steps` optimizer steps.
    With free bits, each latent dimension's batch-mean KL counts as at least `free_bits` nats.
    Logged `loss` is the objective the step optimised (less an adversarial term); `kl` is always the true KL. In test_step,
    loss = recon term + beta * kl exactly (full beta, true KL): the negative ELBO when beta = 1 with a learned
    scale. `recon` is always logged as the L1 sum, comparable between the two.

    Calling the model reconstructs from the posterior mean; training samples z.

    With `frequency_weight`, the reconstruction term adds that times the focal frequency term (vae.model.objective).

    With `adversarial_weight`, a PatchGAN discriminator (vae.model.discriminator, compiled with its own `disc_optimizer`)
    learns, in the same train_step, to tell training faces from reconstructions and from decodings of z ~ N(0, I), by
    the hinge loss. After `adversarial_start_steps` optimizer steps the VAE's gradient adds the generator term
    -mean(D(fake)) times an adaptive weight set every step as in VQGAN (Esser et al. 2021): the norm of the reconstruction
    term's gradient at the decoder's last kernel over that of the generator term, clamped to [0, 1e4], times
    `adversarial_weight`. The discriminator trains from the first step. With `disc_augment`, everything it sees is
    augmented (DiffAugment). Logged: disc_loss, disc_accuracy, adversarial (the generator term), adaptive_weight (the
    weight applied, 0 before the start), and the discriminator optimizer's disc_skipped_steps, disc_consecutive_skips.
    `loss` stays the VAE's objective without the adversarial term, comparable between runs.

    With `ema_decay`, `averages` holds an exponential moving average of the encoder's and decoder's weights and BatchNorm
    statistics (and the learned scale), updated after every optimizer step that was not skipped, with the decay
    min(ema_decay, (1 + n) / (10 + n)) after n steps; `averaged_weights()` computes with them.
    """

    def __init__(
        self, image_size=64, latent_dim=128, width=32, beta=1.0, kl_warmup_steps=0, free_bits=0.0, seed=None,
        learn_scale=False, bn_momentum=KERAS_BN_MOMENTUM, frequency_weight=0.0, adversarial_weight=0.0,
        adversarial_start_steps=0, disc_augment=False, ema_decay=0.0, **kwargs
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
        self.frequency_weight = frequency_weight
        self.adversarial_weight = adversarial_weight
        self.adversarial_start_steps = adversarial_start_steps
        self.disc_augment = disc_augment
        self.ema_decay = ema_decay
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
        # The optional terms' metrics, logged under their names.
        names = (["frequency"] if frequency_weight else []) + (list(ADVERSARIAL_LOGS) if adversarial_weight else [])
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.discriminator = self.disc_optimizer = self.prior_draws = self.augment = None
        if adversarial_weight:
            self.discriminator = build_discriminator(image_size, width)
            self.prior_draws = PriorDraws(latent_dim, seed=None if seed is None else seed + 1, name="prior_draws")
            self.augment = DiffAugment(seed=None if seed is None else seed + 2, name="augment") if disc_augment else None
        # A calibrated decoder: the Laplace scale of each colour channel, learned with the weights.
        self.log_scale = self.add_weight(name="log_scale", shape=(3,), initializer=keras.initializers.Constant(math.log(0.2)),
                                         dtype="float32") if learn_scale else None
        self.averages = [self.add_weight(name=f"average_{i}", shape=w.shape, dtype="float32", trainable=False,
                                         initializer=lambda shape, dtype, w=w: ops.convert_to_tensor(w))
                         for i, w in enumerate(self.averaged_variables())] if ema_decay else []
        # Encoder and decoder are functional models, built here; a built model lets load_model
        # restore the optimizer's state too.
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker, self.beta_tracker, self.psnr_tracker, self.active_units,
                *self.term_trackers.values()]

    @property
    def vae_weights(self):
        """The trainable weights the VAE's optimizer updates: all but the discriminator's."""
        if self.discriminator is None:
            return self.trainable_weights
        theirs = {id(w) for w in self.discriminator.weights}
        return [w for w in self.trainable_weights if id(w) not in theirs]

    def averaged_variables(self):
        """What `averages` follows, in its order: the encoder's and decoder's weights and BatchNorm statistics, and the
        learned scale. BatchNorm's statistics are averaged like the weights (as timm's ModelEmaV2 does), so the averaged
        network normalises with statistics of about the same steps as its weights."""
        own = [self.log_scale] if self.learn_scale else []
        return self.encoder.weights + self.decoder.weights + own

    def compile(self, optimizer="rmsprop", disc_optimizer=None, **kwargs):
        """keras.Model.compile, and the discriminator's optimizer: each network has its own (and its own NaN guard)."""
        super().compile(optimizer=optimizer, **kwargs)
        if (disc_optimizer is None) != (self.discriminator is None):
            raise ValueError("a VAE with an adversarial term needs a disc_optimizer, and one without it takes none")
        self.disc_optimizer = disc_optimizer

    def optimizers(self) -> list:
        """Every optimizer this model trains with: the VAE's, then the discriminator's if it has one."""
        return [o for o in (self.optimizer, self.disc_optimizer) if o is not None]

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.disc_optimizer is not None:
            config["disc_optimizer"] = keras.saving.serialize_keras_object(self.disc_optimizer)
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.build_optimizers()

    def build_optimizers(self):
        """Create each optimizer's variables for the weights it updates: before loading a checkpoint into the model, so that
        the optimizers' states load too (Keras alone would build the one optimizer on every trainable weight)."""
        self.optimizer.build(self.vae_weights)
        if self.disc_optimizer is not None:
            self.disc_optimizer.build(self.discriminator.trainable_weights)

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

    def _forward(self, images, beta, free_bits, training, frequency_weight=0.0):
        """(z_mean, reconstructions, the objective's terms) with z drawn from q(z|x)."""
        z_mean, z_log_var = self.encoder(images, training=training)
        reconstructions = self.decoder(self.sampling([z_mean, z_log_var]), training=training)
        terms = objective(images, reconstructions, z_mean, z_log_var, beta, free_bits, self.log_scale, frequency_weight)
        return z_mean, reconstructions, terms

    def train_step(self, data):
        import tensorflow as tf  # training runs on TensorFlow; encoding and decoding run under any Keras backend

        images = to_unit_float(keras.utils.unpack_x_y_sample_weight(data)[0])  # fit's bare batches, train_on_batch's (x,)
        beta = self.current_beta()
        # Gradients are summed over replicas, so each loss divides by their number: sum over the global batch.
        replicas = self.distribute_strategy.num_replicas_in_sync
        with tf.GradientTape(persistent=self.discriminator is not None) as tape:
            _, reconstructions, terms = self._forward(images, beta, self.free_bits, True, self.frequency_weight)
            scaled_loss = self.optimizer.scale_loss(terms.loss / replicas)
            duel = self._duel(images, reconstructions, terms, replicas) if self.discriminator is not None else None
        if duel is None:
            grads = tape.gradient(scaled_loss, self.vae_weights)
        else:
            grads = self._adversarial_step(tape, scaled_loss, duel, replicas)
        grads, finite = agree_on_finite(terms.loss, grads)
        self.optimizer.apply(grads, self.vae_weights)
        if self.averages:
            self._update_averages(finite)

        # A skipped step must not turn the epoch's means into NaN.
        weight = ops.cast(finite, "float32") * ops.ones_like(terms.recon)
        self.recon_tracker.update_state(ops.where(finite, terms.recon, 0.0), sample_weight=weight)
        self.kl_tracker.update_state(ops.where(finite, terms.kl, 0.0), sample_weight=weight)
        self.loss_tracker.update_state(ops.where(finite, terms.loss, 0.0), sample_weight=ops.cast(finite, "float32"))
        self.beta_tracker.update_state(beta)
        logs = {
            "loss": self.loss_tracker.result(),
            "recon": self.recon_tracker.result(),
            "kl": self.kl_tracker.result(),
            "beta": self.beta_tracker.result(),
            "skipped_steps": self.optimizer.skipped_steps,
            "consecutive_skips": self.optimizer.consecutive_skips,
        }
        if terms.frequency is not None:
            self.term_trackers["frequency"].update_state(ops.where(finite, terms.frequency, 0.0), sample_weight=weight)
        if duel is not None:
            logs.update(disc_skipped_steps=self.disc_optimizer.skipped_steps,
                        disc_consecutive_skips=self.disc_optimizer.consecutive_skips)
        return self._logs({**logs, **{name: m.result() for name, m in self.term_trackers.items()}})

    def _duel(self, images, reconstructions, terms, replicas):
        """Inside the training step's tape: the discriminator's logits on the real faces, the reconstructions and as many
        prior samples; returns what _adversarial_step needs, its losses already divided and scaled for their optimizers."""
        # Prior samples decode as sampling draws them, with BatchNorm's moving statistics: they neither shift those
        # statistics nor see batch statistics that sampling never has.
        samples = self.decoder(self.prior_draws(images), training=False)
        fakes = ops.concatenate([ops.cast(reconstructions, "float32"), ops.cast(samples, "float32")])
        seen = ops.concatenate([images, fakes])
        logits = self.discriminator(seen if self.augment is None else self.augment(seen), training=True)
        batch = ops.shape(images)[0]
        disc_loss, accuracy = hinge_losses(logits[:batch], logits[batch:])
        generator = -ops.mean(ops.cast(logits[batch:], "float32"))
        return {
            "fakes": fakes, "disc_loss": disc_loss, "accuracy": accuracy, "generator": generator,
            "scaled_reconstruction": self.optimizer.scale_loss(terms.reconstruction / replicas),
            "scaled_generator": self.optimizer.scale_loss(generator / replicas),
            "scaled_disc_loss": self.disc_optimizer.scale_loss(disc_loss / replicas),
        }

    def _adversarial_step(self, tape, scaled_loss, duel, replicas):
        """The discriminator's step (skipped if non-finite), and the VAE's gradients with the generator term added at its
        adaptive weight (VQGAN's calculate_adaptive_weight)."""
        fakes = duel["fakes"]
        discriminator_weights = self.discriminator.trainable_weights
        disc_grads = tape.gradient(duel["scaled_disc_loss"], discriminator_weights)
        disc_grads, disc_finite = agree_on_finite(duel["disc_loss"], disc_grads)

        # The generator term's gradient at the decoded images, once through the discriminator: both what reaches the last
        # kernel and the VAE's whole gradient follow from it. A discriminator gone non-finite drops its term from this step;
        # the VAE still steps on its own terms.
        toward_real = tape.gradient(duel["scaled_generator"], fakes)
        usable = ops.logical_and(ops.all(ops.isfinite(toward_real)), ops.isfinite(duel["generator"]))
        toward_real = ops.where(ops.isfinite(toward_real), toward_real, 0.0)
        unit = self.optimizer.scale_loss(ops.convert_to_tensor(1.0 / replicas))  # what each loss was multiplied by
        last = self.decoder.get_layer("rgb").kernel
        recon_norm = _norm(tape.gradient(duel["scaled_reconstruction"], last)) / unit
        generator_norm = _norm(tape.gradient(fakes, last, output_gradients=toward_real)) / unit
        adaptive = ops.clip(recon_norm / (generator_norm + 1e-4), 0.0, MAX_ADAPTIVE_WEIGHT)
        usable = ops.logical_and(usable, ops.isfinite(adaptive))
        started = ops.cast(self.optimizer.iterations >= self.adversarial_start_steps, "float32")
        weight = ops.where(usable, adaptive * self.adversarial_weight * started, 0.0)
        grads = tape.gradient([scaled_loss, fakes], self.vae_weights,
                              output_gradients=[ops.ones_like(scaled_loss), weight * toward_real])

        # Applied once every gradient is taken, from the weights the forward pass used.
        self.disc_optimizer.apply(disc_grads, discriminator_weights)
        ok = ops.cast(disc_finite, "float32")
        self.term_trackers["disc_loss"].update_state(ops.where(disc_finite, duel["disc_loss"], 0.0), sample_weight=ok)
        self.term_trackers["disc_accuracy"].update_state(duel["accuracy"], sample_weight=ok)
        used = ops.cast(usable, "float32")
        self.term_trackers["adversarial"].update_state(ops.where(usable, duel["generator"], 0.0), sample_weight=used)
        self.term_trackers["adaptive_weight"].update_state(weight)
        return grads

    def _update_averages(self, finite):
        """After the optimizer's step: each average moves toward its variable, unless the step was skipped."""
        steps = ops.cast(self.optimizer.iterations, "float32")
        # As tf.train.ExponentialMovingAverage with num_updates: a shorter memory over the first steps, so the averages
        # forget the random initial weights within tens of steps rather than 1 / (1 - decay).
        decay = ops.minimum(self.ema_decay, (1.0 + steps) / (10.0 + steps))
        for average, variable in zip(self.averages, self.averaged_variables()):
            moved = decay * average + (1.0 - decay) * ops.cast(variable, "float32")
            average.assign(ops.where(finite, moved, average))

    def test_step(self, data):
        images = to_unit_float(keras.utils.unpack_x_y_sample_weight(data)[0])
        z_mean, _, terms = self._forward(images, self.beta, 0.0, training=False)
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
            "frequency_weight": self.frequency_weight,
            "adversarial_weight": self.adversarial_weight,
            "adversarial_start_steps": self.adversarial_start_steps,
            "disc_augment": self.disc_augment,
            "ema_decay": self.ema_decay,
        }


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(ops.cast(x, "float32"))))


@contextlib.contextmanager
def averaged_weights(model: VAE):
    """Within the block the model computes with its moving averages (weights and BatchNorm statistics); after it, with its
    raw weights again, bit for bit, so training continues from them. Nothing changes for a model without averages."""
    variables = model.averaged_variables() if model.averages else []
    raw = [ops.convert_to_numpy(v) for v in variables]
    for variable, average in zip(variables, model.averages):
        variable.assign(average)
    try:
        yield model
    finally:
        for variable, value in zip(variables, raw):
            variable.assign(value)


def save_averaged(model: VAE, path) -> None:
    """Write a .keras file whose weights are the model's moving averages (what readers of model_best should get); the
    optimizers' states in it are those of the raw weights. A model without averages is saved as it is."""
    with averaged_weights(model):
        model.save(path)


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
