"""A training run killed with SIGKILL at three moments, two random and one during a checkpoint write, ends whole."""
import csv
import random
import time

import keras
import numpy as np
import pytest

import vae.model
from vae.cli import invoke

from conftest import MAIN, SIZE, TINY, blob_images, cli, epochs_in_history, kill_when, read_state, sha, write_pngs


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
def test_killed_at_three_moments_the_run_ends_whole(tmp_path, capsys):
    images = write_pngs(tmp_path / "images", blob_images(400, SIZE))
    out = tmp_path / "run"
    command = ["train.py", "--data", images, "--out", out, "--num_epochs", "2", "--val_split", "0.1",
               "--save_every_steps", "5", *TINY]
    rng = random.Random(0)
    since = (-1, 0)
    for kill in range(3):  # each a fresh train.py, whose start is most of this test's time
        if kill == 1:  # during a checkpoint write: its temporary file is there
            kill_when(command, lambda: any(out.glob("checkpoints/.partial-*")))
        else:
            kill_when(command, progressed(out, since, delay=rng.uniform(0.0, 1.0)))
        state = read_state(out)
        since = (state["epoch"], state["step"])
    assert state["epoch"] < 2, "the kills came too late to test anything"
    checkpoint = out / state["checkpoint"]
    before = sha(checkpoint)

    # A rate that diverges: clear message, no traceback, checkpoint untouched, a model that loads. The reruns need no
    # fresh process (the kills were the point of those), so they run in this one, as invoke() runs train.py's main.
    args = [str(a) for a in command[1:]]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN["train"], [*args, "--learning_rate", "1000"])
    diverged = capsys.readouterr()
    assert exit.value.code == 2
    assert diverged.out.splitlines()[0] == f"resuming from epoch {state['epoch'] + 1}, step {state['step']}"
    assert "likely too high" in diverged.err and state["checkpoint"] in diverged.err
    assert "Traceback" not in diverged.err and len(diverged.err.strip().splitlines()) == 1
    assert sha(checkpoint) == before and read_state(out)["checkpoint"] == state["checkpoint"]
    assert isinstance(keras.saving.load_model(out / "model_last.keras", compile=False), vae.model.VAE)

    # The same command again resumes from that checkpoint and finishes: each epoch once, all its outputs, no leftovers.
    resumed, _ = cli(capsys, "train", *args)
    assert resumed.splitlines()[0] == f"resuming from epoch {state['epoch'] + 1}, step {state['step']}"
    assert epochs_in_history(out) == [1, 2]
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len({r["steps"] for r in rows}) == 1  # a resumed epoch counts its steps to the end of the epoch
    for epoch in (1, 2):
        assert ((out / "samples" / f"epoch_{epoch:03d}.png").is_file()
                and (out / "reconstructions" / f"epoch_{epoch:03d}.png").is_file())
    assert list(out.rglob(".partial-*")) == []
    model = keras.saving.load_model(out / "model_best.keras")
    assert model.decoder.predict(np.zeros((1, 8), "float32"), verbose=0).shape == (1, SIZE, SIZE, 3)
