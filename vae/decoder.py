"""The decoder p(x|z): from 4x4 up to the image by nearest upsampling and convolution."""
import keras
from keras import layers

from vae.encoder import level_channels


def build_decoder(image_size: int, latent_dim: int, width: int) -> keras.Model:
    """Functional model: z -> image in [0, 1].

    Upsampling then a 3x3 convolution, not transposed convolutions, which leave checkerboard artifacts.
    """
    # Each resolution gets the channels the encoder has there, so the cost mirrors the encoder's.
    channels = level_channels(image_size, width)[::-1]
    z = keras.Input((latent_dim,), name="z")
    x = layers.Dense(4 * 4 * channels[0], name="project")(z)
    x = layers.Reshape((4, 4, channels[0]))(x)
    x = layers.LeakyReLU(0.2)(x)
    for i, ch in enumerate(channels[1:]):
        x = layers.UpSampling2D(2, interpolation="nearest")(x)
        x = layers.Conv2D(ch, 3, padding="same", name=f"up{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.UpSampling2D(2, interpolation="nearest")(x)
    image = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="rgb", dtype="float32")(x)
    return keras.Model(z, image, name="decoder")
