"""The architectures' building blocks: normalisation, activation, residual blocks, and the presets that combine them."""
from __future__ import annotations

from keras import layers

# Each preset: normalisation (None, "batch", "group"), activation, residual blocks per level,
# and how the decoder doubles the resolution ("nearest" upsampling + 3x3 conv, or a 4x4 stride-2 "transpose").
ARCHITECTURES = {
    "conv": dict(norm=None, act="leaky_relu", blocks=0, up="nearest"),
    "tconv": dict(norm=None, act="leaky_relu", blocks=0, up="transpose"),
    "keras_io": dict(norm="batch", act="leaky_relu", blocks=0, up="transpose"),
    "resnet": dict(norm="group", act="silu", blocks=1, up="transpose"),
}


def spec(architecture: str) -> dict:
    return ARCHITECTURES[architecture]


def norm_act(x, arch: dict):
    """Normalisation (if any) then the activation."""
    if arch["norm"] == "batch":
        x = layers.BatchNormalization()(x)
    elif arch["norm"] == "group":
        x = layers.GroupNormalization(groups=min(8, x.shape[-1]))(x)
    return layers.LeakyReLU(0.2)(x) if arch["act"] == "leaky_relu" else layers.Activation(arch["act"])(x)


def residual_blocks(x, arch: dict):
    """arch["blocks"] pre-activation residual blocks of two 3x3 convolutions, keeping the channels."""
    channels = x.shape[-1]
    for _ in range(arch["blocks"]):
        h = layers.Conv2D(channels, 3, padding="same")(norm_act(x, arch))
        h = layers.Conv2D(channels, 3, padding="same")(norm_act(h, arch))
        x = layers.Add()([x, h])
    return x


def upsample(x, channels: int, arch: dict, **options):
    """Double the resolution into `channels` channels."""
    if arch["up"] == "transpose":
        return layers.Conv2DTranspose(channels, 4, strides=2, padding="same", **options)(x)
    x = layers.UpSampling2D(2, interpolation="nearest")(x)
    return layers.Conv2D(channels, 3, padding="same", **options)(x)
