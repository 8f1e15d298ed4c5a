"""The two terms of the VAE loss, per image, in float32."""
from keras import ops


def l1_per_image(images, reconstructions):
    """Sum of |x - x_hat| over all pixels and channels: shape (batch,)."""
    diff = ops.abs(ops.cast(images, "float32") - ops.cast(reconstructions, "float32"))
    return ops.sum(diff, axis=(1, 2, 3))


def kl_per_dim(z_mean, z_log_var):
    """Closed-form KL(N(mean, exp(log_var)) || N(0, 1)) of each latent dimension: shape (batch, latent_dim)."""
    z_mean = ops.cast(z_mean, "float32")
    z_log_var = ops.cast(z_log_var, "float32")
    return 0.5 * (ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var)
