"""A variational autoencoder for anime faces, in Keras 3 on TensorFlow.

Importing `vae` is cheap: Keras and TensorFlow load, quietly (vae.backend), with the first of vae.model,
vae.data, vae.training or vae.evaluation, so `train.py --help` and the numpy-only modules never pay for them.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's native notices (CUDA probes, CPU features, cuInit failures on GPU-less machines) are noise to
# a user and break one-line errors; they stay hidden whatever level the user set, unless --debug asks for them.
USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
if not os.environ.get("VAE_SHOW_TF_LOGS"):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

