"""The package's model on a GPU under Keras' JAX backend: training images/s and sampling faces/s, beside the same
run's matrix-product rate.

Where a GPU was lent to measure this, TensorFlow's GPU build could not be installed, so this times the very
encoder, decoder and objective of vae.model with a JAX training step (Keras' stateless calls and Adam). train.py
itself runs on TensorFlow: read these figures as what the model costs on the GPU, not as train.py's own speed.

    KERAS_BACKEND=jax python benchmarks/gpu_jax.py
    KERAS_BACKEND=jax python benchmarks/gpu_jax.py --faces faces.npy   # also float32 against mixed_bfloat16 at equal epochs

faces.npy: uint8 faces (n, 64, 64, 3), shuffled, e.g. the `images` of `vae.data.dataset.load_faces(folder, 64)`.
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from vae.model.decoder import build_decoder  # noqa: E402
from vae.model.encoder import build_encoder  # noqa: E402
from vae.model.flops import TRAINING_FACTOR, model_flops  # noqa: E402
from vae.model.objective import objective, psnr  # noqa: E402

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


def training_step(precision: str):
    """(jitted step(state, uint8 images, key) -> state, initial state, encoder, decoder) of the default model."""
    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    encoder, decoder = build_encoder(SIZE, LATENT, WIDTH, 0.9), build_decoder(SIZE, LATENT, WIDTH, 0.9)
    keras.config.set_dtype_policy("float32")
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
    return step, state, split, encoder, decoder


def training_rate(batch: int, precision: str) -> float:
    """Images/s of full training steps (encoder, sampling, decoder, objective, gradients, Adam) on random images."""
    step, state, *_ = training_step(precision)
    images = jax.random.randint(jax.random.key(1), (batch, SIZE, SIZE, 3), 0, 256).astype(jnp.uint8)
    return batch / timed(step, state, images, jax.random.key(2))


def validation_psnr_by_epoch(faces: np.ndarray, precision: str, epochs: int, batch: int = 64) -> list[float]:
    """Mean PSNR of the last 10% of `faces` reconstructed from their posterior means after each epoch on the rest."""
    step, state, split, encoder, decoder = training_step(precision)
    held = len(faces) // 10
    train, val = faces[:-held], jnp.asarray(faces[-held:])

    @jax.jit
    def reconstruct(state, images_uint8):
        trainable, (enc, dec), _ = state
        images = images_uint8.astype("float32") / 255.0
        (mean, _), _ = encoder.stateless_call(trainable[:split], enc, images, training=False)
        return psnr(images, decoder.stateless_call(trainable[split:], dec, mean, training=False)[0])

    order, key, scores = np.random.default_rng(0), jax.random.key(2), []
    for _ in range(epochs):
        shuffled = train[order.permutation(len(train))]
        for i in range(0, len(train) - batch + 1, batch):
            key, sub = jax.random.split(key)
            state = step(state, jnp.asarray(shuffled[i : i + batch]), sub)
        scores.append(float(jnp.mean(reconstruct(state, val))))
    return scores


def sampling_rate(batch: int) -> float:
    """Faces/s of the decoder alone, from latents to uint8 images."""
    decoder = build_decoder(SIZE, LATENT, WIDTH)
    weights = ([v.value for v in decoder.trainable_variables], [v.value for v in decoder.non_trainable_variables])
    decode = jax.jit(lambda z: (decoder.stateless_call(*weights, z)[0] * 255.0 + 0.5).astype(jnp.uint8))
    return batch / timed(decode, jax.random.normal(jax.random.key(3), (batch, LATENT)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", help="uint8 faces (n, 64, 64, 3) in a .npy file: also compare precisions at equal epochs")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of that comparison")
    args = parser.parse_args()
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
    if args.faces:
        faces = np.load(args.faces)
        print(f"validation PSNR (dB) after each of {args.epochs} epochs, batch 64, {len(faces) - len(faces) // 10} training "
              f"and {len(faces) // 10} validation faces, same initial weights and data order:")
        for precision in ("float32", "mixed_bfloat16"):
            scores = validation_psnr_by_epoch(faces, precision, args.epochs)
            print(f"  {precision:15s} " + " ".join(f"{p:.2f}" for p in scores))


if __name__ == "__main__":
    main()
