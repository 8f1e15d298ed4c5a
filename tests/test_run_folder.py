"""The run folder is its user's database: one trainer, nothing replaced silently, damaged files named, checkpoints that
survive their own corruption, and no leftovers of the dead."""
import csv
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from vae.config import Config, add_config_flags, config_from_args
from vae.errors import UserError
from vae.files import HOST, FolderLock
from vae.run import Run
from vae.training import trainer
from vae.training.trainer import train

from conftest import (
    ROOT,
    SIZE,
    TINY,
    blob_images,
    epochs_in_history,
    in_process_probe,
    run_script,
    sha,
    started,
    tiny_config,
    write_pngs,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_pngs(tmp_path_factory.mktemp("faces") / "images", blob_images(40, SIZE))


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
    assert started(tiny_config(images, out))["epoch"] == 1  # released: the next trainer gets it


def test_a_holder_that_has_not_written_its_record_yet_is_still_named(tmp_path):
    """Two trainers started together: the loser can read the lock file in the instant between the winner's lock and
    its record; it reads again rather than name "another process"."""
    holder = FolderLock(tmp_path / "run" / ".lock")
    holder.acquire("train.py is training it")
    try:
        record = holder.path.read_bytes()
        holder.path.write_bytes(b"")
        threading.Timer(0.3, holder.path.write_bytes, [record]).start()
        with pytest.raises(UserError, match=rf"in use: x by process {os.getpid()} on {socket.gethostname()}, started 20"):
            FolderLock(holder.path).acquire("x")
        holder.path.write_bytes(b"")  # a record that never comes: the message still has its one line
        with pytest.raises(UserError, match=r"in use: x by another process; wait for it to end"):
            FolderLock(holder.path).acquire("x")
    finally:
        holder.release()


def test_a_trainer_that_checks_while_the_holder_writes_its_manifest_is_told_who_holds_it(images, tmp_path):
    """The other side of two trainers started together: the folder can hold the holder's lock and the temporary file of
    its first manifest, and nothing else yet; that is a run being started, not a folder of someone else's files."""
    out = tmp_path / "run"
    holder = Run(out)
    holder.lock()
    try:
        (out / f".partial-{os.getpid()}-{HOST}-manifest.json").write_text("{")
        with pytest.raises(UserError, match=rf"in use: train.py is training it by process {os.getpid()} on "):
            Run(out).start(tiny_config(images, out), overwrite=False)
    finally:
        holder.unlock()


def test_a_second_train_py_is_refused_before_tensorflow_loads(images, tmp_path):
    out = tmp_path / "run"
    holder = Run(out)
    holder.lock()
    try:
        result = run_script("-c", in_process_probe(["train.py", "--data", str(images), "--out", str(out), *TINY]))
    finally:
        holder.unlock()
    assert result.stdout == "exit 2, tensorflow loaded: False\n", result.stderr
    assert result.stderr.startswith(f"error: {out} is in use: train.py is training it by process {os.getpid()} on ")


@pytest.mark.slow
def test_two_trainers_started_together_exactly_one_trains(tmp_path):
    images = write_pngs(tmp_path / "images", blob_images(40, SIZE))
    out = tmp_path / "run"
    command = [sys.executable, "train.py", "--data", str(images), "--out", str(out),
               "--num_epochs", "1", "--val_split", "0.2", *TINY]
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
    assert epochs_in_history(out) == [1]


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
    assert started(tiny_config(images, out, latent_dim=16), overwrite=True)["epoch"] == 0
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
    state = started(tiny_config(images, out))
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
    del saved["bn_momentum"], saved["frequency_weight"]
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"other settings \(--bn_momentum 0.99 -> 0.9, --frequency_weight 0.0 -> 4.0\)"):
        train(tiny_config(images, out))
    assert (Config.load(out / "config.json").bn_momentum, Config.load(out / "config.json").frequency_weight) == (0.99, 0)
    assert Config.load(out / "config.json").latent_dim == saved["latent_dim"]


def files_of(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_removes_what_the_run_wrote_and_nothing_else(finished_run, images, tmp_path, capsys):
    out = shutil.copytree(finished_run, tmp_path / "run")
    mine = {"logs/app.log": b"my own log", "evaluation/results.csv": b"a,b\n1,2\n", "samples/favourite.png": b"x",
            "notes.txt": b"mine"}
    for name, data in mine.items():
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(data)
    written = json.loads((out / "manifest.json").read_text())["written"]
    assert {"config.json", "state.json", "model_best.keras", "model_best.gmm.npz", "samples/epoch_002.png",
            "checkpoints/ckpt-e0002-s000000.keras", "history.csv", "split.json"} <= set(written)
    assert any(n.startswith("logs/events.out.tfevents.") for n in written)
    capsys.readouterr()
    started(tiny_config(images, out, latent_dim=16), overwrite=True)
    assert "--overwrite kept 4 files train.py did not write: evaluation/results.csv, logs/app.log, notes.txt" in (
        capsys.readouterr().err)
    assert {name: (out / name).read_bytes() for name in mine} == mine
    assert not (out / "model_best.keras").exists() and not (out / "samples" / "epoch_001.png").exists()
    assert not (out / "reconstructions").exists()  # emptied, so removed; samples/ holds the user's file


@pytest.mark.parametrize("contents", [["logs/app.log", "evaluation/results.csv"], ["config.json", "history.csv"]])
def test_a_folder_train_py_did_not_write_survives_overwrite(images, tmp_path, contents):
    out = tmp_path / "theirs"
    for name in contents:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("{}" if name.endswith(".json") else "theirs")
    before = files_of(out)
    with pytest.raises(UserError, match=rf"--overwrite: {out} is not a run folder of train.py .* it holds "
                                        rf"{contents[1] if contents[0] > contents[1] else contents[0]}"):
        train(tiny_config(images, out), overwrite=True)
    assert files_of(out) == before


def test_overwrite_of_an_earlier_versions_run_removes_only_what_that_version_wrote(finished_run, images, tmp_path):
    out = shutil.copytree(finished_run, tmp_path / "run")
    (out / "manifest.json").unlink()  # runs of earlier versions kept none
    (out / "logs" / "app.log").write_text("mine")
    started(tiny_config(images, out), overwrite=True)
    assert (out / "logs" / "app.log").read_text() == "mine" and not (out / "history.csv").exists()
    assert not list(out.glob("checkpoints/ckpt-e0002*")) and not list(out.glob("logs/events.out.tfevents.*"))[1:]


def test_a_run_stopped_while_fitting_the_mixture_is_completed_by_the_rerun(images, tmp_path, capsys):
    from vae.priors import GaussianMixture

    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GaussianMixture, "fit", classmethod(lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)))
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(images, out))
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] == "trained 2 epochs" and not state["complete"] and not (out / "model_best.gmm.npz").exists()
    history = (out / "history.csv").read_bytes()
    capsys.readouterr()
    train(tiny_config(images, out))
    assert "fitting the gmm prior of sample.py" in capsys.readouterr().out
    assert (out / "model_best.gmm.npz").exists() and json.loads((out / "state.json").read_text())["complete"]
    assert (out / "history.csv").read_bytes() == history  # no epoch trained again
    with pytest.raises(UserError, match="holds a finished run .* pass a larger --num_epochs or --max_minutes"):
        train(tiny_config(images, out))


def test_a_larger_num_epochs_extends_a_finished_run_with_a_warm_restart(finished_run, images, tmp_path, capsys):
    out = shutil.copytree(finished_run, tmp_path / "run")
    first = list(csv.DictReader(open(out / "history.csv")))
    old_prior = (out / "model_best.gmm.npz").read_bytes()
    capsys.readouterr()
    train(tiny_config(images, out, num_epochs=4))
    said = capsys.readouterr().out
    assert "extending the finished run (trained 2 epochs): the learning rate warms up and decays again" in said
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4] and rows[:2] == first
    rates = [float(r["learning_rate"]) for r in rows]
    # Cosine to 0 at the end of each cycle; the new one rises again (the tiny config's warm-up outlasts its steps).
    assert rates[1] == pytest.approx(0.0, abs=1e-6) and rates[2] > 0.1 * rates[0] and rates[3] == pytest.approx(0.0, abs=1e-6)
    assert (out / "samples" / "epoch_004.png").exists()
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] == "trained 4 epochs" and state["complete"] and state["cycle_step"] > 0
    # The mixture is model_best's: fitted again only if the added epochs gave a better model.
    improved = state["best_val_loss"] < min(float(r["val_loss"]) for r in first)
    assert ((out / "model_best.gmm.npz").read_bytes() != old_prior) == improved


@pytest.mark.parametrize("change", ["added", "removed"])
def test_a_changed_data_folder_is_refused_on_resume_with_the_differences(crashed_run, images, tmp_path, change):
    data = shutil.copytree(images, tmp_path / "images")
    out = shutil.copytree(crashed_run, tmp_path / "run", symlinks=True)
    dataclasses.replace(Config.load(out / "config.json"), data=str(data), out=str(out)).save(out / "config.json")
    state = json.loads((out / "state.json").read_text())
    if change == "added":
        write_pngs(data / "new", blob_images(2, SIZE, seed=9))
        expected = r"2 files added \(new/"
    else:
        (data / sorted(p.name for p in data.iterdir())[0]).unlink()
        expected = r"1 files removed \("
    before = files_of(out)
    with pytest.raises(UserError, match=rf"the data folder {data} changed since the run trained on it: {expected}.*put it back"):
        train(tiny_config(data, out))
    after = files_of(out)
    assert after.pop("train.lock") and after == {k: v for k, v in before.items() if k != "train.lock"} and state["data_files"]
