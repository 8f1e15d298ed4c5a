"""The three scripts end to end, each in a fresh process on a temporary folder of generated PNGs."""
import csv
import json

import numpy as np
import pytest
from conftest import TINY, run_script
from PIL import Image


def test_train_writes_a_complete_run_folder(trained_run):
    images, out, result = trained_run
    for name in ["config.json", "model_best.keras", "model_last.keras", "history.csv", "split.json",
                 "samples/epoch_001.png", "samples/epoch_002.png", "reconstructions/epoch_002.png"]:
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["image_size"] == 32 and config["latent_dim"] == 8 and config["num_epochs"] == 2
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        assert float(row["loss"]) > 0 and np.isfinite(float(row["val_psnr"]))
    assert "epoch 2/2" in result.stdout and "Traceback" not in result.stderr
    grid = np.asarray(Image.open(out / "samples" / "epoch_002.png"))
    assert grid.shape[0] >= 256 and grid.std() > 1  # 8x8 faces, enlarged, not blank


def test_rerunning_a_finished_run_refuses_to_overwrite(trained_run):
    images, out, _ = trained_run
    result = run_script("train.py", "--data", images, "--out", out, "--num_epochs", "2", "--val_split", "0.2", *TINY)
    assert result.returncode == 2
    assert "finished run" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr


def test_sample_is_deterministic_and_writes_individual_faces(trained_run, tmp_path):
    _, out, _ = trained_run
    a = run_script("sample.py", "--model", out, "--num", "9", "--seed", "3", "--out", tmp_path / "a.png",
                   "--individual", tmp_path / "faces")
    b = run_script("sample.py", "--model", out / "model_best.keras", "--num", "9", "--seed", "3", "--out", tmp_path / "b.png")
    c = run_script("sample.py", "--model", out, "--num", "9", "--seed", "4", "--out", tmp_path / "c.png")
    assert a.returncode == b.returncode == c.returncode == 0, a.stderr + b.stderr + c.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()
    faces = sorted((tmp_path / "faces").glob("face_*.png"))
    assert len(faces) == 9 and np.asarray(Image.open(faces[0])).shape == (32, 32, 3)


def test_sample_temperature_scales_variety(trained_run, tmp_path):
    _, out, _ = trained_run
    for t in ("0.1", "1.5"):
        result = run_script("sample.py", "--model", out, "--num", "16", "--temperature", t, "--individual", tmp_path / t,
                            "--out", tmp_path / f"{t}.png")
        assert result.returncode == 0, result.stderr
    spread = {t: np.std([np.asarray(Image.open(p), float) for p in sorted((tmp_path / t).glob("*.png"))], axis=0).mean()
              for t in ("0.1", "1.5")}
    assert spread["0.1"] < spread["1.5"]


def test_reconstruct_mirrors_the_folder_and_measures_each_image(trained_run, tmp_path):
    images, out, _ = trained_run
    nested = tmp_path / "input" / "sub dir"
    nested.mkdir(parents=True)
    for p in sorted(images.glob("*.png"))[:5]:
        (nested / p.name.replace(".png", ".jpg")).write_bytes(p.read_bytes())  # PNG bytes named .jpg
    before = {p: p.read_bytes() for p in (tmp_path / "input").rglob("*") if p.is_file()}
    result = run_script("reconstruct.py", "--model", out, "--input", tmp_path / "input", "--output", tmp_path / "rec")
    assert result.returncode == 0, result.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "input").rglob("*") if p.is_file()} == before
    written = sorted(p.relative_to(tmp_path / "rec").as_posix() for p in (tmp_path / "rec").rglob("*.png"))
    assert written == ["comparison.png"] + [f"sub dir/img_{i:04d}.png" for i in range(5)]
    rows = list(csv.DictReader(open(tmp_path / "rec" / "metrics.csv")))
    assert len(rows) == 5
    for row in rows:
        assert 0 < float(row["l1"]) < 1 and 5 < float(row["psnr"]) < 60 and -1 <= float(row["ssim"]) <= 1


@pytest.mark.parametrize("where", ["same", "inside"])
def test_reconstruct_refuses_to_write_into_its_input(trained_run, where):
    images, out, _ = trained_run
    target = images if where == "same" else images / "rec"
    result = run_script("reconstruct.py", "--model", out, "--input", images, "--output", target)
    assert result.returncode == 2 and "inside --input" in result.stderr
    assert not (images / "rec").exists() and not (images / "comparison.png").exists()


def test_sample_from_the_latent_mixture_fitted_at_the_end_of_training(trained_run, tmp_path):
    _, out, _ = trained_run
    cache = out / "model_best.gmm.npz"
    assert cache.exists() and cache.stat().st_mtime >= (out / "model_best.keras").stat().st_mtime
    fitted = cache.read_bytes()
    a = run_script("sample.py", "--model", out, "--prior", "gmm", "--num", "9", "--out", tmp_path / "a.png")
    assert a.returncode == 0, a.stderr
    assert cache.read_bytes() == fitted  # used, not refitted
    normal = run_script("sample.py", "--model", out, "--prior", "normal", "--num", "9", "--out", tmp_path / "n.png")
    assert normal.returncode == 0, normal.stderr
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "n.png").read_bytes()
    # Without the cache (an older run), the mixture is fitted again from the run's training images, identically.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ["config.json", "split.json", "model_best.keras"]:
        (copy / name).write_bytes((out / name).read_bytes())
    b = run_script("sample.py", "--model", copy, "--prior", "gmm", "--num", "9", "--out", tmp_path / "b.png")
    assert b.returncode == 0, b.stderr
    assert (copy / "model_best.gmm.npz").exists()
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "a.png").read_bytes()
