"""Training a run: the trainer with its checkpoints and resume, callbacks, devices and strategies, and what it
reports (history, loss curve, grids, TensorBoard)."""
import vae.backend  # noqa: F401  (Keras and TensorFlow, quietly, before any submodule)
