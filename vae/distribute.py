"""Choosing the tf.distribute strategy, and who writes files in a multi-worker run."""
from __future__ import annotations

import json
import os

import tensorflow as tf

from vae.errors import UserError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto: MirroredStrategy over all GPUs when there are several, else the default (one device)."""
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs TF_CONFIG set on every worker (see README, 'Several machines')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"--strategy {name} is not one of {', '.join(STRATEGIES)}")


def is_chief() -> bool:
    """Whether this process writes the run folder: always, except on non-chief workers of a TF_CONFIG cluster."""
    if "TF_CONFIG" not in os.environ:
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
