"""The image-quality measures against values worked out by hand on tiny arrays."""
import math

import numpy as np
import pytest

from vae.evaluation import quality
from vae.model import objective


def test_psnr_of_a_constant_error():
    a = np.full((2, 4, 4, 3), 0.5)
    assert np.asarray(objective.psnr(a, a + 0.1)) == pytest.approx([20.0, 20.0], rel=1e-5)  # MSE 0.01 -> -10 log10(0.01)
    black, grey = np.zeros((1, 2, 2, 3), np.uint8), np.full((1, 2, 2, 3), 51, np.uint8)  # uint8 on [0, 1]: 51/255 = 0.2
    assert np.asarray(objective.psnr(black, grey)) == pytest.approx([-20 * math.log10(0.2)], rel=1e-6)  # 13.979 dB


def test_ssim_of_identical_images_is_one():
    images = np.random.default_rng(0).random((3, 16, 16, 3))
    assert quality.ssim(images, images) == pytest.approx([1.0, 1.0, 1.0])


def test_ssim_of_two_flat_levels_is_the_luminance_term():
    x, y = np.full((1, 11, 11, 3), 0.5), np.full((1, 11, 11, 3), 0.25)
    c1 = 0.01**2  # no variance: the contrast-structure term is c2 / c2
    expected = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert quality.ssim(x, y) == pytest.approx([expected]) and expected == pytest.approx(0.80006, abs=1e-5)


def test_ssim_of_a_bright_centre_against_half_as_bright():
    # One 11x11 window; x is 1 at the centre and 0 elsewhere, y = x / 2. The centre's Gaussian weight is w = g0^2.
    g0 = 1 / sum(math.exp(-k * k / (2 * 1.5**2)) for k in range(-5, 6))
    w = g0 * g0
    x = np.zeros((1, 11, 11, 3))
    x[0, 5, 5] = 1.0
    mx, my, vx, vy, cov = w, w / 2, w * (1 - w), w * (1 - w) / 4, w * (1 - w) / 2
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert quality.ssim(x, x / 2) == pytest.approx([expected], rel=1e-9)
    # g0 = 1 / 3.7592, w = 0.0708: luminance term 0.803 times contrast-structure term 0.802.
    assert expected == pytest.approx(0.6443, abs=1e-4)


def test_ssim_agrees_with_tensorflow():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    a = rng.random((4, 24, 24, 3))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    ours = quality.ssim(a, b)
    theirs = tf.image.ssim(tf.constant(a, tf.float32), tf.constant(b, tf.float32), max_val=1.0).numpy()
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert 0.5 < ours.mean() < 0.95  # noisy, not unrelated


def test_laplace_scale_is_the_mean_absolute_error():
    assert objective.laplace_scale([[0.1, 0.0, 0.2], [0.3, 0.1, 0.1]]) == pytest.approx(0.8 / 6)


def test_bits_per_dim_of_a_one_pixel_image():
    # x = (0.2, 0.5, 0.8), x_hat = (0.3, 0.5, 0.6): sum |x - x_hat| = 0.3; b = 0.1; KL = 2 nats; D = 3.
    # -log p = 0.3 / 0.1 + 3 ln(0.2) = -1.8283 nats; plus KL: 0.1717 nats; / (3 ln 2) = 0.08256; + log2(255) = 7.99435.
    x, x_hat = np.array([[[[0.2, 0.5, 0.8]]]]), np.array([[[[0.3, 0.5, 0.6]]]])
    nll = np.asarray(objective.laplace_nll(x, x_hat, math.log(0.1)))
    assert nll == pytest.approx([0.3 / 0.1 + 3 * math.log(0.2)], rel=1e-5)
    bpd = objective.bits_per_dim(nll, [2.0], dims=3)
    assert bpd == pytest.approx([(3.0 + 3 * math.log(0.2) + 2.0) / (3 * math.log(2)) + math.log2(255)], rel=1e-6)
    assert bpd == pytest.approx([8.07692], abs=1e-5)
    # One scale per channel: each channel's error over its own scale, and its own normaliser.
    per_channel = np.asarray(objective.laplace_nll(x, x_hat, np.log([0.1, 0.2, 0.4])))
    assert per_channel == pytest.approx([0.1 / 0.1 + 0.0 / 0.2 + 0.2 / 0.4 + math.log(0.2 * 0.4 * 0.8)], rel=1e-5)


def test_bits_per_dim_of_a_uniform_density_is_the_8_bit_code_length():
    # b = 1/2 and no error: the density is 1 on [0, 1] (2b = 1), so each 8-bit value costs log2(255) bits, 8 with KL.
    flat = np.full((1, 2, 2, 3), 0.5)
    nll = np.asarray(objective.laplace_nll(flat, flat, math.log(0.5)))
    assert objective.bits_per_dim(nll, [0.0], dims=12) == pytest.approx([math.log2(255)])
    kl = 12 * math.log(2) * (8 - math.log2(255))  # the KL that tops the code length up to exactly 8 bits
    assert objective.bits_per_dim(nll, [kl], dims=12) == pytest.approx([8.0])


def test_sliced_wasserstein_of_shifted_one_dimensional_sets():
    a = np.arange(10, dtype=np.float32)[:, None]
    b = a[::-1] + 0.5  # the order of points must not matter
    assert quality.sliced_wasserstein(a, b, np.random.default_rng(0)) == pytest.approx(0.5)


def test_sliced_wasserstein_of_a_shift_in_the_plane():
    # Projecting a shift s onto a random unit direction u gives |u . s|, whose mean over the circle is 2|s| / pi.
    a = np.random.default_rng(0).standard_normal((200, 2)).astype(np.float32)
    got = quality.sliced_wasserstein(a, a + np.float32([3.0, 4.0]), np.random.default_rng(1), repeats=4, directions=4096)
    assert got == pytest.approx(2 * 5 / math.pi, rel=0.02)


def test_pyramid_levels_stop_at_16_pixels():
    assert quality.pyramid_resolutions(64) == [64, 32, 16]
    assert quality.pyramid_resolutions(32) == [32, 16]
    assert quality.pyramid_resolutions(16) == [16]


def test_laplacian_pyramid_of_a_flat_image_is_all_in_the_low_pass():
    levels = quality.laplacian_pyramid(np.full((1, 32, 32, 3), 100.0), 2)
    assert [lv.shape for lv in levels] == [(1, 32, 32, 3), (1, 16, 16, 3)]
    assert np.abs(levels[0]).max() == pytest.approx(0.0, abs=1e-4)
    assert levels[1] == pytest.approx(np.full((1, 16, 16, 3), 100.0))


def test_swd_of_identical_sets_is_zero_and_seeded():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    assert quality.swd(a, a) == {"32": 0.0, "16": 0.0, "avg": 0.0}
    first, again, other = quality.swd(a, b, seed=3), quality.swd(a, b, seed=3), quality.swd(a, b, seed=4)
    assert first == again and first != other
    assert first["avg"] == pytest.approx((first["32"] + first["16"]) / 2)
    assert 0 < first["avg"] < 50  # two sets of uniform noise: alike, up to the sampling floor


def test_swd_sees_structure_that_noise_lacks():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, 16, dtype=np.float32)[None, None, :, None], (20, 16, 16, 3))
    smooth = (ramp + rng.normal(0, 5, (20, 16, 16, 3))).clip(0, 255).astype(np.uint8)
    assert quality.swd(noise, smooth)["16"] > 10 * quality.swd(noise, noise[::-1])["16"]


def test_swd_refuses_sets_of_different_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        quality.swd(np.zeros((3, 16, 16, 3), np.uint8), np.zeros((4, 16, 16, 3), np.uint8))
