"""Device-dependent choices: numeric precision, XLA, and where batches are prefetched.

The CPU defaults come from benchmarks/benchmark.py on a 2-core AMD EPYC (Zen 3, AVX2): see README, "Speed".
"""
from __future__ import annotations

import keras
import tensorflow as tf

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(name: str) -> str:
    """auto: mixed_float16 on a GPU (tensor cores); float32 on a CPU, where bfloat16 measured slower."""
    if name == "auto":
        return "mixed_float16" if has_gpu() else "float32"
    return name


def use_precision(name: str) -> str:
    """Set Keras' global dtype policy for the layers built next; return the policy's name."""
    policy = resolve_precision(name)
    keras.config.set_dtype_policy(policy)
    return policy


def resolve_jit(name: str) -> bool:
    """auto: XLA on a GPU; off on a CPU, where 40 s of compiling bought only 15% faster steps (README, "Speed")."""
    if name == "auto":
        return has_gpu()
    return name == "on"


def prefetch_device(strategy: tf.distribute.Strategy) -> str | None:
    """The device to prefetch training batches to: the one GPU of a single-device run, else none
    (mirrored strategies distribute and prefetch to their devices themselves)."""
    gpus = tf.config.list_logical_devices("GPU")
    if strategy.num_replicas_in_sync == 1 and gpus:
        return gpus[0].name
    return None
