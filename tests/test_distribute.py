"""tf.distribute: a run resumed on mirrored replicas follows one device (the discriminator's step too), two workers train."""
import csv
import json
import os
import socket

import keras
import numpy as np
import pytest

import vae.model

from conftest import ROOT, SIZE, TINY, blob_images, run_script, write_pngs

pytestmark = pytest.mark.slow


def history(run):
    return list(csv.DictReader(open(run / "history.csv")))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_pngs(tmp_path_factory.mktemp("distribute") / "images", blob_images(80, SIZE))


def train_args(images, out, *extra):
    return ["train.py", "--data", images, "--out", out, "--val_split", "0.2", "--save_every_steps", "0", *TINY, *extra]


@pytest.fixture(scope="module")
def two_devices(images, tmp_path_factory):
    """(what tests/distributed_runs.py printed, its output folder): one fresh process, the CPU split in two devices."""
    root = tmp_path_factory.mktemp("two_devices")
    result = run_script("tests/distributed_runs.py", images, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), root


def test_a_run_resumed_on_two_mirrored_replicas_follows_the_same_run_on_one_device(two_devices):
    runs, tmp_path = two_devices
    one, moved = runs["default"]["history"], runs["moved"]["history"]
    assert "2 replicas" not in runs["default"]["stdout"]
    printed = runs["moved"]["stdout"]
    assert printed.splitlines()[0] == "resuming from epoch 2, step 0" and "2 replicas" in printed
    assert [int(r["epoch"]) for r in moved] == [1, 2]
    # Epoch 2 from the same checkpoint, global batch and data order; only the sampling noise is drawn per replica.
    for key in ("loss", "recon", "val_loss"):
        np.testing.assert_allclose(float(moved[1][key]), float(one[1][key]), rtol=0.02, err_msg=key)
    drop = [float(h[0]["loss"]) - float(h[1]["loss"]) for h in (one, moved)]
    assert drop[0] > 0 and drop[1] == pytest.approx(drop[0], rel=0.1)
    assert json.loads((tmp_path / "moved" / "config.json").read_text())["strategy"] == "mirrored"
    assert isinstance(keras.saving.load_model(tmp_path / "moved" / "model_best.keras", compile=False), vae.model.VAE)


def test_mirrored_replicas_train_the_discriminator_alike_and_skip_its_nan_together(two_devices):
    runs, tmp_path = two_devices
    assert runs["replicas"]["agree"]
    for run in ("default", "moved"):
        first, second = runs[run]["history"]
        assert np.isfinite(float(first["disc_loss"])) and float(first["disc_skipped_steps"]) == 0
        # Epoch 2's discriminator loss is NaN: each of its 8 steps skipped, the VAE's taken.
        assert float(second["disc_skipped_steps"]) == 8 and float(second["skipped_steps"]) == 0
    assert (runs["replicas"]["vae_steps"], runs["replicas"]["disc_steps"]) == (16, 8)
    before, after = (keras.saving.load_model(f, compile=False).discriminator.trainable_weights
                     for f in sorted((tmp_path / "moved" / "checkpoints").glob("ckpt-*.keras")))
    assert len(before) > 0 and all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(before, after, strict=True))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_train_one_epoch_and_only_the_chief_writes(images, tmp_path):
    import subprocess
    import sys

    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    out = tmp_path / "run"
    procs = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, *map(str, train_args(images, out, "--num_epochs", "1", "--strategy", "multiworker"))]
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=180) for p in procs]
    for p, (stdout, _stderr) in zip(procs, results):
        assert p.returncode == 0, "\n".join(e[-3000:] for _, e in results)
        assert "2 replicas" in stdout
    rows = history(out)
    assert [r["epoch"] for r in rows] == ["1"] and np.isfinite(float(rows[0]["val_loss"]))
    model = keras.saving.load_model(out / "model_best.keras", compile=False)
    assert model.decoder.predict(np.zeros((1, 8), "float32"), verbose=0).shape == (1, SIZE, SIZE, 3)
    # The second worker wrote only to its scratch folder, and removed it.
    assert list((tmp_path / "tmp1").iterdir()) == []
