"""The reparameterization trick as a Keras layer."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vae")
class Sampling(keras.layers.Layer):
    """z = mean + exp(0.5 * log_var) * eps with eps ~ N(0, I), so gradients flow through mean and log_var."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        return reparameterize(z_mean, z_log_var, keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype,
                                                                     seed=self.seed_generator))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def reparameterize(z_mean, z_log_var, eps):
    """A draw of q(z|x) = N(z_mean, exp(z_log_var)) from standard normal noise `eps` (tensors or numpy arrays)."""
    return z_mean + ops.exp(0.5 * z_log_var) * eps
