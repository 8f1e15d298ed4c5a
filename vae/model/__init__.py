"""The model: encoder, reparameterization, decoder, the VAE with its train and test steps, its objective,
and optimizer. Importing it registers the custom Keras objects, so that after `import vae.model`
plain `keras.saving.load_model` reads this package's .keras files."""
import vae.backend  # noqa: F401  (Keras and TensorFlow, quietly, before any submodule)
from vae.model.vae import VAE  # noqa: E402  (registers every custom object)

__all__ = ["VAE"]
