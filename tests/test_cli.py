"""The scripts end to end on a tiny trained run, in-process through vae.cli.invoke as their command lines run them."""
import csv
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from vae.cli import invoke

from conftest import MAIN, SIZE, TINY, blob_images, cli, write_pngs


def test_train_writes_a_complete_run_folder(trained_run):
    images, out, result = trained_run
    for name in ["config.json", "model_best.keras", "model_last.keras", "history.csv", "split.json", "loss_curve.png",
                 "samples/epoch_001.png", "samples/epoch_002.png", "reconstructions/epoch_002.png", "model_best.gmm.npz"]:
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["image_size"] == 32 and config["latent_dim"] == 8 and config["num_epochs"] == 2
    assert config["data"] == str(images) and config["out"] == str(out)  # absolute, as resolved
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        assert float(row["loss"]) > 0 and np.isfinite(float(row["val_psnr"]))
    assert "epoch 2/2" in result.stdout and result.stderr == ""
    grid = np.asarray(Image.open(out / "samples" / "epoch_002.png"))
    assert grid.shape[0] >= 256 and grid.std() > 1  # 8x8 faces, enlarged, not blank


def test_rerunning_a_finished_run_refuses_to_overwrite(trained_run, capsys):
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN["train"], trained_run[2].args[1:])  # the same command again
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "finished run" in err and "--overwrite" in err and len(err.splitlines()) == 1


def test_sample_is_deterministic_and_writes_individual_faces(trained, tmp_path, capsys):
    _, out = trained
    cli(capsys, "sample", "--model", out, "--num", "9", "--seed", "3", "--out", tmp_path / "a.png",
        "--individual", tmp_path / "faces")
    cli(capsys, "sample", "--model", out / "model_best.keras", "--num", "9", "--seed", "3", "--out", tmp_path / "b.png")
    cli(capsys, "sample", "--model", out, "--num", "9", "--seed", "4", "--out", tmp_path / "c.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()
    faces = sorted((tmp_path / "faces").glob("face_*.png"))
    assert [f.name for f in faces] == [f"face_{i:04d}.png" for i in range(9)]
    assert np.asarray(Image.open(faces[0])).shape == (32, 32, 3)


def test_sample_streams_many_faces_in_chunks_and_caps_the_grid(trained, tmp_path, capsys):
    _, out = trained
    stdout, _ = cli(capsys, "sample", "--model", out, "--num", "1100", "--out", tmp_path / "many.png",
                    "--individual", tmp_path / "f")
    assert "wrote 1100 faces" in stdout and "the grid shows the first 1024" in stdout
    faces = sorted((tmp_path / "f").glob("*.png"))
    assert len(faces) == 1100 and faces[-1].name == "face_1099.png"
    cli(capsys, "sample", "--model", out, "--num", "4", "--out", tmp_path / "few.png", "--individual", tmp_path / "g")
    for i in range(4):  # the first faces do not depend on --num
        assert (tmp_path / "g" / f"face_{i:04d}.png").read_bytes() == (tmp_path / "f" / f"face_{i:04d}.png").read_bytes()
    grid = np.asarray(Image.open(tmp_path / "many.png"))
    assert grid.shape == (32 * 34 + 2, 32 * 34 + 2, 3)  # 32 x 32 faces of 32 px with 2 px gaps


def test_sample_temperature_scales_variety(trained, tmp_path, capsys):
    _, out = trained
    for t in ("0.1", "1.5"):
        cli(capsys, "sample", "--model", out, "--num", "16", "--temperature", t, "--individual", tmp_path / t,
            "--out", tmp_path / f"{t}.png")
    spread = {t: np.std([np.asarray(Image.open(p), float) for p in sorted((tmp_path / t).glob("*.png"))], axis=0).mean()
              for t in ("0.1", "1.5")}
    assert spread["0.1"] < spread["1.5"]


def test_reconstruct_mirrors_the_folder_and_measures_each_image(trained, tmp_path, capsys):
    images, out = trained
    nested = tmp_path / "input" / "sub dir"
    nested.mkdir(parents=True)
    for p in sorted(images.glob("*.png"))[:5]:
        (nested / p.name.replace(".png", ".jpg")).write_bytes(p.read_bytes())  # PNG bytes named .jpg
    before = {p: p.read_bytes() for p in (tmp_path / "input").rglob("*") if p.is_file()}
    cli(capsys, "reconstruct", "--model", out, "--input", tmp_path / "input", "--output", tmp_path / "rec")
    assert {p: p.read_bytes() for p in (tmp_path / "input").rglob("*") if p.is_file()} == before
    written = sorted(p.relative_to(tmp_path / "rec").as_posix() for p in (tmp_path / "rec").rglob("*.png"))
    assert written == ["comparison.png"] + [f"sub dir/img_{i:04d}.png" for i in range(5)]
    rows = list(csv.DictReader(open(tmp_path / "rec" / "metrics.csv")))
    assert len(rows) == 5
    for row in rows:
        assert 0 < float(row["l1"]) < 1 and 5 < float(row["psnr"]) < 60 and -1 <= float(row["ssim"]) <= 1


@pytest.mark.parametrize("where", ["same", "inside"])
def test_reconstruct_refuses_to_write_into_its_input(trained, capsys, where):
    images, out = trained
    target = images if where == "same" else images / "rec"
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN["reconstruct"], [str(a) for a in ["--model", out, "--input", images, "--output", target]])
    assert exit.value.code == 2 and "inside --input" in capsys.readouterr().err
    assert not (images / "rec").exists() and not (images / "comparison.png").exists()


def test_sample_from_the_latent_mixture_fitted_at_the_end_of_training(trained, tmp_path, capsys):
    _, out = trained
    cache = out / "model_best.gmm.npz"
    fitted = cache.read_bytes()
    with np.load(cache) as saved:  # tied to the bytes of the model it was fitted for
        assert str(saved["model_checksum"]) == hashlib.sha256((out / "model_best.keras").read_bytes()).hexdigest()
    cli(capsys, "sample", "--model", out, "--prior", "gmm", "--num", "9", "--out", tmp_path / "a.png")
    assert cache.read_bytes() == fitted  # used, not refitted
    cli(capsys, "sample", "--model", out, "--prior", "normal", "--num", "9", "--out", tmp_path / "n.png")
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "n.png").read_bytes()
    # Without it (an older run), or with one fitted for other bytes, the mixture is fitted again in memory from the run's
    # training images, identically, and nothing is written.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ["config.json", "split.json", "model_best.keras"]:
        (copy / name).write_bytes((out / name).read_bytes())
    _, err = cli(capsys, "sample", "--model", copy, "--prior", "gmm", "--num", "9", "--out", tmp_path / "b.png")
    assert "fitted in memory for this command (nothing is written)" in err
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "model_best.keras", "split.json"]
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "a.png").read_bytes()
    from vae.priors import GaussianMixture

    stale = GaussianMixture(np.ones(1), np.full((1, 8), 5.0), np.eye(8)[None])
    stale.save(copy / "model_best.gmm.npz", model_checksum="0" * 64)
    _, err = cli(capsys, "sample", "--model", copy, "--prior", "gmm", "--num", "9", "--out", tmp_path / "s.png")
    assert "belongs to another model" in err and (tmp_path / "s.png").read_bytes() == (tmp_path / "a.png").read_bytes()
    # A damaged config.json is named, not silently replaced by N(0, I).
    (copy / "model_best.gmm.npz").unlink()
    (copy / "config.json").write_text("{not json")
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN["sample"], ["--model", str(copy), "--num", "4", "--out", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and f"{copy / 'config.json'} cannot be read" in err and not (tmp_path / "c.png").exists()


def test_too_few_training_images_for_the_mixture_fall_back_to_the_normal_prior(tmp_path, capsys):
    images = write_pngs(tmp_path / "images", blob_images(10, SIZE))
    out = tmp_path / "run"
    stdout, _ = cli(capsys, "train", "--data", images, "--out", out, "--num_epochs", "1", "--val_split", "0.2", *TINY)
    assert "training images are too few to fit the latent mixture" in stdout and "sample.py will draw from N(0, I)" in stdout
    assert not (out / "model_best.gmm.npz").exists()
    _, err = cli(capsys, "sample", "--model", out, "--num", "4", "--out", tmp_path / "grid.png")
    assert "too few to fit the latent mixture" in err and "drawing from N(0, I)" in err
    assert np.isfinite(np.asarray(Image.open(tmp_path / "grid.png"), float)).all()
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN["sample"], ["--model", str(out), "--prior", "gmm", "--out", str(tmp_path / "gmm.png")])
    assert exit.value.code == 2 and "use --prior normal" in capsys.readouterr().err
