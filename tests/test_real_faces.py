"""Training on real anime faces (../shared/anime_faces) beats the untrained model; skipped without them."""
import pytest

from vae.config import Config
from vae.data import dataset
from vae.training.trainer import build_model


@pytest.mark.slow
def test_a_few_epochs_on_500_real_faces_lower_validation_l1(real_faces, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in sorted(real_faces.glob("*.jpg"))[:500]:
        (folder / path.name).symlink_to(path)
    faces = dataset.load_faces(folder, 32, progress=False)
    train_idx, val_idx = faces.split(0.1)
    cfg = Config(image_size=32, width=16, latent_dim=32, batch_size=32, num_epochs=8, learning_rate=3e-3,
                 lr_warmup_steps=20, seed=0)
    model = build_model(cfg, steps_per_epoch=len(train_idx) // 32)
    val = dataset.eval_batches(faces, val_idx, 64)
    before = model.evaluate(val, return_dict=True, verbose=0)
    for epoch in range(cfg.num_epochs):
        model.fit(dataset.train_batches(faces, train_idx, 32, seed=0, epoch=epoch), verbose=0, shuffle=False)
    after = model.evaluate(val, return_dict=True, verbose=0)
    pixels = 32 * 32 * 3
    print(f"validation L1 per pixel: untrained {before['recon'] / pixels:.4f}, trained {after['recon'] / pixels:.4f}; "
          f"PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB")
    assert after["recon"] < 0.7 * before["recon"]
    assert after["psnr"] > before["psnr"] + 3.0
