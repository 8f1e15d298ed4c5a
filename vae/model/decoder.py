"""The decoder p(x|z): from 4x4 up to the image, doubling the resolution at each level."""
import keras
from keras import layers, ops

from vae.model.encoder import KERAS_BN_MOMENTUM, batch_norm_leaky_relu, level_channels


@keras.saving.register_keras_serializable(package="vae")
class Conv2DTranspose(layers.Conv2DTranspose):
    """Keras' transposed convolution, whose inference, when 4x4 at stride 2 with "same" padding, runs as a 2x2
    stride-1 convolution to four sub-pixel phases, interleaved: the same numbers (to float rounding), the same weights.

    Keras stores a layer's weights in a .keras file under its class's name: keeping the name lets checkpoints and
    models saved before this class existed load into the models built now.

    TensorFlow's CPU kernel for the transposed convolution reached 24 to 33 GFLOP/s where the 2x2 form reached 41 to
    61 (batch 1,024, 2-core Zen 3; docs/speed.md), so sampling, validation and the explorer decode faster. Training
    keeps the transposed convolution: its gradients were faster than those of the 2x2 form.
    """

    def call(self, inputs, training=None):
        if training or self.kernel_size != (4, 4) or self.strides != (2, 2) or self.padding != "same":
            return super().call(inputs)
        _, height, width, _ = inputs.shape
        # The kernel (4, 4, out, in) as a 2x2 convolution from `in` channels to (row phase, column phase, out):
        # kernel row 2 * a + r lands on row phase r from input row offset -a, hence the flip of a and b.
        kernel = ops.reshape(self.kernel, (2, 2, 2, 2, self.filters, -1))  # (a, r, b, c, out, in)
        kernel = ops.flip(ops.transpose(kernel, (0, 2, 5, 1, 3, 4)), axis=(0, 1))  # (a, b, in, r, c, out)
        kernel = ops.reshape(kernel, (2, 2, -1, 4 * self.filters))
        phases = ops.conv(ops.pad(inputs, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel, padding="valid")
        # (rows + 1, columns + 1) positions of 2x2 phases; the full grid less its outer ring of pixels is the output.
        phases = ops.reshape(phases, (-1, height + 1, width + 1, 2, 2, self.filters))
        outputs = ops.reshape(ops.transpose(phases, (0, 1, 3, 2, 4, 5)), (-1, 2 * height + 2, 2 * width + 2, self.filters))
        outputs = outputs[:, 1:-1, 1:-1, :]
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)


def build_decoder(image_size: int, latent_dim: int, width: int, bn_momentum: float = KERAS_BN_MOMENTUM) -> keras.Model:
    """Functional model: z -> image in [0, 1], the encoder mirrored with 4x4 stride-2 transposed convolutions.

    Each resolution gets the channels the encoder has there, so the cost mirrors the encoder's. Transposed
    convolutions rather than upsampling + 3x3 convolution: at equal wall time they gave sharper faces (see
    the README), and a 3x3 convolution to RGB at full resolution measured five times slower on CPUs (oneDNN).
    A 4x4 kernel at stride 2 covers every output pixel equally, which keeps checkerboard artifacts faint.
    """
    channels = level_channels(image_size, width)[::-1]
    z = keras.Input((latent_dim,), name="z")
    x = layers.Dense(4 * 4 * channels[0], name="project")(z)
    x = layers.Reshape((4, 4, channels[0]))(x)
    x = layers.LeakyReLU(0.2)(x)
    for i, ch in enumerate(channels[1:]):
        x = Conv2DTranspose(ch, 4, strides=2, padding="same", name=f"up{i}")(x)
        x = batch_norm_leaky_relu(x, bn_momentum)
    image = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="sigmoid", name="rgb", dtype="float32")(x)
    return keras.Model(z, image, name="decoder")
