"""The decoder p(x|z): from 4x4 up to the image, doubling the resolution at each level."""
import keras
from keras import layers

from vae.blocks import norm_act, residual_blocks, spec, upsample
from vae.encoder import level_channels


def build_decoder(image_size: int, latent_dim: int, width: int, architecture: str = "conv") -> keras.Model:
    """Functional model: z -> image in [0, 1].

    Each resolution gets the channels the encoder has there, so the cost mirrors the encoder's. The
    last layer is a 4x4 stride-2 transposed convolution to RGB in every preset: a 3x3 convolution
    with 3 output channels at full resolution measured five times slower on CPUs (oneDNN).
    """
    arch = spec(architecture)
    channels = level_channels(image_size, width)[::-1]
    z = keras.Input((latent_dim,), name="z")
    x = layers.Dense(4 * 4 * channels[0], name="project")(z)
    x = layers.Reshape((4, 4, channels[0]))(x)
    x = residual_blocks(x, arch) if arch["blocks"] else layers.LeakyReLU(0.2)(x)
    for i, ch in enumerate(channels[1:]):
        x = upsample(norm_act(x, arch) if arch["blocks"] else x, ch, arch, name=f"up{i}")
        x = residual_blocks(x, arch) if arch["blocks"] else norm_act(x, arch)
    if arch["blocks"]:
        x = norm_act(x, arch)
    image = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="sigmoid", name="rgb", dtype="float32")(x)
    return keras.Model(z, image, name="decoder")
