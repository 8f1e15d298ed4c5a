"""In a fresh process with the CPU split into two logical devices: the same tiny run trained under the default and the
mirrored strategy, and one strategy's checkpoint resumed under the other. Prints what test_distribute checks, as JSON.

    python tests/distributed_runs.py IMAGES_FOLDER OUT_FOLDER
"""
import contextlib
import csv
import io
import json
import sys
from pathlib import Path

import tensorflow as tf

import vae.backend  # noqa: F401  (quiet TensorFlow start)

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from vae.config import Config  # noqa: E402
from vae.training import trainer  # noqa: E402

images, root = sys.argv[1], Path(sys.argv[2])


def train(name: str, strategy: str) -> dict:
    cfg = Config(data=images, out=str(root / name), image_size=32, width=8, latent_dim=8, batch_size=8, num_epochs=2,
                 lr_warmup_steps=0, learning_rate=3e-3, val_split=0.2, save_every_steps=0, strategy=strategy).validate()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        trainer.train(cfg)
    return {"stdout": printed.getvalue(), "history": list(csv.DictReader(open(root / name / "history.csv")))}


def die(self, row, catching_up=False):
    raise KeyboardInterrupt  # as a kill right after epoch 1's checkpoint would


results = {strategy: train(strategy, strategy) for strategy in ("default", "mirrored")}
publish, trainer.Trainer.publish_epoch = trainer.Trainer.publish_epoch, die
with contextlib.suppress(KeyboardInterrupt), contextlib.redirect_stdout(io.StringIO()):
    train("moved", "default")
trainer.Trainer.publish_epoch = publish
results["moved"] = train("moved", "mirrored")
print(json.dumps(results))
