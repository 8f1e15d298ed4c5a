"""The run folder is its user's database: one trainer, nothing replaced silently, damaged files named, checkpoints that
survive their own corruption, and no leftovers of the dead."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vae.config import Config, add_config_flags, config_from_args
from vae.errors import UserError
from vae.files import HOST
from vae.run import Run
from vae.training import trainer
from vae.training.trainer import train

from conftest import ROOT, TINY, blob_images, epochs_in_history, sha, tiny_config, write_pngs


def resume(cfg, overwrite=False) -> dict:
    """What train.py does up to its first step: take the folder, check it, load the checkpoint; the state it resumes."""
    run = trainer.Trainer(cfg)
    try:
        run.start(overwrite)
        return run.state
    finally:
        run.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_pngs(tmp_path_factory.mktemp("faces") / "images", blob_images(40, 32))


@pytest.fixture(scope="module")
def finished_run(images, tmp_path_factory):
    """A finished 2-epoch run, trained once for the module; tests take copies."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(images, out))
    return out


@pytest.fixture(scope="module")
def crashed_run(images, tmp_path_factory):
    """A 2-epoch run that died right after epoch 1's checkpoint, before anything else of that epoch was written."""
    out = tmp_path_factory.mktemp("crashed") / "run"

    def die(self, row, catching_up=False):
        raise KeyboardInterrupt  # as a kill would: the checkpoint is on disk, the grids and history are not

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer.Trainer, "publish_epoch", die)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(images, out))
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 0 and not (out / "samples" / "epoch_001.png").exists()
    return out


@pytest.fixture
def crashed_after_epoch_1(images, crashed_run, tmp_path):
    """(images, a copy of crashed_run)."""
    shutil.copytree(crashed_run, tmp_path / "run", symlinks=True)
    return images, tmp_path / "run"


def test_a_second_trainer_is_refused_with_the_holder_named(crashed_after_epoch_1):
    images, out = crashed_after_epoch_1
    holder = Run(out)
    holder.lock()  # this process, through another descriptor: the lock is per open file, like another process's
    try:
        with pytest.raises(UserError, match=rf"in use: train.py is training it by process {os.getpid()} on .*, started 20"):
            train(tiny_config(images, out))
    finally:
        holder.unlock()
    assert resume(tiny_config(images, out))["epoch"] == 1  # released: the next trainer gets it


@pytest.mark.slow
def test_two_trainers_started_together_exactly_one_trains(tmp_path):
    images = write_pngs(tmp_path / "images", blob_images(40, 32))
    out = tmp_path / "run"
    command = [sys.executable, "train.py", "--data", str(images), "--out", str(out),
               "--num_epochs", "2", "--val_split", "0.2", *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    winner = next(p for p, (code, _, _) in zip(procs, results) if code == 0)
    assert loser == f"error: {out} is in use: train.py is training it by process {winner.pid} on " + loser.split(" on ", 1)[1]
    assert len(loser.splitlines()) == 1 and "started 20" in loser
    assert epochs_in_history(out) == [1, 2]


@pytest.mark.parametrize("damage", ["deleted", "null"])
def test_a_trained_folder_without_readable_state_is_never_retrained_silently(finished_run, images, tmp_path, damage):
    out = shutil.copytree(finished_run, tmp_path / "run")
    if damage == "deleted":
        (out / "state.json").unlink()
    else:
        (out / "state.json").write_text("null")
    kept = {name: sha(out / name) for name in ("model_best.keras", "history.csv", "config.json")}
    with pytest.raises(UserError, match="holds a trained model but no state.json .* pass --overwrite"):
        train(tiny_config(images, out, latent_dim=16))
    assert {name: sha(out / name) for name in kept} == kept
    assert resume(tiny_config(images, out, latent_dim=16), overwrite=True)["epoch"] == 0
    assert json.loads((out / "config.json").read_text())["latent_dim"] == 16 and not (out / "history.csv").exists()


@pytest.mark.parametrize("file, content, match", [
    ("state.json", '{"epoch": "one"', "state.json is damaged"),
    ("state.json", '{"epoch": "one", "step": 0, "checkpoint": "c", "history": [], "best_val_loss": null, '
                   '"untrained_probe_loss": 1.0}', "state.json is damaged: epoch is \"one\""),
    ("state.json", '[1, 2]', "state.json is damaged: it holds a list"),
    ("config.json", '{"latent_dim": "8"}', "config.json is damaged: latent_dim is \"8\", not of type int"),
    ("config.json", '{"beta": true}', "config.json is damaged: beta is true, not of type int or float"),
    ("config.json", '{"image_size": 48}', "config.json is damaged: --image_size 48 is not a power of two"),
    ("config.json", 'garbage', "config.json cannot be read"),
])
def test_damaged_state_or_config_is_named_with_its_field(crashed_after_epoch_1, file, content, match):
    images, out = crashed_after_epoch_1
    (out / file).write_text(content)
    with pytest.raises(UserError, match=match):
        train(tiny_config(images, out))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "deleted"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(crashed_after_epoch_1, capsys, damage):
    images, out = crashed_after_epoch_1
    newest = out / "checkpoints" / "ckpt-e0001-s000000.keras"
    assert sorted(p.name for p in (out / "checkpoints").glob("*.keras")) == ["ckpt-e0000-s000000.keras", newest.name]
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    elif damage == "garbage":
        newest.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    else:
        newest.unlink()
    capsys.readouterr()
    state = resume(tiny_config(images, out))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"warning: checkpoint {newest.name} is {'missing' if damage == 'deleted' else 'damaged'}")
    assert lines[0].endswith("resuming from the one before it, ckpt-e0000-s000000.keras")
    assert lines[1] == "resuming from epoch 1, step 0"
    assert state["epoch"] == 0 and state["checkpoint"] == "checkpoints/ckpt-e0000-s000000.keras"


def test_all_checkpoints_damaged_is_one_clear_error(crashed_after_epoch_1):
    images, out = crashed_after_epoch_1
    for checkpoint in (out / "checkpoints").glob("*.keras"):
        checkpoint.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UserError, match=r"no intact checkpoint in .*checkpoints.*pass --overwrite"):
        train(tiny_config(images, out))


def test_resume_writes_what_a_kill_cut_short_and_removes_dead_writers_files(crashed_after_epoch_1):
    images, out = crashed_after_epoch_1
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    leftovers = {
        "dead": out / f".partial-{dead.pid}-{HOST}-model_best.keras",
        "dead, in checkpoints": out / "checkpoints" / f".partial-{dead.pid}-{HOST}-ckpt-e0001-s000005.keras",
        "this process's id, left by an earlier one": out / "samples" / f".partial-{os.getpid()}-{HOST}-epoch_002.png",
        "alive": out / f".partial-{os.getppid()}-{HOST}-history.csv",
        "another host's": out / f".partial-{dead.pid}-0123abcd-model_last.keras",
    }
    for path in leftovers.values():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    train(tiny_config(images, out))
    assert {name for name, path in leftovers.items() if path.exists()} == {"alive", "another host's"}
    # Epoch 1's outputs, lost with the kill, were written on resume from its checkpoint.
    for name in ("samples/epoch_001.png", "reconstructions/epoch_001.png", "samples/epoch_002.png", "model_last.keras"):
        assert (out / name).is_file(), name
    assert epochs_in_history(out) == [1, 2]


def test_model_files_are_the_checkpoints_bytes_not_a_second_write(finished_run):
    out = finished_run
    state = json.loads((out / "state.json").read_text())
    last = out / state["checkpoint"]
    assert os.path.samefile(out / "model_last.keras", last)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "ckpt-e0001-s000000.json", "ckpt-e0001-s000000.keras", "ckpt-e0002-s000000.json", "ckpt-e0002-s000000.keras"]
    assert not list(out.rglob(".partial-*")) and (out / "train.lock").exists()


def test_data_and_out_are_stored_absolute_and_spellings_of_one_folder_match(tmp_path, image_folder, monkeypatch):
    from vae.cli import make_parser

    monkeypatch.chdir(image_folder.parent)
    parser = make_parser("train")
    add_config_flags(parser)
    cfg = config_from_args(parser.parse_args(["--data", image_folder.name, "--out", "runs/x"]))
    assert cfg.data == str(image_folder.resolve()) and cfg.out == str((image_folder.parent / "runs" / "x").resolve())
    other = config_from_args(parser.parse_args(["--data", f"./{image_folder.name}/", "--out", "runs/x"]))
    assert cfg.changed_settings(other) == []
    relative_then = Config(data=image_folder.name)  # config.json of an earlier version, stored as typed
    assert cfg.changed_settings(relative_then) == []
    assert cfg.changed_settings(config_from_args(parser.parse_args(["--data", str(tmp_path)]))) == ["data"]


def test_a_run_saved_before_a_setting_existed_keeps_what_it_used(crashed_after_epoch_1):
    images, out = crashed_after_epoch_1
    saved = json.loads((out / "config.json").read_text())
    del saved["bn_momentum"]
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"other settings \(--bn_momentum 0.99 -> 0.9\)"):
        train(tiny_config(images, out))
    assert Config.load(out / "config.json").bn_momentum == 0.99
    assert Config.load(out / "config.json").latent_dim == saved["latent_dim"]
