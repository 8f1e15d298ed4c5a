"""Training that survives: resume after SIGKILL, the non-finite guard, logs, schedules and stopping rules."""
import csv
import hashlib
import json
import random
import time

import keras
import numpy as np
import pytest

import vae.model
from vae.cli import run
from vae.config import Config
from vae.errors import UserError
from vae.training.trainer import finish_reason, train

from conftest import MAIN, TINY, blob_images, kill_when, read_state, run_script, write_pngs


def tiny_config(data, out, **overrides):
    values = dict(data=str(data), out=str(out), image_size=32, width=8, latent_dim=8, batch_size=8,
                  num_epochs=2, val_split=0.2, lr_warmup_steps=5, save_every_steps=0)
    return Config(**{**values, **overrides}).validate()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def epochs_in_history(run):
    return [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))]


def progressed(out, since, delay):
    """A kill_when() condition: the run checkpointed past `since` (epoch, step), then `delay` seconds went by."""
    seen = {}

    def ready():
        state = read_state(out)
        if state is None or (state["epoch"], state["step"]) <= since:
            return None
        seen.setdefault("at", time.monotonic())
        return state if time.monotonic() >= seen["at"] + delay else None
    return ready


@pytest.mark.slow
def test_killed_at_five_random_moments_the_run_ends_whole(tmp_path):
    images = write_pngs(tmp_path / "images", blob_images(400, 32))
    out = tmp_path / "run"
    command = ["train.py", "--data", images, "--out", out, "--num_epochs", "5", "--val_split", "0.1",
               "--save_every_steps", "5", *TINY]
    rng = random.Random(0)
    since = (-1, 0)
    for kill in range(5):
        if kill == 1:  # during a checkpoint write: its temporary file is there
            kill_when(command, lambda: any(out.glob("checkpoints/.partial-*")))
        else:
            kill_when(command, progressed(out, since, delay=rng.uniform(0.0, 1.0)))
        state = read_state(out)
        since = (state["epoch"], state["step"])
    assert state["epoch"] < 5, "the kills came too late to test anything"
    checkpoint = out / state["checkpoint"]
    before = sha(checkpoint)

    # A rate that diverges: clear message, no traceback, checkpoint untouched, a model that loads.
    diverged = run_script(*command, "--learning_rate", "1000")
    assert diverged.returncode == 2
    assert diverged.stdout.splitlines()[0] == f"resuming from epoch {state['epoch'] + 1}, step {state['step']}"
    assert "likely too high" in diverged.stderr and state["checkpoint"] in diverged.stderr
    assert "Traceback" not in diverged.stderr and len(diverged.stderr.strip().splitlines()) == 1
    assert sha(checkpoint) == before and read_state(out)["checkpoint"] == state["checkpoint"]
    assert isinstance(keras.saving.load_model(out / "model_last.keras", compile=False), vae.model.VAE)

    # The same command again resumes from that checkpoint and finishes: each epoch once, all its outputs, no leftovers.
    resumed = run_script(*command)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == f"resuming from epoch {state['epoch'] + 1}, step {state['step']}"
    assert epochs_in_history(out) == list(range(1, 6))
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len({r["steps"] for r in rows}) == 1  # a resumed epoch counts its steps to the end of the epoch
    for epoch in range(1, 6):
        assert ((out / "samples" / f"epoch_{epoch:03d}.png").is_file()
                and (out / "reconstructions" / f"epoch_{epoch:03d}.png").is_file())
    assert list(out.rglob(".partial-*")) == []
    model = keras.saving.load_model(out / "model_best.keras")
    assert model.decoder.predict(np.zeros((1, 8), "float32"), verbose=0).shape == (1, 32, 32, 3)


def test_learning_rate_1000_from_scratch_fails_cleanly_with_a_loadable_model(tmp_path, capsys):
    images = write_pngs(tmp_path / "images", blob_images(80, 32))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit:
        run(MAIN["train"], [str(a) for a in ["--data", images, "--out", out, "--num_epochs", "3",
                                             "--learning_rate", "1000", *TINY]])
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    # Either guard may stop it first: non-finite steps, or a finite validation loss ten times the untrained one.
    assert "NaN" in lines[0] or "validation loss is" in lines[0]
    assert "learning rate 1000 is likely too high" in lines[0] and "--learning_rate 0.001" in lines[0]
    model = keras.saving.load_model(out / "model_last.keras", compile=False)
    faces = model.decoder.predict(np.zeros((2, 8), "float32"), verbose=0)
    assert np.isfinite(faces).all()


def read_events(logdir):
    """{tag: number of values} of scalar and image summaries in a TensorBoard log folder."""
    import tensorflow as tf

    found = {}
    for path in logdir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                kind = value.metadata.plugin_data.plugin_name
                found.setdefault((value.tag, kind), []).append(event.step)
    return found


def test_tensorboard_plot_history_and_kl_warmup(tmp_path, image_folder):
    out = tmp_path / "run"
    train(tiny_config(image_folder, out, num_epochs=3, kl_warmup_epochs=2, beta=1.0))
    events = read_events(out / "logs")
    for tag in ["loss", "recon", "kl", "beta", "learning_rate", "val_active_units", "images_per_second", "val_psnr"]:
        assert events[(tag, "scalars")] == [1, 2, 3], tag
    assert events[("samples", "images")] == [1, 2, 3]
    assert events[("reconstructions", "images")] == [1, 2, 3]
    rows = list(csv.DictReader(open(out / "history.csv")))
    betas = [float(r["beta"]) for r in rows]
    assert betas[0] < betas[1] < 1.0 and betas[2] == pytest.approx(1.0)  # 2 warm-up epochs, averaged per epoch
    assert all(0 <= float(r["val_active_units"]) <= 8 for r in rows)
    from PIL import Image

    curve = np.asarray(Image.open(out / "loss_curve.png"))
    assert curve.shape[1] > 1000 and curve.std() > 10


def test_cosine_schedule_warms_up_then_decays(tmp_path, image_folder):
    out = tmp_path / "run"
    train(tiny_config(image_folder, out, num_epochs=3, lr_schedule="cosine", learning_rate=1e-2, lr_warmup_steps=4))
    rates = [float(r["learning_rate"]) for r in csv.DictReader(open(out / "history.csv"))]
    # 32 training images / 8 = 4 steps per epoch: the peak right after warm-up, then down to 0 at the end.
    assert rates[0] == pytest.approx(1e-2, rel=1e-3)
    assert rates[0] > rates[1] > rates[2] and rates[2] == pytest.approx(0.0, abs=1e-6)


def test_time_budget_stops_after_a_step_and_saves(tmp_path, image_folder):
    out = tmp_path / "run"
    train(tiny_config(image_folder, out, num_epochs=50, max_minutes=1e-6))
    state = json.loads((out / "state.json").read_text())
    assert state["finished"].startswith("time budget")
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 1 and int(rows[0]["steps"]) == 1
    assert (out / "model_best.keras").exists() and (out / "samples" / "epoch_001.png").exists()


def test_resume_refuses_other_settings_and_overwrite_starts_over(tmp_path, image_folder):
    out = tmp_path / "run"
    train(tiny_config(image_folder, out, num_epochs=1))
    with pytest.raises(UserError, match="finished run"):
        train(tiny_config(image_folder, out, num_epochs=1))
    (out / "notes.txt").write_text("mine")
    train(tiny_config(image_folder, out, num_epochs=2), overwrite=True)
    assert epochs_in_history(out) == [1, 2] and (out / "notes.txt").read_text() == "mine"
    state = json.loads((out / "state.json").read_text())
    state["finished"] = None
    (out / "state.json").write_text(json.dumps(state))
    with pytest.raises(UserError, match="--latent_dim 8 -> 16"):
        train(tiny_config(image_folder, out, num_epochs=2, latent_dim=16))


def test_out_folder_that_is_not_a_run_is_refused(tmp_path, image_folder):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not a run folder"):
        train(tiny_config(image_folder, tmp_path / "stuff"))


def test_finish_reason_early_stopping():
    cfg = Config(num_epochs=100, early_stopping=2)
    history = [{"val_loss": v} for v in [10.0, 8.0, 9.0]]
    assert finish_reason(cfg, history, epoch=2, budget_spent=False) is None
    history.append({"val_loss": 8.5})
    assert "early stopping" in finish_reason(cfg, history, epoch=3, budget_spent=False)
    assert finish_reason(Config(num_epochs=4), history, epoch=3, budget_spent=False) == "trained 4 epochs"


def test_a_failed_start_does_not_block_the_folder(tmp_path, image_folder):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="does not exist"):
        train(tiny_config(tmp_path / "missing", out))
    train(tiny_config(image_folder, out, num_epochs=1))
    assert epochs_in_history(out) == [1]
