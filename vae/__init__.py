"""A variational autoencoder for anime faces, in Keras 3 on TensorFlow.

Importing the package registers its layers, model and optimizer, so `keras.saving.load_model`
reads this package's `.keras` files after `import vae` alone.
"""
import contextlib
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Hide what native code prints on stderr while the block runs; replay it if the block fails.

    TensorFlow's wheels probe for CUDA at import and print driver notices before any log level
    applies; on a machine without a GPU they are noise.
    """
    if os.environ.get("VAE_SHOW_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


with _quiet_native_stderr():
    import tensorflow  # noqa: F401

from vae.model import VAE  # noqa: E402  (registers every custom object)

__all__ = ["VAE"]
