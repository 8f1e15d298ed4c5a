"""The loss, written once: per image the L1 reconstruction term, the optional focal frequency term and the KL term, their
weighted sum, and what they mean as a likelihood (bits per dimension); and the PSNR every report uses. In float32, with
keras.ops."""
import math
from typing import NamedTuple

import numpy as np
from keras import ops


def to_unit_float(images):
    """uint8 images (as the data pipeline yields them, 4x smaller to move) to float32 in [0, 1]."""
    if "int" in str(images.dtype):
        return ops.cast(images, "float32") / 255.0
    return ops.cast(images, "float32")


def l1_per_image(images, reconstructions):
    """Sum of |x - x_hat| over all pixels and channels: shape (batch,)."""
    diff = ops.abs(ops.cast(images, "float32") - ops.cast(reconstructions, "float32"))
    return ops.sum(diff, axis=(1, 2, 3))


def kl_per_dim(z_mean, z_log_var):
    """Closed-form KL(N(mean, exp(log_var)) || N(0, 1)) of each latent dimension: shape (batch, latent_dim)."""
    z_mean = ops.cast(z_mean, "float32")
    z_log_var = ops.cast(z_log_var, "float32")
    return 0.5 * (ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var)


def abs_error_per_channel(images, reconstructions):
    """Sum of |x - x_hat| over the pixels of each colour channel: shape (batch, channels)."""
    return ops.sum(ops.abs(ops.cast(images, "float32") - ops.cast(reconstructions, "float32")), axis=(1, 2))


def laplace_nll(images, reconstructions, log_scale):
    """-log p(x | x_hat) in nats per image, a Laplace density of scale b = exp(log_scale) per value (one scale for all
    channels, or one per channel): sum |x - x_hat| / b + (values) * log(2b). With b fixed it ranks like the L1 sum."""
    per_channel = abs_error_per_channel(images, reconstructions)
    return laplace_nll_of_sums(per_channel, log_scale, ops.shape(images)[1] * ops.shape(images)[2])


def laplace_nll_of_sums(per_channel, log_scale, pixels: int):
    """laplace_nll() from each image's sum of |x - x_hat| per channel (batch, channels) over `pixels` pixels."""
    channels = ops.shape(per_channel)[1]
    log_scale = ops.broadcast_to(ops.reshape(ops.cast(log_scale, "float32"), (-1,)), (channels,))
    per_channel = ops.cast(per_channel, "float32")
    return ops.sum(per_channel * ops.exp(-log_scale), axis=1) + ops.cast(pixels, "float32") * ops.sum(math.log(2.0) + log_scale)


def focal_frequency_per_image(images, reconstructions, alpha=1.0):
    """The focal frequency loss (Jiang et al. 2021) of each image pair: the squared distance of their 2-D spectra
    (orthonormal DFT of each channel), each frequency weighted by its own distance ** (alpha / 2), scaled to at most 1 per
    image and channel and held constant (no gradient), so the frequencies reconstructed worst count most.

    Summed over frequencies and channels where the paper averages, so that its weight compares with the L1 sum's: with
    all weights 1 it would be the summed squared pixel error (Parseval). Shape (batch,).
    """
    difference = ops.transpose(ops.cast(images, "float32") - ops.cast(reconstructions, "float32"), (0, 3, 1, 2))
    # The DFT is linear: the spectrum of the difference is the difference of the spectra.
    real, imag = ops.fft2((difference, ops.zeros_like(difference)))
    pixels = ops.cast(ops.shape(difference)[2] * ops.shape(difference)[3], "float32")
    distance = (ops.square(real) + ops.square(imag)) / pixels
    weight = ops.stop_gradient(distance ** (alpha / 2.0))
    weight = weight / ops.maximum(ops.max(weight, axis=(2, 3), keepdims=True), 1e-12)
    return ops.sum(weight * distance, axis=(1, 2, 3))


class Terms(NamedTuple):
    recon: object  # (batch,) L1 summed over pixels and channels: what is reported as "recon"
    nll: object  # (batch,) the reconstruction term optimised: the L1 sum, or with a learned scale the Laplace NLL
    kl_dims: object  # (batch, latent_dim) KL of each dimension, nats
    kl: object  # (batch,) KL summed over dimensions
    loss: object  # scalar: the batch's objective
    frequency: object  # (batch,) the focal frequency term, or None when its weight is 0
    reconstruction: object  # scalar: the part of `loss` that is not KL, mean(nll + frequency_weight * frequency)


def objective(images, reconstructions, z_mean, z_log_var, beta, free_bits=0.0, log_scale=None, frequency_weight=0.0) -> Terms:
    """The VAE's loss on a batch of images in [0, 1]: mean over images of the reconstruction term + beta * KL.

    The reconstruction term is the L1 sum, or, with a learned `log_scale` (a calibrated decoder, Rybkin et al. 2021),
    the Laplace negative log-likelihood, whose scale then sets the balance with the KL instead of beta alone; plus
    `frequency_weight` times the focal frequency term, when that weight is not 0.
    With free bits (training only), each latent dimension's batch-mean KL counts as at least `free_bits` nats;
    with free_bits = 0 and no frequency term the loss is exactly mean(recon term + beta * kl).
    """
    recon = l1_per_image(images, reconstructions)
    nll = recon if log_scale is None else laplace_nll(images, reconstructions, log_scale)
    frequency = focal_frequency_per_image(images, reconstructions) if frequency_weight else None
    reconstruction = ops.mean(nll) if frequency is None else ops.mean(nll + frequency_weight * frequency)
    kl_dims = kl_per_dim(z_mean, z_log_var)
    kl_term = ops.sum(ops.maximum(ops.mean(kl_dims, axis=0), free_bits))
    return Terms(recon, nll, kl_dims, ops.sum(kl_dims, axis=1), reconstruction + beta * kl_term, frequency, reconstruction)


def laplace_scale(mean_abs_error) -> float:
    """Maximum-likelihood scale b of a Laplace likelihood for the L1 term: the mean |x - x_hat| per value."""
    return float(np.mean(mean_abs_error))


def bits_per_dim(nll, kl, dims: int):
    """Negative ELBO per image in bits per dimension of the 8-bit image, from laplace_nll() and the KL, in nats.

    With x = k / 255 on [0, 1] and D = H * W * 3 values, pixel values are 1/255 apart, so the 8-bit image's
    probability is about p(x|z) * (1/255)^D, adding D log 255 nats: bpd = (nll + KL) / (D ln 2) + log2(255),
    where log2(255) = 7.994.
    """
    return (np.asarray(nll, np.float64) + np.asarray(kl, np.float64)) / (dims * math.log(2.0)) + math.log2(255.0)


def psnr(images, reconstructions):
    """Peak signal-to-noise ratio in dB of each image pair (batch, h, w, c), peak 1; uint8 is scaled to [0, 1]."""
    mse = ops.mean(ops.square(to_unit_float(images) - to_unit_float(reconstructions)), axis=(1, 2, 3))
    return -10.0 * ops.log10(ops.maximum(mse, 1e-10))
