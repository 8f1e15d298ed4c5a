"""Keras and its backend (TensorFlow unless KERAS_BACKEND says otherwise), imported once and quietly.

The subpackages that compute (model, data, training, evaluation) import this first.
"""
import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet_native_stderr():
    """Hide what native code prints on stderr while the block runs; replay it if the block fails.

    TensorFlow's wheels probe for CUDA at import and print driver notices before any log level applies.
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


with quiet_native_stderr():
    import keras  # noqa: F401
