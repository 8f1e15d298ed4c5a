"""Where and how training runs: the tf.distribute strategy and which process writes, numeric precision, XLA, and
where batches are prefetched.

The CPU defaults come from benchmarks/benchmark.py on a 2-core AMD EPYC (Zen 3, AVX2): see docs/speed.md.
"""
from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf

from vae.config import Config
from vae.errors import UserError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for --strategy; create it before any other TensorFlow work (multi-worker needs that).

    auto: mirrored when more than one GPU is visible, else default (one device).
    mirrored: all GPUs of this machine; without GPUs, all logical CPU devices (one, unless configured).
    multiworker: MultiWorkerMirroredStrategy over the cluster that TF_CONFIG describes.
    """
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([d.name for d in gpus or tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    strategies = next(f.metadata["choices"] for f in dataclasses.fields(Config) if f.name == "strategy")
    raise UserError(f"--strategy {name} is not one of {', '.join(strategies)}")


def check_tf_config() -> None:
    """TF_CONFIG must be set and be JSON with a cluster and a task, or MultiWorkerMirroredStrategy fails obscurely."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError("--strategy multiworker needs TF_CONFIG set on every worker (see docs/distributed.md)")
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e}): {text[:80]}") from e
    if not isinstance(value, dict) or "cluster" not in value or "task" not in value:
        raise UserError('TF_CONFIG must be a JSON object with "cluster" and "task" (see docs/distributed.md)')


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: the chief, or worker 0 of a cluster without one; any single process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker gets here: an all-reduce of one number."""
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def native_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 itself (AVX-512 BF16 or AMX); elsewhere TensorFlow emulates it, slowly."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_precision(name: str) -> str:
    """auto: mixed_float16 on a GPU (tensor cores); on a CPU mixed_bfloat16 where it is native (measured +18% on a
    Zen 4 core), else float32 (emulated bfloat16 measured 7x slower on a Zen 3 core)."""
    if name == "auto":
        return "mixed_float16" if has_gpu() else ("mixed_bfloat16" if native_bfloat16() else "float32")
    return name


def use_precision(name: str) -> str:
    """Set Keras' global dtype policy for the layers built next; return the policy's name."""
    policy = resolve_precision(name)
    keras.config.set_dtype_policy(policy)
    return policy


def resolve_jit(name: str) -> bool:
    """auto: XLA on a GPU; off on a CPU, where compiling cost 10-40 s and the steps were no faster (Zen 3) or 39%
    slower (Zen 4) once the per-epoch iterator stall was gone (docs/speed.md)."""
    if name == "auto":
        return has_gpu()
    return name == "on"


def describe_device(precision: str = "auto", jit_compile: str = "auto") -> str:
    """One line for the run's log: the device, and what auto chose there and why."""
    if has_gpu():
        where = f"{len(tf.config.list_physical_devices('GPU'))} GPU(s)"
        why = "tensor cores"
    else:
        # The cores this process may use: taskset and a container's CPU set leave fewer than the machine has.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        where = f"CPU, {cores} core{'s' if cores != 1 else ''}"
        why = "native bfloat16" if native_bfloat16() else "no native bfloat16 (AVX-512 BF16 or AMX), so float32"
    chosen = resolve_precision(precision)
    xla = "on" if resolve_jit(jit_compile) else "off"
    return (f"device: {where}; precision {chosen}" + (f" ({why})" if precision == "auto" else "")
            + f"; XLA {xla}" + (" (auto: on GPUs only)" if jit_compile == "auto" else ""))


def prefetch_device(strategy: tf.distribute.Strategy) -> str | None:
    """The device to prefetch training batches to: the one GPU of a single-device run, else none
    (mirrored strategies distribute and prefetch to their devices themselves)."""
    gpus = tf.config.list_logical_devices("GPU")
    if strategy.num_replicas_in_sync == 1 and gpus:
        return gpus[0].name
    return None
