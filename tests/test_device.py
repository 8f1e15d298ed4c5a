"""The GPU paths, run on the CPU: mixed_float16 with loss scaling, XLA, and prefetching batches to a device."""
import keras
import numpy as np
import tensorflow as tf

from vae.config import Config
from vae.data import dataset
from vae.training.trainer import build_model

from conftest import SIZE, blob_images


def tiny(**overrides) -> Config:
    return Config(image_size=SIZE, width=8, latent_dim=8, batch_size=8, lr_warmup_steps=0, strategy="default",
                  **overrides).validate()


def fit_losses(cfg: Config, images: np.ndarray, epochs: int = 3, eager: bool = False):
    """The per-epoch training losses of a model built as train.py builds it, and the model."""
    model = build_model(cfg, steps_per_epoch=1)
    model.run_eagerly = eager
    try:
        return model.fit(images, batch_size=8, epochs=epochs, verbose=0, shuffle=False).history["loss"], model
    finally:
        keras.config.set_dtype_policy("float32")  # build_model set the global policy; later tests expect float32


def test_mixed_float16_computes_in_half_precision_with_loss_scaling_and_float32_heads():
    losses, model = fit_losses(tiny(precision="mixed_float16"), blob_images(8, SIZE), epochs=4)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.encoder.get_layer("down0").compute_dtype == "float16"
    assert model.encoder.get_layer("down0").kernel.dtype == "float32"  # master weights stay float32
    assert model.encoder.get_layer("z_log_var").compute_dtype == "float32"
    assert model.decoder.get_layer("rgb").compute_dtype == "float32"
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_xla_follows_the_same_loss_curve_as_plain_tensorflow():
    images = blob_images(8, SIZE)
    plain, _ = fit_losses(tiny(jit_compile="off"), images, eager=True)  # three steps: eager is quicker than their trace
    xla, model = fit_losses(tiny(jit_compile="on"), images)
    assert model.jit_compile
    # Not bit-equal: under XLA the reparameterization noise comes from another random-number kernel.
    np.testing.assert_allclose(xla, plain, rtol=0.02)
    assert xla[-1] < xla[0] and plain[-1] < plain[0]


def test_batches_prefetched_to_a_device_are_the_batches_without_prefetch():
    faces = dataset.FaceSet([f"{i}" for i in range(20)], tf.Variable(blob_images(20, 16), trainable=False))
    indices = np.arange(20)
    plain = [b.numpy() for b in dataset.train_batches(faces, indices, 4, seed=0, epoch=1)]
    moved = [b for b in dataset.train_batches(faces, indices, 4, seed=0, epoch=1, device="/cpu:0")]
    assert len(plain) == len(moved) == 5
    assert all("CPU:0" in b.device for b in moved)
    for a, b in zip(plain, moved):
        np.testing.assert_array_equal(a, b.numpy())

