"""Looking at a trained model: quality measures, the evaluation report, reconstructing a folder, and the latent
space (interpolation, traversal, encoding)."""
import vae.backend  # noqa: F401  (Keras and TensorFlow, quietly, before any submodule)
