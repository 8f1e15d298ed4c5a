"""In a fresh process with the CPU split into two logical devices: a tiny run with the adversarial term and averaged
weights on one device, and a copy of its folder as a kill right after epoch 1 would leave it, resumed for epoch 2 on two
mirrored replicas. In both runs epoch 2's discriminator loss is NaN, so every discriminator step of it is skipped.
Prints what test_distribute checks, as JSON.

    python tests/distributed_runs.py IMAGES_FOLDER OUT_FOLDER
"""
import contextlib
import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

import vae.backend  # noqa: F401  (quiet TensorFlow start)

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import vae.model.vae as vae_module  # noqa: E402
from vae.config import Config  # noqa: E402
from vae.training import trainer  # noqa: E402

images, root = sys.argv[1], Path(sys.argv[2])
size = Image.open(sorted(Path(images).glob("*.png"))[0]).width

hinge, poisoned = vae_module.hinge_losses, tf.Variable(False)  # read by the one traced step: no second trace
vae_module.hinge_losses = lambda real, fake: (lambda loss, accuracy: (tf.where(poisoned, np.nan, loss), accuracy))(
    *hinge(real, fake))


def train(name: str, strategy: str) -> dict:
    cfg = Config(data=images, out=str(root / name), image_size=size, width=8, latent_dim=8, batch_size=8, num_epochs=2,
                 lr_warmup_steps=0, learning_rate=1e-2, val_split=0.2, save_every_steps=0, strategy=strategy,
                 adversarial_weight=0.1, ema_decay=0.9).validate()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        trainer.train(cfg)
    return {"stdout": printed.getvalue(), "history": list(csv.DictReader(open(root / name / "history.csv")))}


def alike(variables) -> bool:
    """Whether each mirrored variable holds the same values on every replica."""
    return all(all(np.array_equal(c.numpy(), v.value.values[0].numpy()) for c in v.value.values) for v in variables)


def copy_after_epoch_1(self, row, catching_up=False):
    """Publish the epoch; after epoch 1's checkpoint, first copy the folder to "moved" (a run killed at that moment), then
    poison the discriminator's loss for epoch 2."""
    if row["epoch"] == 1:
        shutil.copytree(root / "default", root / "moved")
        poisoned.assign(True)
    publish(self, row, catching_up)


def check_replicas(self, row, catching_up=False):
    """Publish the epoch, and note whether the replicas agree on the discriminator, its optimizer and the averages."""
    model = self.model
    replicas.update(agree=alike(model.discriminator.weights + model.averages + model.disc_optimizer.variables),
                    vae_steps=int(model.optimizer.iterations.numpy()), disc_steps=int(model.disc_optimizer.iterations.numpy()))
    publish(self, row, catching_up)


publish, replicas = trainer.Trainer.publish_epoch, {}
trainer.Trainer.publish_epoch = copy_after_epoch_1
results = {"default": train("default", "default")}
trainer.Trainer.publish_epoch = check_replicas
results["moved"] = train("moved", "mirrored")
results["replicas"] = replicas
print(json.dumps(results))
