"""The loss-curve figure of a run."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vae.files import atomic_path  # noqa: E402


def plot_history(history: list[dict], path: Path) -> None:
    """Loss, reconstruction and KL (training and validation) and validation PSNR per epoch, in one PNG."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, key, title in zip(axes, ["loss", "recon", "kl"], ["loss (recon + beta KL)", "reconstruction (L1 sum)", "KL (nats)"]):
        ax.plot(epochs, [r[key] for r in history], "o-", label="training", ms=3)
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", label="validation", ms=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[3].plot(epochs, [r["val_psnr"] for r in history], "s-", color="tab:green", ms=3)
    axes[3].set_title("validation PSNR (dB)")
    axes[3].set_xlabel("epoch")
    axes[3].grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
