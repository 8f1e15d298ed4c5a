"""Bad input never crashes with a traceback and never loses data: each row of issue 5, on generated files."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vae.model
from vae.cli import invoke
from vae.data import dataset, image_files
from vae.errors import UserError
from vae.evaluation.reconstruction import reconstruct_folder

from bad_files import BROKEN, IGNORED, RED, TOO_SMALL, USABLE, halves, noise, write_all
from conftest import MAIN, TINY, blob_images, cli, in_process_probe, run_script, write_pngs

SIZE = 32


def flat(color) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), color, np.uint8)


HALVES = np.asarray(halves(SIZE))
# What each odd but usable file must decode to at 32x32.
EXPECTED = {
    "grayscale.png": flat(100),
    "grayscale_alpha.png": flat(255),  # fully transparent: the white background
    "rgba.png": flat((255, 127, 127)),  # half-transparent red over white
    "palette.png": HALVES,
    "sixteen_bit.png": flat(128),
    "cmyk.jpg": flat(RED),
    "animated.gif": flat(RED),  # the first frame; the second is blue
    "lossless.webp": HALVES,
    "bitmap.bmp": HALVES,
    "png_inside.jpg": HALVES,
    "UPPER.JPG": HALVES,
    "UPPER.PNG": HALVES,
    "wide.png": np.asarray(noise(80, 40).crop((20, 0, 60, 40)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)),
    "exif_rotated.jpg": np.rot90(HALVES, k=-1),  # turned clockwise: red on the right
    "huge.jpg": HALVES,
    "huge.png": HALVES,
    "small_but_upscaled.png": HALVES,
    "name with spaces.png": HALVES,
    "顔 лицо.png": HALVES,
    "face 😀.png": HALVES,
    "nested/deeper/inside.png": HALVES,
}
SKIP_REASONS = {
    "zero_bytes.jpg": "empty file",
    "truncated.jpg": "truncated file",
    "truncated.png": "truncated file",
    "random_bytes.jpg": "not an image PIL can read",
    "error_page.png": "not an image PIL can read",
    "thumbnail.png": "15x15 is below half the model's 32px",
}


def snapshot(folder):
    """Every file under `folder` with its bytes (symlinks not followed), to prove nothing was modified."""
    return {Path(root, f): Path(root, f).read_bytes() for root, _, files in os.walk(folder) for f in files}


def fails(capsys, script, *args, match):
    """Run a script as its command line would, in-process: one line on stderr, exit code 2, the traceback only with --debug."""
    args = [str(a) for a in args]
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN[script], args)
    err = capsys.readouterr().err
    assert exit.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and match in err, err
    with pytest.raises(UserError, match=re.escape(match)):
        invoke(MAIN[script], [*args, "--debug"])


# Folder contents.

@pytest.mark.parametrize("name", [*BROKEN, *TOO_SMALL])
def test_a_broken_or_too_small_file_is_skipped_counted_and_named(tmp_path, name):
    write_pngs(tmp_path, blob_images(2, SIZE))
    write_all(tmp_path, {name: {**BROKEN, **TOO_SMALL}[name]})
    faces = dataset.load_faces(tmp_path, SIZE, progress=False)
    assert faces.names == ["img_0000.png", "img_0001.png"]
    assert faces.skipped == [(name, SKIP_REASONS[name])]


def test_non_images_are_ignored_quietly(tmp_path):
    write_pngs(tmp_path, blob_images(2, SIZE))
    write_all(tmp_path, IGNORED)
    faces = dataset.load_faces(tmp_path, SIZE, progress=False)
    assert faces.names == ["img_0000.png", "img_0001.png"] and faces.skipped == []


@pytest.mark.parametrize("name", USABLE)
def test_an_odd_but_usable_image_is_used_as_rgb(tmp_path, name):
    write_all(tmp_path, {name: USABLE[name]})
    faces = dataset.load_faces(tmp_path, SIZE, progress=False)
    assert faces.names == [name] and faces.skipped == []
    pixels = faces.numpy([0])[0].astype(int)
    assert np.abs(pixels - EXPECTED[name]).mean() < 6  # JPEG blurs the red-blue edge; a wrong frame, turn or colour is off by ~85


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable peak memory")
@pytest.mark.parametrize("name, limit_mb", [("huge.jpg", 16), ("huge.png", 100)])
def test_a_4000px_image_decodes_without_a_memory_blowup(tmp_path, name, limit_mb):
    """Decoded whole, 4000x4000 RGB is 48 MB: a JPEG is decoded at 1/8 scale, a PNG never copied whole."""
    write_all(tmp_path, {name: USABLE[name]})

    def peak_kb():
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1])

    Path("/proc/self/clear_refs").write_text("5")  # resets the peak to the current resident size
    before = peak_kb()
    image_files.load_image(tmp_path / name, SIZE)
    assert (peak_kb() - before) / 1024 < limit_mb


def test_names_in_any_script_nested_folders_and_a_symlink_loop(tmp_path):
    names = ["name with spaces.png", "顔 лицо.png", "face 😀.png", "nested/deeper/inside.png"]
    write_all(tmp_path, {n: USABLE[n] for n in names})  # with nested/loop -> tmp_path
    latin1 = os.fsdecode(b"caf\xe9.png")  # not UTF-8 on disk: an old zip's name
    Image.fromarray(HALVES).save(tmp_path / latin1)
    (tmp_path / "broken \xe9\udce9.jpg").write_bytes(b"<html>")
    faces = dataset.load_faces(tmp_path, SIZE, progress=False)
    assert sorted(faces.names) == sorted([*names, latin1])
    # Skipped names are printed and written to text files, so they must encode as UTF-8.
    assert faces.skipped == [("broken \xe9\ufffd.jpg", "not an image PIL can read")]


# Paths and flags of train.py.

@pytest.mark.parametrize("what, match", [
    ("missing", "does not exist"),
    ("empty", "no images (jpg, jpeg, png, bmp, gif, webp) found"),
    ("file", "is a file, not a folder"),
    ("only broken files", f"none of the {len(BROKEN)} image files under"),
])
def test_train_refuses_an_unusable_data_folder(tmp_path, capsys, what, match):
    folder = tmp_path / "faces"
    if what == "empty":
        folder.mkdir()
    elif what == "file":
        folder.write_text("not a folder")
    elif what == "only broken files":
        write_all(folder, BROKEN, IGNORED)
    fails(capsys, "train", "--data", folder, "--out", tmp_path / "run", *TINY, match=match)
    assert not (tmp_path / "run" / "model_best.keras").exists() and not (tmp_path / "run" / "model_last.keras").exists()


@pytest.mark.parametrize("flags, match", [
    (["--num_epochs", "0"], "--num_epochs must be positive, got 0"),
    (["--num_epochs", "-2"], "--num_epochs must be positive, got -2"),
    (["--batch_size", "0"], "--batch_size must be positive, got 0"),
    (["--batch_size", "-8"], "--batch_size must be positive, got -8"),
    (["--learning_rate", "0"], "--learning_rate must be positive, got 0"),
    (["--learning_rate", "-0.001"], "--learning_rate must be positive, got -0.001"),
    (["--image_size", "48"], "--image_size 48 is not a power of two"),
    (["--latent_dim", "0"], "--latent_dim must be positive, got 0"),
    (["--epochs", "3"], "unrecognized arguments: --epochs 3; did you mean --num_epochs?"),
    (["--num_epochs", "ten"], "argument --num_epochs: invalid int value: 'ten'"),
])
def test_train_refuses_a_bad_flag_before_writing_anything(tmp_path, capsys, flags, match):
    fails(capsys, "train", "--out", tmp_path / "run", *flags, match=match)
    assert not (tmp_path / "run").exists()


# --model of sample.py and reconstruct.py.

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained tiny VAE (32px, latent dimension 8) saved as a run folder's best model."""
    model = vae.model.VAE(image_size=SIZE, latent_dim=8, width=8)
    model(np.zeros((1, SIZE, SIZE, 3), np.uint8))
    path = tmp_path_factory.mktemp("run") / "model_best.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("what, match", [
    ("missing", "does not exist"),
    ("truncated copy", "is damaged or not a model"),
    ("random bytes", "is damaged or not a model"),
    ("text named .keras", "is damaged or not a model"),
    ("text file", "is not a .keras file"),
    ("folder without a model", "holds no model_best.keras or model_last.keras"),
])
def test_sample_refuses_a_bad_model_file_and_writes_no_grid(tmp_path, capsys, model_file, what, match):
    path = {"missing": tmp_path / "missing.keras", "truncated copy": tmp_path / "cut.keras",
            "random bytes": tmp_path / "random.keras", "text named .keras": tmp_path / "notes.keras",
            "text file": tmp_path / "notes.txt", "folder without a model": tmp_path}[what]
    if what == "truncated copy":
        model_bytes = model_file.read_bytes()
        path.write_bytes(model_bytes[: len(model_bytes) // 2])
    elif what == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif what.startswith("text"):
        path.write_text("model: the good one\n")
    fails(capsys, "sample", "--model", path, "--out", tmp_path / "grid.png", "--num", 4, match=match)
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("flag, value", [("--image_size", 64), ("--latent_dim", 16)])
def test_a_model_of_another_size_than_asked_is_refused(tmp_path, capsys, model_file, flag, value):
    has = {"--image_size": SIZE, "--latent_dim": 8}[flag]
    match = f"{flag} {value} was asked, but the model has {flag} {has}"
    fails(capsys, "sample", "--model", model_file, flag, value, "--out", tmp_path / "grid.png", match=match)
    faces = write_pngs(tmp_path / "faces", blob_images(2, SIZE))
    fails(capsys, "reconstruct", "--model", model_file, flag, value, "--input", faces, "--output", tmp_path / "rec",
          match=match)
    assert not (tmp_path / "grid.png").exists() and not (tmp_path / "rec").exists()


def test_a_model_of_the_size_asked_is_used(tmp_path, capsys, model_file):
    invoke(MAIN["sample"], ["--model", str(model_file), "--image_size", "32", "--latent_dim", "8", "--num", "4",
                         "--out", str(tmp_path / "grid.png")])
    assert np.asarray(Image.open(tmp_path / "grid.png")).shape[0] >= 256
    # A bare .keras file has no run to fit the latent mixture on: the default prior falls back to N(0, I), saying so.
    assert "drawing from N(0, I)" in capsys.readouterr().err


def test_sample_writes_its_grid_last(tmp_path, capsys, model_file):
    """The grid is what marks a finished sample.py; when writing the single faces fails, there is none."""
    (tmp_path / "taken").write_text("a file where the faces' folder should go")
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN["sample"], ["--model", str(model_file), "--prior", "normal", "--num", "4",
                             "--individual", str(tmp_path / "taken"), "--out", str(tmp_path / "grid.png")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1 and "taken" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# --output of reconstruct.py.

@pytest.mark.parametrize("where", ["the same folder", "inside it", "a parent whose outputs land inside it"])
def test_reconstruct_never_writes_into_its_input(tmp_path, capsys, model_file, where):
    faces = write_pngs(tmp_path / "faces", blob_images(3, SIZE))
    write_pngs(faces / "faces", blob_images(1, SIZE))  # faces/faces/img_0000.png: output tmp_path would overwrite it
    output = {"the same folder": faces, "inside it": faces / "rec", "a parent whose outputs land inside it": tmp_path}[where]
    before = snapshot(tmp_path)
    fails(capsys, "reconstruct", "--model", model_file, "--input", faces, "--output", output, match="inside --input")
    assert snapshot(tmp_path) == before


def test_a_reconstruction_that_fails_midway_leaves_no_metrics_csv(tmp_path, monkeypatch):
    """metrics.csv is what marks a finished folder; one from an earlier run must not survive a failed one."""
    from vae.evaluation import reconstruction

    class Model:
        image_size = SIZE

    calls = []

    def decode_fails_on_second_batch(model, z, batch_size):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return z  # the images themselves, as encode below passes them on

    monkeypatch.setattr(reconstruction, "encode", lambda model, images, batch_size: (images, None))
    monkeypatch.setattr(reconstruction, "decode", decode_fails_on_second_batch)
    faces = write_pngs(tmp_path / "faces", blob_images(6, SIZE))
    output = tmp_path / "rec"
    output.mkdir()
    (output / "metrics.csv").write_text("file,output,l1,psnr,ssim\nold.png,old.png,0.1,20,0.5\n")
    with pytest.raises(RuntimeError, match="disk full"):
        reconstruct_folder(Model(), faces, output, batch_size=4, progress=False)
    assert sorted(p.name for p in output.iterdir()) == [f"img_{i:04d}.png" for i in range(4)]


# The command-line contract itself, in real processes.

def test_an_error_is_one_line_without_traceback_and_debug_shows_it(tmp_path):
    args = ["train.py", "--num_epochs", "0", "--out", tmp_path / "run"]
    plain, debug = run_script(*args), run_script(*args, "--debug")
    assert plain.returncode == 2 and plain.stderr == "error: --num_epochs must be positive, got 0\n"
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "UserError" in debug.stderr


def test_a_folder_mixing_good_images_with_every_bad_kind_trains_and_reconstructs(tmp_path, capsys):
    folder = write_all(write_pngs(tmp_path / "faces", blob_images(100, SIZE)), BROKEN, TOO_SMALL, IGNORED, USABLE)
    before = snapshot(folder)
    skipped, usable = len(BROKEN) + len(TOO_SMALL), 100 + len(USABLE)
    out = tmp_path / "run"
    stdout, stderr = cli(capsys, "train", "--data", folder, "--out", out, "--num_epochs", "1", "--val_split", "0.2", *TINY,
                     "--image_size", SIZE)  # the size the files above are made for
    warnings = [line for line in stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: skipped {skipped} of {skipped + usable} image files: ")
    assert sorted(line.split("\t")[0] for line in (out / "skipped.txt").read_text().splitlines()) == sorted(SKIP_REASONS)
    train, val = re.search(r"(\d+) training and (\d+) validation images", stdout).groups()
    assert int(train) + int(val) == usable
    assert (out / "model_best.keras").is_file() and stderr == ""

    stdout, stderr = cli(capsys, "reconstruct", "--model", out, "--input", folder, "--output", tmp_path / "rec")
    assert stderr == "" and f"warning: skipped {skipped} of {skipped + usable} image files: " in stdout
    assert len((tmp_path / "rec" / "metrics.csv").read_text().splitlines()) == 1 + usable
    assert snapshot(folder) == before


# Every command answers --help at once, and every user error is one line with exit code 2 (issue: clean answers).

HELP = [["train.py"], ["sample.py"], ["reconstruct.py"], ["evaluate.py"], ["explore.py"], ["explore.py", "interpolate"],
        ["explore.py", "traverse"], ["explore.py", "encode"], ["explore.py", "serve"], ["-m", "vae.data.synthetic"]]


@pytest.mark.parametrize("command", HELP, ids=" ".join)
def test_every_command_answers_help_without_loading_tensorflow(command):
    result = run_script("-c", in_process_probe([*command, "--help"]))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("usage: ") and result.stdout.endswith("\nexit 0, tensorflow loaded: False\n")
    if command == ["train.py"]:
        assert re.search(r"0\.05:\s+5%", result.stdout)  # a help text with a % sign
        assert result.stdout.count("(default: 0.001)") == 1 and "(default: None)" not in result.stdout


def test_debug_brings_back_tensorflows_log_that_train_py_keeps_quiet(tmp_path):
    # Quiet at TensorFlow's level 0 (everything it logs): test_signals' training and test_careless' error, one line each.
    missing = tmp_path / "missing"
    debug = run_script("train.py", "--data", missing, "--out", tmp_path / "run", "--debug", env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and f"{missing} does not exist" in debug.stderr
    assert re.search(r"^[IWE]\d{4} ", debug.stderr, re.M)  # TensorFlow's own log is back


@pytest.mark.parametrize("script, flags, match", [
    ("sample", ["--temperature", "inf"], "argument --temperature: must be a positive finite number, got inf"),
    ("sample", ["--temperature", "nan"], "argument --temperature: must be a positive finite number, got nan"),
    ("sample", ["--temperature", "0"], "argument --temperature: must be a positive finite number, got 0"),
    ("sample", ["--seed", "-1"], "argument --seed: must be a whole number of at least 0, got -1"),
    ("sample", ["--num", "0"], "argument --num: must be a whole number of at least 1, got 0"),
    ("sample", ["--out", "grid.jpg"], "--out grid.jpg: sample.py writes .png files; give a name ending in .png"),
    ("explore", ["traverse", "--span", "nan"], "argument --span: must be a positive finite number, got nan"),
    ("explore", ["traverse", "--out", "t.jpg"], "--out t.jpg: explore.py traverse writes .png files"),
    ("explore", ["traverse", "--dims", "1000"], "--dims must be from 1 to 8, got 1000"),
    ("explore", ["interpolate", "--random", "2", "--steps", "100000"], "--steps must be from 2 to 100, got 100000"),
    ("explore", ["interpolate", "--random", "1000"], "--random must be from 1 to 32, got 1000"),
    ("explore", ["encode", "--data", ".", "--out", "z.txt"], "--out z.txt: explore.py encode writes .npz files"),
    ("evaluate", ["--num_samples", "-5"], "argument --num_samples: must be a whole number of at least 1, got -5"),
    ("train", ["--seed", "-1"], "--seed must be a finite number of at least 0, got -1"),
    ("train", ["--latent_dim", "100000"], "--latent_dim must be at most 1024, got 100000"),
    ("train", ["--width", "100000"], "--width must be at most 512, got 100000"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, model_file, script, flags, match):
    model = [] if script == "train" else ["--model", model_file]
    if script == "explore":
        flags = [flags[0], *model, *flags[1:]]
        model = []
    fails(capsys, script, *model, *flags, *(["--out", tmp_path / "run"] if script == "train" else []), match=match)


def test_tf_config_that_is_not_json_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{'cluster': oops")
    fails(capsys, "train", "--strategy", "multiworker", "--out", tmp_path / "run", *TINY,
          match="TF_CONFIG is not valid JSON (Expecting property name enclosed in double quotes")


@pytest.mark.parametrize("script", ["train", "sample"])
def test_an_out_that_cannot_be_written_is_exit_2(tmp_path, capsys, model_file, script):
    (tmp_path / "a file").write_text("in the way")
    where = tmp_path / "a file" / ("run" if script == "train" else "grid.png")
    args = ["--out", where, *TINY] if script == "train" else ["--model", model_file, "--prior", "normal", "--out", where]
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN[script], [str(a) for a in args])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith(f"error: cannot use {tmp_path / 'a file'}") and len(err.splitlines()) == 1, err
