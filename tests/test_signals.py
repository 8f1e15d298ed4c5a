"""SIGTERM and SIGINT during training: the step in progress finishes, a checkpoint is written, one line says where, the
process exits promptly, and the rerun resumes from that step with each epoch in the history exactly once."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SIZE, TINY, blob_images, cli, epochs_in_history, read_state, write_pngs


def in_epoch_2(state) -> bool:
    """Epoch 1 done and a step checkpoint of epoch 2 written."""
    return state is not None and state["epoch"] >= 1 and state["step"] > 0


@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_that_step_and_the_rerun_resumes_it(tmp_path, capsys):
    sig = signal.SIGTERM  # SIGINT takes the same path (StopOnSignal handles both)
    # 90 steps an epoch, signalled as soon as epoch 2's first step checkpoint (at step 100 of the run, 10 of the epoch) is
    # on disk: 80 steps to spare, where an epoch of 135 steps ended within a fixed 0.5 s wait at 16 px.
    images = write_pngs(tmp_path / "images", blob_images(800, SIZE))
    out = tmp_path / "run"
    args = ["train.py", "--data", images, "--out", out, "--num_epochs", "50", "--val_split", "0.1", "--save_every_steps", "50",
            *TINY]
    # TensorFlow's log level 0 asks for everything it logs: the one level where its quiet has to be enforced.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "0"}
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not in_epoch_2(read_state(out)):
        time.sleep(0.01)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    seconds = time.monotonic() - sent
    assert proc.returncode == 128 + sig, err
    line = err.strip().splitlines()[-1]
    assert err == line + "\n", err  # a real train.py's stderr: that line and nothing else, even at TensorFlow's level 0
    assert line.startswith(f"stopped by {sig.name} at epoch ") and line.endswith("; rerun to resume"), err
    assert seconds < 10, seconds  # well inside Kubernetes' 30 s grace period
    state = json.loads((out / "state.json").read_text())
    epoch, step = int(line.split("at epoch ")[1].split(",")[0]), int(line.split("step ")[1].split(";")[0])
    assert (state["epoch"] + 1, state["step"]) == (epoch, step) and 10 <= step < 90
    assert epochs_in_history(out) == list(range(1, epoch))

    # The same command resumes (told to end with the epoch it was stopped in: --num_epochs may change on resume), in
    # this process: a rerun needs no fresh one.
    rerun, _ = cli(capsys, "train", *args[1:], "--num_epochs", epoch)
    assert f"resuming from epoch {epoch}, step {step}" in rerun
    assert epochs_in_history(out) == list(range(1, epoch + 1))  # each epoch once, none lost


def test_the_handlers_are_those_of_sigterm_and_sigint_and_are_put_back():
    from vae.training.callbacks import StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    stop = StopOnSignal(lambda epoch: 0, 10, lambda epoch, step: None)
    stop.install()
    assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == stop._handle
    stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_first_sigint_asks_for_a_clean_stop_and_a_second_interrupts_at_once():
    from vae.training.callbacks import StopOnSignal

    stop = StopOnSignal(lambda epoch: 0, 10, lambda epoch, step: None)
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert (stop.received, stop.number) == ("SIGINT", signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    finally:
        stop.uninstall()
