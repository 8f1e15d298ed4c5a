"""Training that survives: resume after SIGKILL, the non-finite guard, logs, schedules and stopping rules."""
import csv
import json

import keras
import numpy as np
import pytest

from vae.cli import invoke
from vae.config import Config
from vae.errors import UserError
from vae.training import trainer
from vae.training.trainer import train

from conftest import MAIN, SIZE, TINY, blob_images, started, tiny_config, write_pngs


def test_learning_rate_1000_from_scratch_fails_cleanly_with_a_loadable_model(tmp_path, capsys):
    images = write_pngs(tmp_path / "images", blob_images(80, SIZE))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN["train"], [str(a) for a in ["--data", images, "--out", out, "--num_epochs", "3",
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


def test_tensorboard_plot_history_kl_warmup_and_the_cosine_schedule(tmp_path, image_folder, monkeypatch, capsys):
    out = tmp_path / "run"
    plot, drawn = trainer.plot_history, []
    monkeypatch.setattr(trainer, "plot_history", lambda history, path: drawn.append(len(history)) or plot(history, path))
    train(tiny_config(image_folder, out, num_epochs=3, kl_warmup_epochs=2, beta=1.0, lr_schedule="cosine", learning_rate=1e-2,
                      lr_warmup_steps=4))
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

    # Epochs of a second: the curve is drawn once, at the end, and the log says why once.
    assert drawn == [3] and capsys.readouterr().out.count("note: epochs are short") == 1
    curve = np.asarray(Image.open(out / "loss_curve.png"))
    assert curve.shape[1] > 1000 and curve.std() > 10
    rates = [float(r["learning_rate"]) for r in rows]
    # 32 training images / 8 = 4 steps per epoch: the peak right after warm-up, then down to 0 at the end.
    assert rates[0] == pytest.approx(1e-2, rel=1e-3)
    assert rates[0] > rates[1] > rates[2] and rates[2] == pytest.approx(0.0, abs=1e-6)


def test_the_loss_curve_labels_a_curve_that_barely_moves_with_its_values():
    from vae.training.reporting import loss_curve_figure

    # A PSNR from 10.6001 to 10.6003 dB: matplotlib's default ticks read 0.000075 to 0.000325 under an offset of 10.6.
    rows = [dict(epoch=e, loss=342.6, recon=175.3, kl=7.2, val_loss=342.9, val_recon=175.4, val_kl=7.3,
                 val_psnr=10.6 + 1e-4 * e) for e in (1, 2, 3)]
    for ax in loss_curve_figure(rows).axes:
        labels = [float(t.get_text().replace("\u2212", "-")) for t in ax.get_yticklabels()]
        low, high = ax.get_ylim()
        assert len(labels) >= 2 and all(abs(v - (low + high) / 2) < 1 for v in labels), (ax.get_title(), labels)


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
    state = started(tiny_config(image_folder, out, num_epochs=2), overwrite=True)
    assert (state["epoch"], state["history"], state["finished"]) == (0, [], None)
    assert not (out / "history.csv").exists() and not (out / "model_best.keras").exists()  # the run's own files: gone
    assert (out / "notes.txt").read_text() == "mine"  # the user's: kept
    with pytest.raises(UserError, match="--latent_dim 8 -> 16"):  # the unfinished run just started over
        train(tiny_config(image_folder, out, num_epochs=2, latent_dim=16))


def test_out_folder_that_is_not_a_run_is_refused(tmp_path, image_folder):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not a run folder"):
        train(tiny_config(image_folder, tmp_path / "stuff"))


def test_finish_reason_early_stopping():
    from vae.run import TrainState

    cfg = Config(num_epochs=100, early_stopping=2)
    state = TrainState(epoch=3, step=0, checkpoint="", history=[{"val_loss": v} for v in [10.0, 8.0, 9.0]],
                       best_val_loss=8.0, untrained_probe_loss=1.0)
    assert state.finish_reason(cfg, budget_spent=False) is None
    state.end_epoch({"epoch": 4, "val_loss": 8.5})
    assert state.best_val_loss == 8.0 and (state.epoch, state.step) == (4, 0)
    assert "early stopping" in state.finish_reason(cfg, budget_spent=False)
    assert state.finish_reason(Config(num_epochs=4), budget_spent=False) == "trained 4 epochs"
    budget = Config(num_epochs=9, max_minutes=2)
    assert state.finish_reason(budget, budget_spent=True) == "time budget of 2 minutes spent in epoch 4"


def test_a_failed_start_does_not_block_the_folder(tmp_path, image_folder):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="does not exist"):
        train(tiny_config(tmp_path / "missing", out))
    assert started(tiny_config(image_folder, out, num_epochs=1))["epoch"] == 0  # the next trainer takes the folder
