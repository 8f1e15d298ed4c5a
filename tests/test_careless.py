"""A careless user (issue 24, round 2): an output inside what a command reads is refused with nothing written,
sample.py --individual replaces no face without --overwrite, TensorBoard's event file always ends on a whole record
(a full disk included), and the mixture fit runs on one BLAS thread."""
import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae.cli import invoke

from conftest import MAIN, ROOT, cli


def hashes(folder) -> dict[str, str]:
    """Every file under `folder`, symlinks not followed, with the SHA-256 of its bytes (a link: its target)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if Path(root, d).is_symlink()]:
            path = Path(root, name)
            found[path.relative_to(folder).as_posix()] = (os.readlink(path) if path.is_symlink()
                                                          else hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def refused(capsys, script, *args) -> str:
    """Run a script's command line in-process; assert exit 2 and one line on stderr; return that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN[script], [str(a) for a in args])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err.strip()


@pytest.fixture
def mount_tmpfs():
    """mount_tmpfs(folder, options): a tmpfs there for the test (root only); skipped where mounting is not allowed."""
    mounted = []

    def mount(folder: Path, options: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
        except OSError as e:
            pytest.skip(f"cannot run mount ({e})")
        if result.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not allowed here ({result.stderr.strip()})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


# 1. No output lands inside what the command reads.

@pytest.fixture
def world(trained, tmp_path):
    """(images, run folder, the user's own folder of two images, one a GIF, and a symlink to the images): the trained
    run's folders and the user's, all hashed before and after each refused command."""
    from PIL import Image

    images, run_folder = trained
    mine = tmp_path / "mine"
    mine.mkdir()
    Image.open(images / "img_0000.png").save(mine / "a.gif")
    shutil.copy(images / "img_0001.png", mine / "b.png")
    (tmp_path / "link").symlink_to(images, target_is_directory=True)
    return images, run_folder, mine, tmp_path / "link"


CASES = {  # name: (script and its arguments, with IMAGES, RUN, MINE, LINK for the world's folders; what stderr says)
    "encode into --data": (["explore", "encode", "--model", "RUN", "--data", "IMAGES", "--out", "IMAGES/latents.npz"],
                           "--out IMAGES/latents.npz would write its files inside --data IMAGES; choose a folder outside it"),
    "encode into a folder in --data": (["explore", "encode", "--model", "RUN", "--data", "IMAGES", "--out", "IMAGES/z/l.npz"],
                                       "--out IMAGES/z/l.npz would write its files inside --data IMAGES"),
    "encode into --data through a symlink": (
        ["explore", "encode", "--model", "RUN", "--data", "IMAGES", "--out", "LINK/latents.npz"],
        "--out LINK/latents.npz would write its files inside --data IMAGES"),
    "traverse into --data": (["explore", "traverse", "--model", "RUN", "--data", "MINE", "--out", "MINE/t.png"],
                             "--out MINE/t.png would write its files inside --data MINE"),
    "traverse into the run's data folder": (["explore", "traverse", "--model", "RUN", "--out", "IMAGES/t.png"],
                                            "--out IMAGES/t.png would write its files inside the run's data folder IMAGES"),
    "traverse over its --image": (["explore", "traverse", "--model", "RUN", "--image", "MINE/b.png", "--out", "MINE/b.png"],
                                  "--out MINE/b.png is --image MINE/b.png; choose another name, the input is never written"),
    "interpolate's GIF over one of its --images": (
        ["explore", "interpolate", "--model", "RUN", "--images", "MINE/a.gif", "MINE/b.png", "--out", "MINE/a.png"],
        "--out MINE/a.gif is --images MINE/a.gif; choose another name"),
    "interpolate into the run folder": (["explore", "interpolate", "--model", "RUN", "--random", "2", "--out", "RUN/i.png"],
                                        "--out RUN/i.png would write its files inside the run folder of --model RUN"),
    "sample into the run folder": (["sample", "--model", "RUN", "--out", "RUN/samples/epoch_001.png", "--overwrite"],
                                   "--out RUN/samples/epoch_001.png would write its files inside the run folder of --model RUN"),
    "sample's faces into the run's data folder": (
        ["sample", "--model", "RUN", "--out", "MINE/grid.png", "--individual", "IMAGES/faces"],
        "--individual IMAGES/faces would write its files inside the run's data folder IMAGES"),
    "export into the run folder": (["export", "--model", "RUN", "--format", "saved_model", "--out", "RUN/export"],
                                   "--out RUN/export would write its files inside the run folder of --model RUN"),
    "export over the folder holding the model": (
        ["export", "--model", "RUN/model_best.keras", "--format", "saved_model", "--out", "IMAGES/..", "--overwrite"],
        "--out IMAGES/.. holds --model RUN/model_best.keras: replacing --out would delete the model; choose another --out"),
}


@pytest.mark.parametrize("case", CASES)
def test_an_output_inside_what_the_command_reads_is_refused_and_nothing_is_written(world, tmp_path, capsys, case):
    images, run_folder, mine, link = world
    names = {"IMAGES": str(images), "RUN": str(run_folder), "MINE": str(mine), "LINK": str(link)}

    def fill(text):
        for name, value in names.items():
            text = text.replace(name, value)
        return text

    args, message = CASES[case]
    roots = [images.parent, tmp_path]  # the images and the run folder; the user's folder and the link
    before = [hashes(root) for root in roots]
    err = refused(capsys, args[0], *map(fill, args[1:]))
    assert err.startswith("error: " + fill(message)), err
    assert [hashes(root) for root in roots] == before


# 2. sample.py --individual replaces no face silently.

def test_individual_faces_are_replaced_only_with_overwrite_and_nothing_else_is_touched(trained, tmp_path, capsys):
    faces = tmp_path / "faces"
    cli(capsys, "sample", "--model", trained[1], "--num", "3", "--out", tmp_path / "first.png", "--individual", faces)
    (faces / "notes.txt").write_text("the user's own")
    first = hashes(faces)
    inodes = {n: (faces / n).stat().st_ino for n in first}
    assert sorted(first) == ["face_0000.png", "face_0001.png", "face_0002.png", "notes.txt"]

    err = refused(capsys, "sample", "--model", trained[1], "--num", "2", "--seed", "1", "--out", tmp_path / "second.png",
                  "--individual", faces)
    assert err == (f"error: --individual {faces} already holds 3 face_*.png files; pass --overwrite to replace those of "
                   "the same names (no other file is touched), or choose another folder")
    assert hashes(faces) == first and not (tmp_path / "second.png").exists()

    out, _ = cli(capsys, "sample", "--model", trained[1], "--num", "2", "--seed", "1", "--out", tmp_path / "second.png",
                 "--individual", faces, "--overwrite")
    assert out.strip().endswith(f"and {faces}/; 1 older face_*.png files there were left as they were")
    assert sorted(hashes(faces)) == sorted(first)
    # Faces 0 and 1 written anew (a new file each, renamed into place); face 2 and the user's file as they were.
    assert [(faces / n).stat().st_ino != inodes[n] for n in sorted(first)] == [True, True, False, False]
    assert {n: hashes(faces)[n] for n in ("face_0002.png", "notes.txt")} == {n: first[n] for n in ("face_0002.png", "notes.txt")}


def test_individual_into_a_read_only_folder_is_one_line_naming_the_file(trained, tmp_path, capsys, mount_tmpfs):
    faces = mount_tmpfs(tmp_path / "faces", "ro,size=64k")
    err = refused(capsys, "sample", "--model", trained[1], "--num", "2", "--out", tmp_path / "grid.png", "--individual", faces)
    assert err == f"error: {faces}/face_0000.png is on a read-only file system; choose a writable place and rerun"
    assert not (tmp_path / "grid.png").exists()


def test_individual_into_a_folder_without_write_permission_is_one_line_naming_the_file(trained, tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir(mode=0o555)
    drop = []  # root writes anywhere: drop the capabilities that let it, in the child only
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux) to run sample.py as root without CAP_DAC_OVERRIDE")
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    result = subprocess.run([*drop, sys.executable, "sample.py", "--model", str(trained[1]), "--num", "2",
                             "--out", str(tmp_path / "grid.png"), "--individual", str(faces)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "0"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    # One line even at TensorFlow's log level 0 (everything it logs), which the package keeps quiet.
    assert result.stderr == (f"error: permission denied for {faces}/face_0000.png; change its permissions or "
                             "choose another place\n")
    assert list(faces.iterdir()) == [] and not (tmp_path / "grid.png").exists()


# 3. TensorBoard's event file always ends on a whole record.

def epoch_of(epoch: int, seed: int = 0) -> tuple[dict, dict]:
    """A history row and two grids of noise (which PNG cannot shrink: about 12 KB each) for TensorBoardLog.epoch."""
    rng = np.random.default_rng([epoch, seed])
    grids = {name: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for name in ("samples", "reconstructions")}
    return {"epoch": epoch, "loss": 100.0 / epoch, "val_psnr": 20.0 + epoch}, grids


def steps_in(path: Path) -> list[int]:
    """The step of every summary event in an event file; the reader raises DataLossError on a torn record."""
    import tensorflow as tf

    return [e.step for e in tf.compat.v1.train.summary_iterator(str(path)) if e.summary.value]


def test_a_failed_append_to_the_event_file_is_cut_back_to_its_last_whole_record(tmp_path, monkeypatch):
    from vae.training import reporting

    log = reporting.TensorBoardLog(tmp_path / "logs")
    log.epoch(*epoch_of(1))
    whole = log.path.stat().st_size
    real_write = os.write

    def disk_fills(fd, data):  # writes a part, then the disk is full, as os.write does when it fills
        monkeypatch.setattr(reporting.os, "write", full)
        return real_write(fd, bytes(data)[:1000])

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(reporting.os, "write", disk_fills)
    with pytest.raises(OSError) as error:
        log.epoch(*epoch_of(2))
    monkeypatch.setattr(reporting.os, "write", real_write)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(log.path)
    assert log.path.stat().st_size == whole and steps_in(log.path) == [1]
    log.epoch(*epoch_of(3))  # space freed: the next epoch follows the last whole record
    assert steps_in(log.path) == [1, 3]


def test_an_event_file_whose_first_append_fails_is_not_left_behind(tmp_path, monkeypatch):
    from vae.training import reporting

    def over_quota(fd, data):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    log = reporting.TensorBoardLog(tmp_path / "logs")
    monkeypatch.setattr(reporting.os, "write", over_quota)
    with pytest.raises(OSError, match="Disk quota exceeded") as error:
        log.epoch(*epoch_of(1))
    monkeypatch.undo()
    assert error.value.filename.startswith(str(tmp_path / "logs" / "events.out.tfevents."))
    assert list((tmp_path / "logs").iterdir()) == []
    log.epoch(*epoch_of(2))
    assert steps_in(log.path) == [2]
    import tensorflow as tf

    assert next(tf.compat.v1.train.summary_iterator(str(log.path))).file_version == "brain.Event:2"


def test_a_disk_that_fills_leaves_an_event_file_that_reads_to_its_end(tmp_path, mount_tmpfs):
    from vae.training.reporting import TensorBoardLog

    disk = mount_tmpfs(tmp_path / "disk", "size=64k")
    log = TensorBoardLog(disk / "logs")
    with pytest.raises(OSError) as error:
        for epoch in range(1, 100):
            log.epoch(*epoch_of(epoch))
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(log.path)
    assert 1 < epoch < 99 and log.path.stat().st_size == log.size
    assert steps_in(log.path) == list(range(1, epoch))  # every epoch before the one that filled it, whole
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shutil.copytree(disk / "logs", tmp_path / "logs")  # TensorBoard's reader keeps its file open: not on the mount
    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"tensors": 0})
    events.Reload()
    assert [e.step for e in events.Tensors("samples")] == list(range(1, epoch))


# 4. The mixture fit on one BLAS thread.

def test_the_mixture_fit_holds_numpys_blas_to_one_thread_and_restores_it(monkeypatch):
    from vae.priors import blas
    from vae.priors.mixture import GaussianMixture

    if not blas.thread_counts():
        pytest.skip("numpy uses no OpenBLAS here (MKL or Accelerate): the bound is left to them")
    before = blas.thread_counts()
    for _, set_threads in blas._openblas():  # two threads even on a one-core machine, so the bound shows
        set_threads(2)
    seen = []
    densities = GaussianMixture._component_log_densities

    def spy(self, x, work=None):
        seen.append(blas.thread_counts())
        return densities(self, x, work)

    monkeypatch.setattr(GaussianMixture, "_component_log_densities", spy)
    try:
        GaussianMixture.from_latents(np.random.default_rng(0).normal(size=(500, 4)), components=3)
        assert seen and all(counts == [1] * len(before) for counts in seen), seen
        assert blas.thread_counts() == [2] * len(before)
    finally:
        for (_, set_threads), count in zip(blas._openblas(), before):
            set_threads(count)


def test_the_mixture_fit_is_the_plain_em_to_float_rounding():
    """The fit's faster passes (one buffer, A.T @ A, whitening by matrix product) change nothing but rounding."""
    from vae.priors.mixture import REGULARISATION, GaussianMixture, _spread_seeds

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, s, (300, 5)) for c, s in ((-2, 0.5), (0, 1.0), (3, 0.3))])
    fitted = GaussianMixture.from_latents(x, components=3, seed=4, iterations=25, tol=-np.inf)
    # The EM of the mixture before: solve() per component, weighted outer products.
    means = _spread_seeds(x, 3, np.random.default_rng(4))
    covs = np.repeat(np.cov(x, rowvar=False)[None] + REGULARISATION * np.eye(5), 3, 0)
    weights = np.full(3, 1 / 3)
    for _ in range(25):
        joint = np.stack([np.log(w) - 0.5 * (5 * np.log(2 * np.pi) + np.linalg.slogdet(c)[1]
                                             + ((x - m) @ np.linalg.inv(c) * (x - m)).sum(1))
                          for w, m, c in zip(weights, means, covs)], 1)
        resp = np.exp(joint - np.logaddexp.reduce(joint, axis=1, keepdims=True))
        counts = resp.sum(0) + 1e-10
        weights, means = counts / len(x), resp.T @ x / counts[:, None]
        covs = np.stack([(r[:, None] * (x - m)).T @ (x - m) / n + REGULARISATION * np.eye(5)
                         for r, m, n in zip(resp.T, means, counts)])
    np.testing.assert_allclose(fitted.weights, weights, rtol=1e-9)
    np.testing.assert_allclose(fitted.means, means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fitted.covariances, covs, rtol=1e-9, atol=1e-12)
