"""Image-quality measures in numpy: SSIM, and the sliced Wasserstein distance between sets of images.

PSNR and bits per dimension are in vae.model.objective, beside the loss they come from."""
from __future__ import annotations

import math

import numpy as np

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
# Karras et al. 2018 (progressive_growing_of_gans/metrics/sliced_wasserstein.py): 7x7 patches, 128 per image per
# pyramid level, levels down to 16 px, 4 repeats of 128 random directions.
PATCH_SIZE, PATCHES_PER_IMAGE, SWD_REPEATS, SWD_DIRECTIONS, SWD_MIN_RESOLUTION = 7, 128, 4, 128, 16
PYRAMID_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # the 5-tap binomial filter of cv2.pyrDown


def _unit(images) -> np.ndarray:
    """Images as float64 on [0, 1]; uint8 is divided by 255."""
    images = np.asarray(images)
    return images / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)


def _gaussian_valid(x: np.ndarray) -> np.ndarray:
    """Weighted means over every 11x11 window inside (n, h, w, c) images (no padding), Gaussian sigma 1.5."""
    offsets = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
    g = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    g /= g.sum()
    rows, cols = x.shape[1] - SSIM_WINDOW + 1, x.shape[2] - SSIM_WINDOW + 1
    x = sum(g[i] * x[:, i : i + rows] for i in range(SSIM_WINDOW))
    return sum(g[j] * x[:, :, j : j + cols] for j in range(SSIM_WINDOW))


def ssim(a, b) -> np.ndarray:
    """Structural similarity of each image pair (n, h, w, c) on [0, 1] (uint8 is scaled), as in Wang et al. 2004.

    Gaussian 11x11 window with sigma 1.5, K1 = 0.01, K2 = 0.03, dynamic range 1; the SSIM map over every window
    that fits inside the image, averaged over positions and channels (what tf.image.ssim computes).
    """
    x, y = _unit(a), _unit(b)
    if min(x.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {x.shape[1]}x{x.shape[2]}")
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mx, my = _gaussian_valid(x), _gaussian_valid(y)
    vx, vy = _gaussian_valid(x * x) - mx**2, _gaussian_valid(y * y) - my**2
    cov = _gaussian_valid(x * y) - mx * my
    ssim_map = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.mean(axis=(1, 2, 3))


def _blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 5x5 filter of (n, h, w, c) images with mirrored borders (d c b | a b c d | c b a, as scipy's 'mirror')."""
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    x = sum(kernel[i] * padded[:, i : i + h] for i in range(5))
    return sum(kernel[j] * x[:, :, j : j + w] for j in range(5))


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass levels from full resolution down, the last one the low-pass residual (cv2.pyrDown/pyrUp filters)."""
    pyramid = [np.asarray(images, np.float32)]
    for _ in range(1, levels):
        down = _blur(pyramid[-1], PYRAMID_KERNEL)[:, ::2, ::2]
        up = np.zeros_like(pyramid[-1])
        up[:, ::2, ::2] = down
        pyramid[-1] = pyramid[-1] - _blur(up, PYRAMID_KERNEL * 2.0)  # x4 in 2-D: 3 of 4 pixels are zeros
        pyramid.append(down)
    return pyramid


def _patches(level: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PATCHES_PER_IMAGE random 7x7 patches of every image: (n * patches, 7, 7, channels)."""
    n, h, w, _ = level.shape
    half = PATCH_SIZE // 2
    count = n * PATCHES_PER_IMAGE
    image = np.repeat(np.arange(n), PATCHES_PER_IMAGE)[:, None, None]
    offsets = np.arange(-half, half + 1)
    ys = rng.integers(half, h - half, count)[:, None, None] + offsets[None, :, None]
    xs = rng.integers(half, w - half, count)[:, None, None] + offsets[None, None, :]
    return level[image, ys, xs]


def _normalised(descriptors: np.ndarray) -> np.ndarray:
    """Each colour channel to zero mean and unit deviation over the whole set, then one flat vector per patch."""
    d = descriptors - descriptors.mean(axis=(0, 1, 2), keepdims=True)
    d = d / np.maximum(d.std(axis=(0, 1, 2), keepdims=True), 1e-8)
    return d.reshape(len(d), -1).astype(np.float32)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                       repeats: int = SWD_REPEATS, directions: int = SWD_DIRECTIONS) -> float:
    """Sliced Wasserstein-1 distance of two equal-size point sets (n, d): the mean over random unit directions
    of the mean |difference| of the sorted projections, over `repeats` sets of `directions` directions."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs sets of equal shape, got {a.shape} and {b.shape}")
    results = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], directions))
        dirs = (dirs / np.linalg.norm(dirs, axis=0, keepdims=True)).astype(a.dtype)
        # One row per direction, so each sort runs over contiguous memory.
        pa, pb = np.sort(dirs.T @ a.T, axis=1), np.sort(dirs.T @ b.T, axis=1)
        results.append(float(np.mean(np.abs(pa - pb))))
    return float(np.mean(results))


def pyramid_resolutions(size: int) -> list[int]:
    """The pyramid levels SWD compares: the image size, halved while at least 16 px."""
    return [size >> i for i in range(int(math.log2(size)) + 1) if size >> i >= SWD_MIN_RESOLUTION]


def swd(real, fake, seed: int = 0) -> dict[str, float]:
    """Sliced Wasserstein distance x 1e3 between two equal-size sets of images, per Laplacian-pyramid level, and the average.

    As Karras et al. 2018 ("Progressive Growing of GANs", appendix D and their code): pixels on 0..255, a Laplacian
    pyramid from the image size down to 16 px, 128 random 7x7 patches per image per level, each set's descriptors
    normalised per colour channel by that set's own mean and deviation, then the sliced Wasserstein distance over
    4 x 128 random directions. Keys are the level sizes ("64", "32", "16") and "avg". The value depends on the number
    of images (fewer means a larger sampling floor): compare only scores computed on equally many images.
    The same seed draws the same patch positions in both sets, so identical sets score exactly 0.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    if real.shape != fake.shape or real.ndim != 4:
        raise ValueError(f"swd needs two (n, size, size, 3) sets of equal shape, got {real.shape} and {fake.shape}")
    scale = 1.0 if real.dtype == np.uint8 else 255.0
    resolutions = pyramid_resolutions(real.shape[1])
    if not resolutions:
        raise ValueError(f"swd needs images of at least {SWD_MIN_RESOLUTION} px, got {real.shape[1]}")
    levels_real = laplacian_pyramid(real * scale, len(resolutions))
    levels_fake = laplacian_pyramid(fake * scale, len(resolutions))
    result = {}
    for i, (res, lr, lf) in enumerate(zip(resolutions, levels_real, levels_fake)):
        da = _normalised(_patches(lr, np.random.default_rng([seed, i, 0])))
        db = _normalised(_patches(lf, np.random.default_rng([seed, i, 0])))
        result[str(res)] = 1e3 * sliced_wasserstein(da, db, np.random.default_rng([seed, i, 1]))
    result["avg"] = float(np.mean(list(result.values())))
    return result
