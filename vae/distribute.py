"""Choosing the tf.distribute strategy, and which process writes the run folder."""
from __future__ import annotations

import os

import tensorflow as tf

from vae.errors import UserError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


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
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs TF_CONFIG set on every worker (see README, 'Several machines')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"--strategy {name} is not one of {', '.join(STRATEGIES)}")


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


def multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether the strategy spans several worker processes."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, [])) for job in ("chief", "worker")) > 1
