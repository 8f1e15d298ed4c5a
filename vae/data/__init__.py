"""Face images: finding and decoding files, the uint8 cache and its tf.data pipelines, and synthetic faces."""
import vae.backend  # noqa: F401  (Keras and TensorFlow, quietly, before any submodule)
