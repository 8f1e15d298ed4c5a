"""In a fresh process with the CPU split into two logical devices: a tiny run on one device, a copy of its folder as a kill
right after epoch 1 would leave it resumed for epoch 2 on two mirrored replicas, and the discriminator's step on two
replicas.
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
faces = np.stack([np.asarray(Image.open(f)) for f in sorted(Path(images).glob("*.png"))])


def train(name: str, strategy: str) -> dict:
    cfg = Config(data=images, out=str(root / name), image_size=faces.shape[1], width=8, latent_dim=8, batch_size=8, num_epochs=2,
                 lr_warmup_steps=0, learning_rate=1e-2, val_split=0.2, save_every_steps=0, strategy=strategy).validate()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        trainer.train(cfg)
    return {"stdout": printed.getvalue(), "history": list(csv.DictReader(open(root / name / "history.csv")))}


def copy_after_epoch_1(self, row, catching_up=False):
    """Publish the epoch; after epoch 1's checkpoint, first copy the folder to "moved": a run killed at that moment."""
    if row["epoch"] == 1:
        shutil.copytree(root / "default", root / "moved")
    publish(self, row, catching_up)


def discriminator_on_two_replicas() -> dict:
    """Two epochs of a tiny VAE with the adversarial term and averaged weights; the second with a NaN discriminator loss."""
    cfg = Config(image_size=faces.shape[1], width=8, latent_dim=8, batch_size=8, lr_warmup_steps=0, adversarial_weight=0.1,
                 ema_decay=0.9).validate()
    # Reduced through one device: two strategies' collectives on the same devices share keys in one process, so the
    # trainer's (a smaller model) and this one's would clash. On GPUs the trainer's reduce by NCCL, not collectives.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    hinge, poisoned = vae_module.hinge_losses, tf.Variable(False)  # read by the one traced step: no second trace
    vae_module.hinge_losses = lambda real, fake: (lambda loss, accuracy: (tf.where(poisoned, np.nan, loss), accuracy))(
        *hinge(real, fake))
    model = trainer.build_model(cfg, 4, strategy)
    data = tf.data.Dataset.from_tensor_slices(faces[:32]).batch(8)

    def history(fit):
        return {k: [float(v) for v in values] for k, values in fit.history.items()}

    def alike(variables):
        return all(all(np.array_equal(c.numpy(), v.value.values[0].numpy()) for c in v.value.values) for v in variables)

    first = history(model.fit(data, epochs=1, verbose=0))
    agree = alike(model.discriminator.weights + model.averages + model.disc_optimizer.variables)
    disc_before = [w.numpy() for w in model.discriminator.trainable_weights]
    poisoned.assign(True)
    second = history(model.fit(data, epochs=1, verbose=0))
    disc_after = [w.numpy() for w in model.discriminator.trainable_weights]
    vae_module.hinge_losses = hinge
    return {"first": first, "second": second, "agree": agree,
            "disc_unchanged": all(np.array_equal(a, b) for a, b in zip(disc_before, disc_after)),
            "vae_steps": int(model.optimizer.iterations.numpy()), "disc_steps": int(model.disc_optimizer.iterations.numpy())}


publish, trainer.Trainer.publish_epoch = trainer.Trainer.publish_epoch, copy_after_epoch_1
results = {"default": train("default", "default")}
trainer.Trainer.publish_epoch = publish
results["moved"] = train("moved", "mirrored")
results["discriminator"] = discriminator_on_two_replicas()
print(json.dumps(results))
