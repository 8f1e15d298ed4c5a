"""tf.distribute: mirrored replicas match one device, a checkpoint moves between strategies, two workers train."""
import csv
import json
import os
import socket

import keras
import numpy as np
import pytest
from conftest import ROOT, TINY, blob_images, kill_when, read_state, run_script, write_pngs

import vae.model

pytestmark = pytest.mark.slow


def history(run):
    return list(csv.DictReader(open(run / "history.csv")))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_pngs(tmp_path_factory.mktemp("distribute") / "images", blob_images(160, 32))


def train_args(images, out, *extra):
    return ["train.py", "--data", images, "--out", out, "--val_split", "0.2", "--save_every_steps", "0", *TINY, *extra]


def test_two_mirrored_replicas_follow_the_single_device_loss_curve(images, tmp_path):
    runs = {}
    for strategy in ("default", "mirrored"):
        out = tmp_path / strategy
        result = run_script("tests/logical_cpus.py", "2", *train_args(images, out, "--num_epochs", "3", "--strategy", strategy))
        assert result.returncode == 0, result.stderr[-2000:]
        runs[strategy] = history(out)
        assert ("2 replicas" in result.stdout) == (strategy == "mirrored")
    one, two = runs["default"], runs["mirrored"]
    # Same global batch, data order and initial weights; only the sampling noise is drawn per replica.
    for key in ("loss", "recon", "val_loss"):
        a, b = np.array([float(r[key]) for r in one]), np.array([float(r[key]) for r in two])
        np.testing.assert_allclose(b, a, rtol=0.02, err_msg=key)
    assert float(one[-1]["loss"]) < float(one[0]["loss"])


def test_checkpoint_from_one_device_resumes_mirrored_on_two(images, tmp_path):
    out = tmp_path / "run"
    args = train_args(images, out, "--num_epochs", "3")
    kill_when(args, lambda: (read_state(out) or {}).get("epoch", 0) >= 1)
    state = read_state(out)
    result = run_script("tests/logical_cpus.py", "2", *args, "--strategy", "mirrored")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == f"resuming from epoch {state['epoch'] + 1}, step {state['step']}"
    assert "2 replicas" in result.stdout
    assert [int(r["epoch"]) for r in history(out)] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["strategy"] == "mirrored"
    assert isinstance(keras.saving.load_model(out / "model_best.keras", compile=False), vae.VAE)


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
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, "\n".join(e[-3000:] for _, e in results)
        assert "2 replicas" in stdout
    rows = history(out)
    assert [r["epoch"] for r in rows] == ["1"] and np.isfinite(float(rows[0]["val_loss"]))
    model = keras.saving.load_model(out / "model_best.keras", compile=False)
    assert model.decoder.predict(np.zeros((1, 8), "float32"), verbose=0).shape == (1, 32, 32, 3)
    # The second worker wrote only to its scratch folder, and removed it.
    assert list((tmp_path / "tmp1").iterdir()) == []
