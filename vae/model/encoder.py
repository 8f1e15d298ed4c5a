"""The encoder q(z|x): stride-2 convolutions down to 4x4, then a mean and a log-variance head."""
import math

import keras
from keras import layers, ops

LOG_VAR_RANGE = (-10.0, 10.0)  # sigma from 0.007 to 150: wide enough for any sane posterior, keeps exp() finite


@keras.saving.register_keras_serializable(package="vae")
class Clip(layers.Layer):
    """Clamp values to [low, high]."""

    def __init__(self, low, high, **kwargs):
        super().__init__(**kwargs)
        self.low = low
        self.high = high

    def call(self, x):
        return ops.clip(x, self.low, self.high)

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}


def level_channels(image_size: int, width: int) -> list[int]:
    """Channels after each halving from image_size down to 4x4: width doubled per level, at most 8x."""
    return [width * min(2**i, 8) for i in range(int(math.log2(image_size // 4)))]


KERAS_BN_MOMENTUM = 0.99  # Keras' default, kept for models saved before the momentum was a setting


def batch_norm_leaky_relu(x, momentum: float):
    """BatchNorm then LeakyReLU(0.2), after every convolution but the last of each network.

    BatchNorm is synchronized across tf.distribute replicas, so N GPUs normalise over the same global batch
    as one GPU does (on one device it is plain BatchNorm; under another Keras backend, where training does not
    run, it cannot be synchronized).
    """
    x = layers.BatchNormalization(momentum=momentum, synchronized=keras.backend.backend() == "tensorflow")(x)
    return layers.LeakyReLU(0.2)(x)


def build_encoder(image_size: int, latent_dim: int, width: int, bn_momentum: float = KERAS_BN_MOMENTUM) -> keras.Model:
    """Functional model: image in [0, 1] -> (z_mean, z_log_var); 4x4 stride-2 convolutions halve the resolution."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for i, channels in enumerate(level_channels(image_size, width)):
        x = layers.Conv2D(channels, 4, strides=2, padding="same", name=f"down{i}")(x)
        x = batch_norm_leaky_relu(x, bn_momentum)
    x = layers.Flatten()(x)
    # Heads in float32: the KL term and exp(log_var) need the range, also under mixed precision.
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var_raw", dtype="float32")(x)
    z_log_var = Clip(*LOG_VAR_RANGE, name="z_log_var", dtype="float32")(z_log_var)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")
