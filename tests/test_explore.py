"""explore.py: spherical interpolation, strips and GIFs, traversals and encoding a folder, on a tiny trained run."""
import numpy as np
import pytest
from PIL import Image

from vae.errors import UserError
from vae.pictures import save_gif

from conftest import cli


def tile(grid, row, col, size=32, gap=2):
    """The image at (row, col) of a vae.images.make_grid grid."""
    top, left = gap + row * (size + gap), gap + col * (size + gap)
    return grid[top : top + size, left : left + size]


def test_slerp_follows_the_great_circle():
    from vae.evaluation.latent import slerp

    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    path = slerp(a, b, [0.0, 0.5, 1.0])
    assert path[0] == pytest.approx(a) and path[2] == pytest.approx(b)
    # The angle is 90 degrees: half way, each end weighs sin(45) / sin(90).
    assert path[1] == pytest.approx(np.array([1.0, 2.0, 0.0]) * np.sqrt(0.5), abs=1e-6)
    unit = slerp(a, [0.0, 1.0, 0.0], np.linspace(0, 1, 7))
    assert np.linalg.norm(unit, axis=1) == pytest.approx(np.ones(7), abs=1e-6)  # stays on the sphere, unlike a straight line
    assert slerp(a, 3 * a, [0.5])[0] == pytest.approx([2.0, 0.0, 0.0])  # parallel: the straight line


def test_interpolating_two_images(trained, model, tmp_path, capsys):
    from vae.data.image_files import load_image
    from vae.pictures import to_uint8

    images, run = trained
    a, b = images / "img_0003.png", images / "img_0007.png"
    cli(capsys, "explore", "interpolate", "--model", run, "--images", a, b, "--steps", "5", "--out", tmp_path / "strip.png")
    strip = np.asarray(Image.open(tmp_path / "strip.png"))
    assert strip.shape == (2 * 36, 2 * (7 * 34 + 2), 3)  # 7 tiles: original, 5 faces, original; enlarged 2x to 256+
    strip = strip[::2, ::2]
    assert np.array_equal(tile(strip, 0, 0), load_image(a, 32)) and np.array_equal(tile(strip, 0, 6), load_image(b, 32))
    # The ends of the path are the posterior means: the first and last faces are the two reconstructions.
    for col, path in ((1, a), (5, b)):
        expected = to_uint8(model.predict(load_image(path, 32)[None], verbose=0))[0]
        assert np.abs(tile(strip, 0, col).astype(int) - expected).max() <= 1
    assert not np.array_equal(tile(strip, 0, 1), tile(strip, 0, 5))  # a 1-epoch model's faces are all but grey
    gif = Image.open(tmp_path / "strip.gif")
    assert gif.n_frames == 2 * 5 - 2 and gif.info["loop"] == 0 and gif.info["duration"] == 80  # forward, then back
    assert gif.size == (4 * (3 * 34 + 2), 4 * 36)  # enlarged until the 36 px height is at least 128


def test_interpolating_random_prior_points(model, tmp_path):
    from vae.evaluation import latent
    from vae.priors import StandardNormal

    normal = StandardNormal(model.latent_dim)
    grid, frames = latent.interpolate_prior(model, pairs=3, steps=4, seed=0, prior=normal)
    assert grid.shape == (3 * 34 + 2, 4 * 34 + 2, 3) and len(frames) == 4
    assert np.array_equal(tile(frames[2], 0, 1), tile(grid, 1, 2))  # frame k shows step k of every pair
    again, _ = latent.interpolate_prior(model, pairs=3, steps=4, seed=0, prior=normal)
    assert np.array_equal(grid, again) and not np.array_equal(grid, latent.interpolate_prior(model, 3, 4, 1, normal)[0])
    save_gif(frames, tmp_path / "random.gif")
    assert Image.open(tmp_path / "random.gif").n_frames == 6


def test_interpolation_needs_two_existing_images(trained, model, tmp_path):
    from vae.evaluation import latent

    images, _ = trained
    with pytest.raises(UserError, match="exactly two"):
        latent.interpolate_images(model, [str(images / "img_0000.png")], 5)
    with pytest.raises(UserError, match="does not exist"):
        latent.interpolate_images(model, [str(images / "img_0000.png"), str(tmp_path / "nope.png")], 5)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read"):
        latent.interpolate_images(model, [str(images / "img_0000.png"), str(tmp_path / "bad.png")], 5)


def test_traversal_moves_one_dimension_per_row(trained, tmp_path, capsys):
    _, run = trained
    stdout, _ = cli(capsys, "explore", "traverse", "--model", run, "--dims", "3", "--steps", "5", "--out", tmp_path / "t.png")
    rows = [int(part.split(" ")[0][1:]) for part in stdout.split(": ", 1)[1].split(", ")]
    assert len(rows) == len(set(rows)) == 3 and all(0 <= d < 8 for d in rows)
    grid = np.asarray(Image.open(tmp_path / "t.png"))
    assert grid.shape == (2 * (3 * 34 + 2), 2 * (5 * 34 + 2), 3)
    grid = grid[::2, ::2]
    # The middle column sets each dimension to 0, the prior mean: every row shows the same face there.
    assert np.array_equal(tile(grid, 0, 2), tile(grid, 1, 2)) and np.array_equal(tile(grid, 0, 2), tile(grid, 2, 2))
    assert not np.array_equal(tile(grid, 0, 0), tile(grid, 0, 4))


def test_mean_kl_is_the_closed_form_averaged_over_images(model):
    from vae.evaluation.latent import mean_kl
    from vae.model.vae import encode

    mean, log_var = encode(model, np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    by_hand = (0.5 * (np.exp(log_var) + mean**2 - 1 - log_var)).mean(axis=0)
    assert mean_kl(mean, log_var) == pytest.approx(by_hand, abs=1e-6) and by_hand.shape == (8,)


def test_traversal_sets_one_coordinate_of_the_base(model):
    from vae.evaluation.latent import traversal_grid
    from vae.model.vae import decode

    grid = traversal_grid(model, np.full(8, 0.5, np.float32), [4], steps=3, span=2.0)
    for col, value in enumerate([-2.0, 0.0, 2.0]):
        z = np.full((1, 8), 0.5, np.float32)
        z[0, 4] = value
        assert np.array_equal(tile(grid, 0, col), decode(model, z)[0])


def test_encode_writes_names_means_and_log_variances(trained, model, tmp_path, capsys):
    from vae.data.image_files import load_image
    from vae.model.vae import encode

    images, run = trained
    stdout, _ = cli(capsys, "explore", "encode", "--model", run, "--data", images, "--out", tmp_path / "z.npz")
    assert "40 images" in stdout
    latents = np.load(tmp_path / "z.npz")  # no pickles: names are a unicode array
    assert list(latents["names"]) == [f"img_{i:04d}.png" for i in range(40)]
    assert latents["mean"].shape == latents["log_var"].shape == (40, 8)
    mean, log_var = encode(model, np.stack([load_image(images / "img_0005.png", 32)]))
    assert latents["mean"][5] == pytest.approx(mean[0], abs=1e-5)
    assert latents["log_var"][5] == pytest.approx(log_var[0], abs=1e-5)


def test_encoding_an_empty_folder_is_a_user_error(model, tmp_path):
    from vae.evaluation.latent import encode_folder

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        encode_folder(model, tmp_path / "empty", tmp_path / "z.npz", progress=False)
    assert not (tmp_path / "z.npz").exists()
