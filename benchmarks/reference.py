"""The plain reference: the keras.io VAE example scaled to 64x64 RGB, trained the plain way.

Conv 32-64-128-256 (kernel 4, stride 2, BatchNorm, LeakyReLU), the mirrored transposed-convolution
decoder, latent 128, batch 128, Adam, L1 + KL in a train_step fed from in-memory float tensors.
"""
import keras
import tensorflow as tf
from keras import layers, ops


def build_encoder(latent_dim=128):
    inputs = keras.Input((64, 64, 3))
    x = inputs
    for channels in (32, 64, 128, 256):
        x = layers.Conv2D(channels, 4, strides=2, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, [layers.Dense(latent_dim)(x), layers.Dense(latent_dim)(x)], name="encoder")


def build_decoder(latent_dim=128):
    z = keras.Input((latent_dim,))
    x = layers.Reshape((4, 4, 256))(layers.Dense(4 * 4 * 256)(z))
    x = layers.LeakyReLU(0.2)(x)
    for channels in (128, 64, 32):
        x = layers.Conv2DTranspose(channels, 4, strides=2, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
    image = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model(z, image, name="decoder")


class ReferenceVAE(keras.Model):
    def __init__(self, latent_dim=128, **kwargs):
        super().__init__(**kwargs)
        self.encoder = build_encoder(latent_dim)
        self.decoder = build_decoder(latent_dim)
        self.seed_generator = keras.random.SeedGenerator(0)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, images):
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(images, training=True)
            eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            reconstruction = self.decoder(z_mean + ops.exp(0.5 * z_log_var) * eps, training=True)
            recon = ops.mean(ops.sum(ops.abs(images - reconstruction), axis=(1, 2, 3)))
            kl = ops.mean(ops.sum(0.5 * (ops.exp(z_log_var) + ops.square(z_mean) - 1 - z_log_var), axis=1))
            loss = recon + kl
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def load_folder(folder, num):
    """The first `num` images of a folder as float32 in [0, 1], the plain way: PIL, one after the other."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:num]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64)), np.float32) / 255.0 for p in paths])


def main():
    """python benchmarks/reference.py --data DIR --num 3000 --epochs 4: the whole plain script, timed from outside."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--num", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    images = load_folder(args.data, args.num)
    keras.utils.set_random_seed(0)
    model = ReferenceVAE()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, batch_size=128, epochs=args.epochs, shuffle=True, verbose=2)


if __name__ == "__main__":
    main()
