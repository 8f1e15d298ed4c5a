"""Checkpoints that are not today's: those of earlier versions (.weights.h5 files beside models written separately) still
resume and finish, and a damaged one falls back to the one before, as a damaged .keras checkpoint does; so does a
checkpoint whose bytes are intact but do not load into the model."""
import json
import shutil

import keras
import pytest

from vae.training import trainer
from vae.training.trainer import train

from conftest import SIZE, blob_images, epochs_in_history, tiny_config, write_pngs


def as_weights_h5_run(out, epoch):
    """Turn the run in `out` (stopped after `epoch` epochs) into what an earlier version left: the checkpoint as a
    .weights.h5 file with its side file, and model_last/model_best written as models of their own."""
    state = json.loads((out / "state.json").read_text())
    model = keras.saving.load_model(out / state["checkpoint"])  # with its optimizer, as training saved it
    for old in (out / "checkpoints").glob("ckpt-*"):
        old.unlink()
    name = f"checkpoints/ckpt-e{epoch:04d}-s000000.weights.h5"
    model.save_weights(out / name)
    state["checkpoint"] = name
    (out / "state.json").write_text(json.dumps(state))
    (out / name).with_suffix("").with_suffix(".json").write_text(json.dumps(state))
    return state


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """(images, a 2-epoch run stopped right after epoch 1 was checkpointed and published), trained once; tests take copies."""
    root = tmp_path_factory.mktemp("stopped")
    images, out = write_pngs(root / "images", blob_images(40, SIZE)), root / "run"

    def stop(self, epoch, logs):
        original(self, epoch, logs)
        raise KeyboardInterrupt  # as Ctrl-C there would

    original = trainer.Trainer.end_epoch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer.Trainer, "end_epoch", stop)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(images, out))
    return images, out


@pytest.fixture
def stopped_after_one_epoch(stopped_run, tmp_path):
    """(images, a copy of stopped_run)."""
    images, out = stopped_run
    shutil.copytree(out, tmp_path / "run", symlinks=True)
    return images, tmp_path / "run"


def test_a_weights_h5_checkpoint_resumes_and_finishes(stopped_after_one_epoch, capsys):
    images, out = stopped_after_one_epoch
    as_weights_h5_run(out, 1)
    capsys.readouterr()
    train(tiny_config(images, out))
    said = capsys.readouterr().out
    assert "resuming from epoch 2, step 0" in said
    assert epochs_in_history(out) == [1, 2]
    assert json.loads((out / "state.json").read_text())["finished"] == "trained 2 epochs"
    assert (out / "model_last.keras").exists()


def test_a_damaged_weights_h5_checkpoint_falls_back_to_the_one_before(stopped_after_one_epoch, capsys):
    images, out = stopped_after_one_epoch
    state = as_weights_h5_run(out, 1)
    newest = out / "checkpoints/ckpt-e0002-s000003.weights.h5"
    newest.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # the HDF5 signature, then nothing that reads
    newer = {**state, "epoch": 1, "step": 3, "checkpoint": f"checkpoints/{newest.name}"}
    (out / "state.json").write_text(json.dumps(newer))
    capsys.readouterr()
    train(tiny_config(images, out))
    said = capsys.readouterr().out
    assert f"checkpoint {newest.name} is damaged" in said and "ckpt-e0001-s000000.weights.h5" in said
    assert "resuming from epoch 2, step 0" in said
    assert epochs_in_history(out) == [1, 2]


def test_an_intact_checkpoint_that_does_not_load_falls_back_to_the_one_before(stopped_after_one_epoch, tmp_path, capsys):
    from vae.model.vae import VAE

    images, out = stopped_after_one_epoch
    newest = out / json.loads((out / "state.json").read_text())["checkpoint"]
    other = VAE(image_size=SIZE, latent_dim=3, width=8, seed=0)  # passes every checksum, fits no weight of this run
    other.save(tmp_path / "other.keras")
    newest.write_bytes((tmp_path / "other.keras").read_bytes())
    capsys.readouterr()
    train(tiny_config(images, out))
    said = capsys.readouterr().out
    assert f"warning: checkpoint {newest.name} does not load into the model" in said
    assert "resuming from the one before it, ckpt-e0000-s000000.keras" in said and "resuming from epoch 1, step 0" in said
    assert epochs_in_history(out) == [1, 2]
