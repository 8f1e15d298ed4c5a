"""The adversarial patch term's networks: a PatchGAN discriminator with spectrally normalised convolutions, its hinge
loss, and the differentiable augmentation (DiffAugment) of what it sees."""
import keras
from keras import layers, ops

PATCH_HALVINGS = 3  # strided convolutions: a logit every 8 pixels, each on a patch of 38 x 38


class CheckpointedSeed:
    """A layer mixin: the state of `self.seed_generator` goes into checkpoints beside the layer's variables, so a resumed run
    draws the noise it would have drawn (Keras saves a layer's variables, not its seed generators')."""

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["seed_state"] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        self.seed_generator.state.assign(store["seed_state"])
        super().load_own_variables({k: store[k] for k in store.keys() if k != "seed_state"})


@keras.saving.register_keras_serializable(package="vae")
class SpectralConv2D(layers.Layer):
    """A "same"-padded 2-D convolution whose kernel is divided by its largest singular value (Miyato et al. 2018).

    The singular value is estimated by one power iteration per call from the vector `u`, which training calls update (state,
    like BatchNorm's moving statistics); gradients flow through the division, as in SN-GAN. Kernel, bias and `u` stay
    float32 under mixed precision: the estimate needs the range.
    """

    def __init__(self, filters, kernel_size=4, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides

    def build(self, input_shape):
        shape = (self.kernel_size, self.kernel_size, input_shape[-1], self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="glorot_uniform", autocast=False)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros", autocast=False)
        self.u = self.add_weight(name="u", shape=(self.filters,), initializer="random_normal", trainable=False, autocast=False)

    def call(self, inputs, training=False):
        matrix = ops.reshape(self.kernel, (-1, self.filters))
        v = _unit(ops.matmul(matrix, self.u))
        u = ops.stop_gradient(_unit(ops.matmul(v, matrix)))
        v = ops.stop_gradient(v)
        if training:
            self.u.assign(u)
        sigma = ops.sum(v * ops.matmul(matrix, u))
        kernel = ops.cast(self.kernel / sigma, self.compute_dtype)
        outputs = ops.conv(inputs, kernel, strides=self.strides, padding="same")
        return outputs + ops.cast(self.bias, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides}


def _unit(x):
    return x / (ops.norm(x) + 1e-12)


def build_discriminator(image_size: int, width: int) -> keras.Model:
    """Functional PatchGAN: images in [0, 1] -> one logit per overlapping patch, (batch, image_size / 8, image_size / 8, 1).

    Three 4x4 stride-2 convolutions with LeakyReLU(0.2), `width` channels doubled at each (as the encoder's first levels),
    then a 3x3 convolution to the logits. No BatchNorm: spectral normalisation bounds it instead, and each logit depends on
    its own image only, so real and generated batches can share one call.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    for i in range(PATCH_HALVINGS):
        x = SpectralConv2D(width * 2**i, 4, strides=2, name=f"disc_down{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    logits = SpectralConv2D(1, 3, name="patch_logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="discriminator")


def hinge_losses(real_logits, fake_logits):
    """(the discriminator's hinge loss, its accuracy): 0.5 (mean relu(1 - real) + mean relu(1 + fake)) as in VQGAN; the
    accuracy averages the fraction of real patches with a positive logit and that of generated ones with a negative one."""
    real_logits, fake_logits = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
    loss = 0.5 * (ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(ops.relu(1.0 + fake_logits)))
    accuracy = 0.5 * (ops.mean(ops.cast(real_logits > 0, "float32")) + ops.mean(ops.cast(fake_logits < 0, "float32")))
    return loss, accuracy


@keras.saving.register_keras_serializable(package="vae")
class DiffAugment(CheckpointedSeed, layers.Layer):
    """DiffAugment (Zhao et al. 2020) of images in [0, 1], each with its own random draw: colour (brightness, saturation,
    contrast), translation by up to 1/8 of the side and a cutout of half the side, both filled with mid grey (the zero of the
    [-1, 1] images DiffAugment was written for). Differentiable, so the generator learns through it too."""

    def __init__(self, seed=None, **kwargs):
        # float32 under any precision policy, as the images it is given are; the discriminator casts after it.
        super().__init__(**{**kwargs, "dtype": "float32"})
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images):
        x = ops.cast(images, "float32") - 0.5
        batch, size = ops.shape(x)[0], x.shape[1]

        def uniform(low, high):
            return keras.random.uniform((batch, 1, 1, 1), low, high, seed=self.seed_generator)

        x = x + uniform(-0.25, 0.25)  # DiffAugment's +-0.5 on [-1, 1]
        channel_mean = ops.mean(x, axis=-1, keepdims=True)
        x = (x - channel_mean) * uniform(0.0, 2.0) + channel_mean
        image_mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        x = (x - image_mean) * uniform(0.5, 1.5) + image_mean

        shift = int(size * 0.125 + 0.5)
        padded = ops.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        rows = self._offsets(batch, -shift, shift + 1) + shift + ops.arange(size)[None, :]
        x = ops.take_along_axis(padded, ops.broadcast_to(rows[:, :, None, None], (batch, size, size + 2 * shift, 3)), axis=1)
        columns = self._offsets(batch, -shift, shift + 1) + shift + ops.arange(size)[None, :]
        x = ops.take_along_axis(x, ops.broadcast_to(columns[:, None, :, None], (batch, size, size, 3)), axis=2)

        cut = int(size * 0.5 + 0.5)
        reach = size + (1 - cut % 2)
        first_row = self._offsets(batch, 0, reach) - cut // 2
        first_column = self._offsets(batch, 0, reach) - cut // 2
        index = ops.arange(size)[None, :]
        in_rows = ops.logical_and(index >= first_row, index < first_row + cut)
        in_columns = ops.logical_and(index >= first_column, index < first_column + cut)
        keep = ops.logical_not(ops.logical_and(in_rows[:, :, None], in_columns[:, None, :]))
        x = x * ops.cast(keep, "float32")[..., None]
        return x + 0.5

    def _offsets(self, batch, low, high):
        """One random integer from [low, high) per image: (batch, 1)."""
        return keras.random.randint((batch, 1), low, high, dtype="int32", seed=self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
