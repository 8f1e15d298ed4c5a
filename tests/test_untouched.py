"""Nothing of the user's is ever touched (issue 24): inputs are never written into or trained on, memory bombs are refused
before they go off, a full disk is one line naming the file, and nothing is replaced without --overwrite."""
import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from vae.cli import invoke
from vae.data import dataset, image_files
from vae.errors import UserError
from vae.files import write_text_atomic
from vae.pictures import blank_png

from conftest import MAIN, ROOT, SIZE, TINY, blob_images, cli, write_pngs

CAN_RESET_PEAK = os.access("/proc/self/clear_refs", os.W_OK)
needs_peak = pytest.mark.skipif(not CAN_RESET_PEAK, reason="needs Linux's resettable peak memory (/proc/self/clear_refs)")


def hashes(folder) -> dict[str, str]:
    """Every file under `folder` (symlinks not followed: their targets instead) with the SHA-256 of its bytes."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if Path(root, d).is_symlink()]:
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            found[rel] = os.readlink(path) if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def refused(capsys, script, *args, match) -> str:
    """Run a script's command line in-process: exit 2 and one line on stderr holding `match`; returns that line."""
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN[script], [str(a) for a in args])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and match in err, err
    return err


def peak_mb(action) -> float:
    """How far the process's peak resident memory rose above its current size while `action()` ran, in MB."""
    def peak_kb():
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1])

    Path("/proc/self/clear_refs").write_text("5")  # resets the peak to the current resident size
    before = peak_kb()
    action()
    return (peak_kb() - before) / 1024


# 1. Inputs are never written into or trained on.

@pytest.fixture
def user_folder(trained, tmp_path):
    """A copy of the trained run's images holding a samples.png of the user's own, as evaluate.py would write."""
    folder = shutil.copytree(trained[0], tmp_path / "faces")
    (folder / "samples.png").write_bytes((folder / "img_0000.png").read_bytes())
    return folder


@pytest.mark.parametrize("where", ["the folder itself", "a folder inside it", "through a symlink"])
def test_evaluate_never_writes_into_its_data_folder(trained, user_folder, tmp_path, capsys, where):
    out = {"the folder itself": user_folder, "a folder inside it": user_folder / "eval", "through a symlink": tmp_path / "link"}
    (tmp_path / "link").symlink_to(user_folder, target_is_directory=True)
    before = hashes(user_folder)
    refused(capsys, "evaluate", "--model", trained[1], "--data", user_folder, "--out", out[where], match="inside --data")
    assert hashes(user_folder) == before


def test_evaluate_on_the_validation_split_never_writes_into_the_runs_data_folder(trained, capsys):
    images, run_folder = trained
    before = hashes(images)
    refused(capsys, "evaluate", "--model", run_folder, "--out", images / "eval", match="inside the run's data folder")
    assert hashes(images) == before


def test_a_run_inside_its_data_folder_trains_on_none_of_its_outputs_nor_on_another_run(tmp_path, capsys):
    faces = write_pngs(tmp_path / "faces", blob_images(24, SIZE))
    (faces / "tab\tname.jpg").write_bytes(b"<html>")  # names that would break skipped.txt's name<TAB>reason lines
    (faces / "new\nline.png").write_bytes(b"<html>")
    before = hashes(faces)
    out = faces / "run"
    stdout, _ = cli(capsys, "train", "--data", faces, "--out", out, "--num_epochs", "1", "--val_split", "0.2", *TINY)
    assert "warning: skipped 1 folder and 2 of 26 image files: run/ (this run's own --out), new\\nline.png (" in stdout
    train, val = re.search(r"(\d+) training and (\d+) validation images", stdout).groups()
    assert int(train) + int(val) == 24
    records = (out / "skipped.txt").read_text().splitlines()
    assert sorted(r.split("\t")[0] for r in records) == ["new\\nline.png", "run/", "tab\\tname.jpg"]
    assert all(r.count("\t") == 1 for r in records)
    assert {k: v for k, v in hashes(faces).items() if not k.startswith("run/")} == before

    # The next run on the same folder skips the first run, its grids and loss curve, and counts it.
    faces_set = dataset.load_faces(faces, SIZE, progress=False)
    assert len(faces_set) == 24 and ("run/", image_files.RUN_FOLDER) in faces_set.skipped
    assert "skipped 1 folder and 2 of 26 image files: run/ (a run folder" in image_files.skipped_summary(
        faces_set.skipped, len(faces_set) + len(faces_set.skipped))
    # A run folder as --data is refused in one line: its only images are grids.
    refused(capsys, "train", "--data", out, "--out", tmp_path / "run2", *TINY, match=f"--data {out} is a run folder of train.py")


def test_finding_images_follows_no_symlink_back_up_and_skips_run_folders(tmp_path):
    faces = write_pngs(tmp_path / "faces", blob_images(1, 32))
    write_pngs(tmp_path / "sibling", blob_images(1, 32), prefix="sibling")
    write_pngs(tmp_path / "elsewhere", blob_images(1, 32), prefix="linked")
    (faces / "parent").symlink_to("..")  # would pull in faces/parent/sibling/... and faces itself again
    (faces / "root").symlink_to("/")
    (faces / "self").symlink_to(".")
    (faces / "more").symlink_to(tmp_path / "elsewhere")  # a link to a folder beside: followed
    run_folder = write_pngs(faces / "old_run" / "samples", blob_images(1, 32), prefix="grid").parent
    (run_folder / "config.json").write_text("{}")
    (run_folder / "checkpoints").mkdir()
    images, skipped = image_files.scan_folder(faces)
    assert [p.relative_to(faces).as_posix() for p in images] == ["img_0000.png", "more/linked_0000.png"]
    assert skipped == [(run_folder, image_files.RUN_FOLDER)]


def test_names_with_tabs_newlines_and_control_characters_print_on_one_line():
    assert image_files.printable("a\tb\nc\r\x1b\u2028d é 😀") == "a\\tb\\nc\\r\\x1b\\u2028d é 😀"


# 2. Memory bombs in the explorer.

@pytest.fixture(scope="module")
def app(model):
    from vae.app.server import LatentService, create_app
    from vae.priors import StandardNormal

    return create_app(LatentService(model, StandardNormal(model.latent_dim), "tiny run"))


def upload_all(app, data: bytes, num: int) -> list:
    """`num` uploads of `data` at once, each from its own thread and client: their responses."""
    responses = [None] * num

    def send(i):
        responses[i] = app.test_client().post("/api/encode", data={"image": (io.BytesIO(data), "face.png")},
                                              content_type="multipart/form-data")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(num)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


@needs_peak
def test_ten_parallel_uploads_of_a_9400px_png_get_400_and_no_memory(app):
    png = blank_png(9400, 9400)  # 0.26 MB on the wire; 265 MB as RGB pixels
    assert len(png) < 300_000
    responses = []
    rise = peak_mb(lambda: responses.extend(upload_all(app, png, 10)))
    for response in responses:
        assert response.status_code == 400
        assert response.get_json()["error"] == ("cannot use this image: 9400x9400 has too many pixels to decode safely "
                                                "(at most 4096x4096)")
    assert rise < 50, rise  # before: each upload decoded whole, 3.4 GB together


@needs_peak
def test_parallel_uploads_at_the_pixel_limit_are_decoded_two_at_a_time(app):
    png = blank_png(4096, 4096, channels=4)
    responses = []
    rise = peak_mb(lambda: responses.extend(upload_all(app, png, 10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert rise < 600, rise  # 10 decoded at once: 1.2 GB; two at a time: about 0.3 GB


def test_malformed_deep_or_huge_json_gets_a_one_line_4xx_and_logs_nothing(app, caplog):
    client = app.test_client()
    for body, status, message in [
        ("[" * 100_000 + "]" * 100_000, 400, "the request body must be a JSON object: it is nested too deeply"),
        ('{"z": [0.0, ', 400, "the request body must be a JSON object: it is not valid JSON (Expecting value: line 1 column 13"),
        (b"\xff\xfe{}", 400, "the request body must be a JSON object: it is not valid JSON ("),
        ('{"z": [' + "0.0, " * 60_000 + "0.0]}", 413, "the request body is larger than 256 KB"),
    ]:
        with caplog.at_level("DEBUG"):
            response = client.post("/api/decode", data=body, content_type="application/json")
        assert response.status_code == status and response.get_json()["error"].startswith(message), response.get_json()
        assert len(response.get_json()["error"].splitlines()) == 1
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert client.post("/api/decode", json={"z": [0.0] * 8}).status_code == 200


# 3. .keras files that are memory bombs.

def bomb(path: Path, member: str, inflated: int) -> Path:
    """A .keras-named zip whose `member` inflates to `inflated` bytes of padding, deflated to a fraction of that on disk."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        with archive.open(member, "w", force_zip64=True) as stream:
            stream.write(b'{"class_name": "VAE", "config": {}, "padding": "')
            for _ in range(inflated // 2**20):
                stream.write(b" " * 2**20)
            stream.write(b'"}')
        if member != "config.json":
            archive.writestr("config.json", json.dumps({"class_name": "VAE", "config": {}}))
    return path


@needs_peak
@pytest.mark.parametrize("member, match", [
    ("config.json", "its config.json would inflate to 64.0 MiB (at most 4.0 MiB)"),
    ("model.weights.h5", "its model.weights.h5 would inflate from "),
])
def test_a_keras_file_that_inflates_too_far_is_refused_before_keras_reads_it(tmp_path, capsys, member, match):
    import vae.model.vae  # noqa: F401 - Keras itself, loaded before memory is measured

    path = bomb(tmp_path / "model_best.keras", member, 64 * 2**20)
    assert path.stat().st_size < 2**20
    rise = peak_mb(lambda: refused(capsys, "sample", "--model", path, "--out", tmp_path / "grid.png", match=match))
    assert rise < 32, rise
    assert not (tmp_path / "grid.png").exists()


# 4. Flags are never abbreviated, and a mistyped one is named first.

@pytest.mark.parametrize("script, args, match", [
    ("train", ["--num_epoch", "3"], "unrecognized arguments: --num_epoch 3; did you mean --num_epochs?"),
    ("train", ["--num_epoch=3"], "unrecognized arguments: --num_epoch=3; did you mean --num_epochs?"),
    ("evaluate", ["--modle", "runs/x"], "unrecognized arguments: --modle; did you mean --model?"),
    ("sample", ["--mod", "runs/x"], "unrecognized arguments: --mod; did you mean --model?"),
    ("explore", ["traverse", "--modle", "runs/x"], "unrecognized arguments: --modle; did you mean --model?"),
])
def test_an_abbreviated_or_mistyped_flag_is_refused_with_the_right_one(tmp_path, capsys, script, args, match):
    refused(capsys, script, *args, *(["--out", tmp_path / "run"] if script == "train" else []), match=match)
    assert not (tmp_path / "run").exists()


# 5. A full disk, a read-only one, or no permission: one line naming the file, exit 2.

@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KB tmpfs, mounted for the test (root only)."""
    mount = tmp_path / "tiny_disk"
    mount.mkdir()
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    except OSError as e:
        pytest.skip(f"cannot run mount ({e})")
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here ({result.stderr.strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_names_the_file_being_written_and_leaves_no_partial_file(trained, tiny_disk, tmp_path, capsys):
    with pytest.raises(OSError) as error:
        write_text_atomic(tiny_disk / "big.txt", "x" * 200_000)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(tiny_disk / "big.txt")

    faces = tiny_disk / "faces"
    err = refused(capsys, "sample", "--model", trained[1], "--prior", "normal", "--num", 2000, "--individual", faces,
                  "--out", tmp_path / "grid.png", match=f"no space left on device writing {faces}/face_")
    assert err.rstrip().endswith("; free space and rerun")
    assert not (tmp_path / "grid.png").exists() and not [p for p in faces.iterdir() if p.name.startswith(".partial-")]


@pytest.mark.parametrize("code, message", [
    (errno.ENOSPC, "error: no space left on device writing /data/x.png; free space and rerun"),
    (errno.EDQUOT, "error: disk quota exceeded writing /data/x.png; free space (or raise the quota) and rerun"),
    (errno.EROFS, "error: /data/x.png is on a read-only file system; choose a writable place and rerun"),
    (errno.EACCES, "error: permission denied for /data/x.png; change its permissions or choose another place"),
])
def test_disk_errors_are_one_line_naming_the_path_and_exit_2(capsys, code, message):
    def main(argv):
        raise OSError(code, os.strerror(code), "/data/x.png")

    with pytest.raises(SystemExit) as exit:
        invoke(main, [])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err


# 6 and 7. What the README's commands write is ignored by git, and sample.py replaces nothing without --overwrite.

def test_what_the_readme_commands_write_into_the_checkout_is_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and the checkout")
    commands = re.findall(r"^    (python.*)$", (ROOT / "README.md").read_text(), flags=re.M)
    written = {m for c in commands for m in re.findall(r"--(?:out|output|individual) (\S+)", c)}
    assert {"samples.png", "grid.png", "rec/", "eval/", "latents.npz", "faces/"} <= written
    for name in sorted(written):
        probe = name if Path(name).suffix else f"{name.rstrip('/')}/face.png"  # a folder: what it will hold
        result = subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=ROOT)
        assert result.returncode == 0, f"{name} is written by a README command and not ignored"


def test_sample_refuses_to_replace_its_out_without_overwrite(trained, tmp_path, capsys):
    grid = tmp_path / "samples.png"
    cli(capsys, "sample", "--model", trained[1], "--num", "4", "--out", grid)
    first = grid.read_bytes()
    refused(capsys, "sample", "--model", trained[1], "--num", "9", "--out", grid,
            match=f"--out {grid} exists; pass --overwrite to replace it, or choose another --out")
    assert grid.read_bytes() == first
    cli(capsys, "sample", "--model", trained[1], "--num", "9", "--out", grid, "--overwrite")
    assert grid.read_bytes() != first


OUTSIDE = ["/etc/passwd", "../../../../etc/passwd", "checkpoints/../../other/ckpt-e0001-s000000.keras",
           "../other/checkpoints/ckpt-e0001-s000000.keras"]


@pytest.mark.parametrize("checkpoint", OUTSIDE)
def test_a_state_json_naming_a_file_outside_the_run_is_refused_before_anything_is_opened(trained, tmp_path, checkpoint):
    from vae.run import Run

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "state.json"):
        (run / name).write_bytes((trained[1] / name).read_bytes())
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "checkpoint": checkpoint, "finished": None}))
    with pytest.raises(UserError, match="is not a checkpoint of this run folder") as refused:
        Run(run).read_state()
    assert "\n" not in str(refused.value)


def test_a_disk_that_fills_during_training_is_one_line_naming_the_kept_checkpoint_and_the_rerun_resumes(tmp_path, capsys):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    images = write_pngs(tmp_path / "images", blob_images(40, SIZE))
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    except OSError as e:
        pytest.skip(f"cannot run mount ({e})")
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        out = mount / "run"
        args = ["--data", images, "--out", out, "--num_epochs", "3", "--val_split", "0.2", *TINY]
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:  # in-process, as vae.cli.invoke runs train.py's main
            invoke(MAIN["train"], [str(a) for a in args])
        line = capsys.readouterr().err.strip()
        assert exit.value.code == 2, line
        assert "\n" not in line and re.fullmatch(r"error: no space left on device writing \S+; the last checkpoint "
                                                 r"\(checkpoints/ckpt-e\d{4}-s\d{6}\.keras: epoch \d, step \d+\) is intact: "
                                                 r"free space and rerun to resume from it", line), line
        kept = json.loads((out / "state.json").read_text())
        assert not list(out.rglob(".partial-*"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        resumed, _ = cli(capsys, "train", *args)
        assert resumed.splitlines()[0] == f"resuming from epoch {kept['epoch'] + 1}, step {kept['step']}"
        assert [int(r.split(",")[0]) for r in (out / "history.csv").read_text().splitlines()[1:]] == [1, 2, 3]
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

        for events in (out / "logs").rglob("events.out.tfevents.*"):  # every record whole: the reader raises on a torn one
            assert sum(1 for _ in RawEventFileLoader(str(events)).Load()) > 0
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def read_only_run(trained, tmp_path):
    """(a copy of the trained run mounted read-only, the writable copy under it); skipped where mounting is not allowed."""
    source = shutil.copytree(trained[1], tmp_path / "source")
    mount = tmp_path / "read_only"
    mount.mkdir()
    try:
        bound = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True)
    except OSError as e:
        pytest.skip(f"cannot run mount ({e})")
    if bound.returncode != 0:
        pytest.skip("bind mounts are not allowed here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        with pytest.raises(OSError, match="Read-only file system"):
            (mount / "probe").write_text("x")
        yield mount, source
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_run_folder_serves_every_reader(read_only_run, trained, tmp_path, capsys):
    run_folder = read_only_run[0]
    before = hashes(run_folder)
    cli(capsys, "sample", "--model", run_folder, "--num", "9", "--out", tmp_path / "a.png")
    cli(capsys, "evaluate", "--model", run_folder, "--out", tmp_path / "eval", "--num_samples", "16")
    cli(capsys, "reconstruct", "--model", run_folder, "--input", trained[0], "--output", tmp_path / "rec")
    cli(capsys, "explore", "interpolate", "--model", run_folder, "--random", "2", "--steps", "3", "--out", tmp_path / "i.png")
    cli(capsys, "explore", "traverse", "--model", run_folder, "--dims", "2", "--steps", "3", "--out", tmp_path / "t.png")
    cli(capsys, "explore", "encode", "--model", run_folder, "--data", trained[0], "--out", tmp_path / "z.npz")
    cli(capsys, "export", "--model", run_folder, "--format", "saved_model", "--out", tmp_path / "saved")
    from vae.app.server import open_server

    server, _ = open_server(str(run_folder), "127.0.0.1", 0)
    server.server_close()
    assert hashes(run_folder) == before


def test_a_reader_without_the_mixture_fits_it_in_memory_on_a_read_only_run(read_only_run, tmp_path, capsys):
    run_folder, writable = read_only_run
    (writable / "model_best.gmm.npz").unlink()
    before = hashes(run_folder)
    _, err = cli(capsys, "sample", "--model", run_folder, "--num", "9", "--out", tmp_path / "a.png")
    assert "fitted in memory for this command (nothing is written)" in err and hashes(run_folder) == before
