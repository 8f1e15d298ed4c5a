"""Counting the floating-point operations of a model, layer by layer (multiply and add count as two)."""
from __future__ import annotations

import math

import keras

TRAINING_FACTOR = 3  # backward costs about twice the forward: gradients of inputs and of weights


def layer_flops(layer: keras.layers.Layer) -> int:
    """Forward FLOPs of one image through a Dense, Conv2D or Conv2DTranspose layer (others count as 0)."""
    if isinstance(layer, keras.layers.Dense):
        return 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    if isinstance(layer, keras.layers.Conv2DTranspose):
        h, w, _ = layer.input.shape[1:]  # each input pixel scatters a kernel-sized patch
        return 2 * math.prod(layer.kernel.shape) * h * w
    if isinstance(layer, keras.layers.Conv2D):
        h, w, _ = layer.output.shape[1:]
        return 2 * math.prod(layer.kernel.shape) * h * w
    return 0


def model_flops(model: keras.Model) -> int:
    """Forward FLOPs of one input through every weighted layer of a model, nested models included."""
    total = 0
    for layer in model.layers:
        total += model_flops(layer) if isinstance(layer, keras.Model) else layer_flops(layer)
    return total


def vae_training_flops(model) -> int:
    """Approximate FLOPs of one training image: encoder and decoder forward, times TRAINING_FACTOR."""
    return TRAINING_FACTOR * (model_flops(model.encoder) + model_flops(model.decoder))
