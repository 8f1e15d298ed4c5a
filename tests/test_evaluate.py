"""evaluate.py: the report of a tiny trained run, its numbers against the model's own, errors, and SWD on real faces."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from vae.cli import invoke
from vae.errors import UserError

from conftest import MAIN, cli

DIMS = 32 * 32 * 3


@pytest.fixture(scope="module")
def report(trained, model):
    from vae.evaluation.report import evaluate
    from vae.run import Run

    return evaluate(model, Run.open(trained[1]), progress=False)[0]


def test_cli_writes_and_prints_the_report(trained, tmp_path, capsys):
    _, run = trained
    stdout, _ = cli(capsys, "evaluate", "--model", run, "--out", tmp_path / "eval")
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    validation = json.loads((run / "split.json").read_text())["validation"]
    assert report["images"] == report["swd_images"] == len(validation) > 0
    assert report["laplace_scale_fitted_on"].startswith(f"fitted on {40 - len(validation)} training images")
    assert set(report["swd_x1e3"]) == {"32", "16", "avg"} and report["swd_x1e3"]["avg"] > 0
    assert f"| PSNR | {report['psnr']:.2f} dB |" in stdout
    assert f"| SWD x1e3, 16 px | {report['swd_x1e3']['16']:.2f} |" in stdout
    # 8 validation images: the SWD is noise, and the report says so.
    assert f"warning: SWD on {len(validation)} images is mostly sampling noise" in stdout
    assert report["swd_warning"].startswith(f"SWD on {len(validation)} images")
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "![reconstructions](reconstructions.png)" in markdown and "bits/dim" in markdown
    grid = np.asarray(Image.open(tmp_path / "eval" / "reconstructions.png"))
    assert grid.shape[1] >= 256 and grid.std() > 1


def test_report_agrees_with_the_model_and_tensorflow(trained, model, report):
    from vae.data import dataset
    from vae.evaluation.reconstruction import image_metrics
    from vae.model.objective import bits_per_dim, kl_per_dim
    from vae.model.vae import ACTIVE_UNIT_NATS

    images, run = trained
    faces = dataset.load_faces(images, 32, progress=False)
    validation = json.loads((run / "split.json").read_text())["validation"]
    val_idx = [faces.names.index(n) for n in validation]
    train_idx = [i for i in range(len(faces)) if faces.names[i] not in validation]
    originals = faces.numpy(val_idx)
    metrics = image_metrics(originals, (np.clip(model.predict(originals, verbose=0), 0, 1) * 255 + 0.5).astype(np.uint8))
    for name in ("l1", "psnr", "ssim"):
        assert report[name] == pytest.approx(float(metrics[name].mean()), abs=1e-4), name
    kl = np.asarray(kl_per_dim(*model.encoder.predict(originals / 255.0, verbose=0)))
    assert report["kl_per_image"] == pytest.approx(float(kl.sum(axis=1).mean()), rel=1e-4)
    assert report["active_units"] == int((kl.mean(axis=0) > ACTIVE_UNIT_NATS).sum())
    # The model's test_step also draws z from q(z|x): its L1 matches the fitted scale and the ELBO, up to that noise.
    model.compile()  # loaded without its optimizer; evaluate() only needs the test step
    val = model.evaluate(dataset.eval_batches(faces, val_idx, 8), return_dict=True, verbose=0)
    train = model.evaluate(dataset.eval_batches(faces, train_idx, 8), return_dict=True, verbose=0)
    (b,) = report["laplace_scale"]
    assert b == pytest.approx(train["recon"] / DIMS, rel=0.02)
    expected = float(bits_per_dim(val["recon"] / b + DIMS * math.log(2 * b), val["kl"], DIMS))
    assert report["bits_per_dim"] == pytest.approx(expected, abs=0.03)
    assert math.log2(255) < report["bits_per_dim"] < 10  # a 1-epoch model: worse than a uniform 8-bit code


def test_data_flag_evaluates_a_whole_folder(trained, model):
    from vae.evaluation.report import evaluate
    from vae.run import Run

    images, run = trained
    report, grids = evaluate(model, Run.open(run), data=images, num_samples=10, progress=False)
    assert report["images"] == 40 and report["swd_images"] == 10 and report["data"] == f"all images under {images}"
    # 32 faces: 4 rows of originals over 4 of reconstructions
    assert grids["reconstructions"].shape == (8 * 34 + 2, 8 * 34 + 2, 3)


def test_unusable_inputs_are_user_errors(trained, model, tmp_path):
    from vae.evaluation.report import evaluate
    from vae.run import Run

    _, run = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        evaluate(model, Run.open(run), data=tmp_path / "empty", progress=False)
    (tmp_path / "lone").mkdir()  # a model file without its run folder: no split.json to find validation images in
    with pytest.raises(UserError, match="pass --data"):
        evaluate(model, Run(tmp_path / "lone"), progress=False)
    with pytest.raises(UserError, match="--num_samples must be positive"):
        evaluate(model, Run.open(run), num_samples=0, progress=False)


def test_cli_refuses_a_damaged_model(trained, tmp_path, capsys):
    (tmp_path / "model.keras").write_bytes(b"not a zip file")
    with pytest.raises(SystemExit) as exit:
        invoke(MAIN["evaluate"], ["--model", str(tmp_path / "model.keras"), "--data", str(trained[0])])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"error: --model {tmp_path / 'model.keras'} is damaged") and len(err.splitlines()) == 1


def test_swd_tells_real_faces_from_an_untrained_model(real_faces):
    from vae.data.dataset import load_faces
    from vae.data.image_files import find_images
    from vae.evaluation.quality import swd
    from vae.model.vae import VAE, decode
    from vae.priors import StandardNormal, prior_latents

    names = [p.relative_to(real_faces).as_posix() for p in find_images(real_faces)[:600]]
    faces = load_faces(real_faces, 32, progress=False, names=names).numpy(range(600))
    samples = decode(VAE(image_size=32, latent_dim=8, width=8, seed=0), prior_latents(StandardNormal(8), 300, seed=0))
    real_vs_real, real_vs_samples = swd(faces[:300], faces[300:]), swd(faces[:300], samples)
    print(f"SWD x1e3 real/real {real_vs_real}, real/untrained samples {real_vs_samples}")
    for level in ("32", "16", "avg"):
        assert real_vs_real[level] < 0.3 * real_vs_samples[level], level


def test_temperature_scales_the_swd_samples_and_is_reported(trained, model, tmp_path, capsys):
    from vae.evaluation.report import evaluate
    from vae.run import Run

    cold, grids = evaluate(model, Run.open(trained[1]), seed=1, progress=False, prior="normal", temperature=0.01)
    _, warm = evaluate(model, Run.open(trained[1]), seed=1, progress=False, prior="normal")
    assert cold["swd_temperature"] == 0.01
    # At temperature 0.01 every N(0, I) sample is decoded from nearly z = 0: nearly the same face.
    tiles = [grids["samples"][2:34, 2 + c * 34 : 34 + c * 34].astype(int) for c in range(2)]
    warm_tiles = [warm["samples"][2:34, 2 + c * 34 : 34 + c * 34].astype(int) for c in range(2)]
    assert np.abs(tiles[0] - tiles[1]).max() <= 2 < np.abs(warm_tiles[0] - warm_tiles[1]).max()
    stdout, _ = cli(capsys, "evaluate", "--model", trained[1], "--out", tmp_path, "--temperature", "0.5")
    assert "from the gmm prior at temperature 0.5 vs as many images" in stdout
