"""The package's model on a GPU under Keras' JAX backend: training images/s and sampling faces/s, beside the same
run's matrix-product rate.

Where a GPU was lent to measure this, TensorFlow's GPU build could not be installed, so this times the very
encoder, decoder and objective of vae.model with a JAX training step (Keras' stateless calls and Adam). train.py
itself runs on TensorFlow: read these figures as what the model costs on the GPU, not as train.py's own speed.

    KERAS_BACKEND=jax python benchmarks/gpu_jax.py
"""
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402

from vae.model.decoder import build_decoder  # noqa: E402
from vae.model.encoder import build_encoder  # noqa: E402
from vae.model.flops import TRAINING_FACTOR, model_flops  # noqa: E402
from vae.model.objective import objective  # noqa: E402

SIZE, LATENT, WIDTH, BETA = 64, 128, 32, 0.1  # the default model


def timed(fn, *args, steps=50):
    """Seconds per call of fn(*args) after two warm-up calls, waiting for the device."""
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def matmul_tflops(dtype, n=8192):
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    return 2 * n**3 / timed(jax.jit(lambda a: a @ a), a, steps=20) / 1e12


def training_rate(batch: int, precision: str) -> float:
    """Images/s of full training steps (encoder, sampling, decoder, objective, gradients, Adam) on random images."""
    keras.config.set_dtype_policy(precision)
    encoder, decoder = build_encoder(SIZE, LATENT, WIDTH), build_decoder(SIZE, LATENT, WIDTH)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(encoder.trainable_variables + decoder.trainable_variables)
    split = len(encoder.trainable_variables)

    def loss(trainable, non_trainable, images, eps):
        (mean, log_var), enc_state = encoder.stateless_call(trainable[:split], non_trainable[0], images, training=True)
        z = mean + jnp.exp(0.5 * log_var) * eps
        reconstructions, dec_state = decoder.stateless_call(trainable[split:], non_trainable[1], z, training=True)
        return objective(images, reconstructions, mean, log_var, BETA).loss, (enc_state, dec_state)

    @jax.jit
    def step(state, images_uint8, key):
        trainable, non_trainable, opt_vars = state
        images = images_uint8.astype("float32") / 255.0
        eps = jax.random.normal(key, (images.shape[0], LATENT))
        (_, non_trainable), grads = jax.value_and_grad(loss, has_aux=True)(trainable, non_trainable, images, eps)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return trainable, non_trainable, opt_vars

    state = ([v.value for v in encoder.trainable_variables + decoder.trainable_variables],
             ([v.value for v in encoder.non_trainable_variables], [v.value for v in decoder.non_trainable_variables]),
             [v.value for v in optimizer.variables])
    images = jax.random.randint(jax.random.key(1), (batch, SIZE, SIZE, 3), 0, 256).astype(jnp.uint8)
    seconds = timed(step, state, images, jax.random.key(2))
    keras.config.set_dtype_policy("float32")
    return batch / seconds


def sampling_rate(batch: int) -> float:
    """Faces/s of the decoder alone, from latents to uint8 images."""
    decoder = build_decoder(SIZE, LATENT, WIDTH)
    weights = ([v.value for v in decoder.trainable_variables], [v.value for v in decoder.non_trainable_variables])
    decode = jax.jit(lambda z: (decoder.stateless_call(*weights, z)[0] * 255.0 + 0.5).astype(jnp.uint8))
    return batch / timed(decode, jax.random.normal(jax.random.key(3), (batch, LATENT)))


def main():
    device = jax.devices()[0]
    flops = TRAINING_FACTOR * (model_flops(build_encoder(SIZE, LATENT, WIDTH)) + model_flops(build_decoder(SIZE, LATENT, WIDTH)))
    print(f"device: {device.device_kind}; jax {jax.__version__}, keras {keras.__version__}")
    peak = {"float32": matmul_tflops(jnp.float32), "mixed_bfloat16": matmul_tflops(jnp.bfloat16)}
    print(f"matmul 8192^3: float32 {peak['float32']:.0f} TFLOP/s, bfloat16 {peak['mixed_bfloat16']:.0f} TFLOP/s")
    print(f"default model: {flops / 1e9:.3f} GFLOP per training image")
    for precision in ("float32", "mixed_bfloat16"):
        for batch in (64, 256, 1024):
            rate = training_rate(batch, precision)
            achieved = rate * flops / 1e12
            print(f"training, {precision}, batch {batch}: {rate:,.0f} img/s = {achieved:.1f} TFLOP/s = "
                  f"{achieved / peak[precision]:.3f}x matmul")
    for batch in (256, 4096):
        print(f"sampling, float32, batch {batch}: {sampling_rate(batch):,.0f} faces/s")


if __name__ == "__main__":
    main()
