"""Sharper faces: the adversarial patch term (discriminator, its optimizer, checkpoints, NaN guard, tf.distribute), the focal
frequency term and the moving average of the weights. Their step on two replicas: test_distribute."""
import io
import json
import math
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import vae.model.vae as vae_module
from vae.config import Config, add_config_flags, config_from_args
from vae.errors import UserError
from vae.model.discriminator import DiffAugment, SpectralConv2D, build_discriminator
from vae.model.objective import focal_frequency_per_image, objective
from vae.model.optimizer import DISCRIMINATOR_BETAS, make_optimizer
from vae.model.vae import VAE, averaged_weights, load_vae, save_averaged
from vae.training.callbacks import NonFiniteStop

from conftest import ROOT, blob_images

SIZE = 16


def sharp_vae(adversarial_weight=0.1, loss_scaling=False, eager=True, **kwargs):
    """A tiny VAE (16 px, width 8, latent 8) with the new terms asked for, compiled and its optimizers built. Eager by
    default: a few steps run eagerly in less time than their trace takes (train.py's run below, and test_distribute's
    step on two replicas, run it traced)."""
    keras.utils.set_random_seed(0)
    model = VAE(image_size=SIZE, latent_dim=8, width=8, beta=1.0, seed=0, adversarial_weight=adversarial_weight, **kwargs)
    disc = make_optimizer(3e-3, 1000, 0, loss_scaling=loss_scaling, betas=DISCRIMINATOR_BETAS) if adversarial_weight else None
    model.compile(optimizer=make_optimizer(3e-3, 1000, 0, loss_scaling=loss_scaling, loss_terms=SIZE**2 * 3),
                  disc_optimizer=disc, run_eagerly=eager)
    model.build_optimizers()
    return model


def train(model, images, callbacks=()):
    """One step per 8 images, in order; the history of that one epoch."""
    return model.fit(images, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=list(callbacks)).history


def values(variables):
    return [np.array(v.numpy()) for v in variables]


def assert_all_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def images():
    return blob_images(40, SIZE)


def h5_datasets(path):
    with zipfile.ZipFile(path) as archive:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as f:
            found = {}
            f.visititems(lambda name, o: found.__setitem__(name, o.shape) if isinstance(o, h5py.Dataset) else None)
            return found


def test_with_the_new_terms_off_the_model_and_its_files_are_as_before(tmp_path, images):
    fixture = ROOT / "tests" / "fixtures" / "model_before_restructure.keras"
    model = VAE(image_size=16, latent_dim=4, width=4, beta=0.1, seed=0, bn_momentum=0.99)
    model.compile(optimizer=make_optimizer(1e-3, total_steps=10, warmup_steps=0))
    model.build_optimizers()
    assert model.discriminator is None and model.disc_optimizer is None and model.averages == []
    assert model.vae_weights == model.trainable_weights
    old = keras.saving.load_model(fixture)
    assert [(w.name, w.shape) for w in model.weights] == [(w.name, w.shape) for w in old.weights]
    model.save(tmp_path / "now.keras")
    # The same arrays under the same names; the fixture's optimizer also held the moments twice (SkipNonFinite's old copy).
    layout = lambda found: {k: v for k, v in found.items() if not k.startswith("optimizer/vars/")}  # noqa: E731
    assert layout(h5_datasets(tmp_path / "now.keras")) == layout(h5_datasets(fixture))
    logs = train(sharp_vae(adversarial_weight=0.0), images[:8])
    assert sorted(logs) == ["beta", "consecutive_skips", "kl", "loss", "recon", "skipped_steps"]


@pytest.mark.parametrize("flag, value", [("adversarial_weight", -0.1), ("adversarial_weight", float("nan")),
                                         ("adversarial_start_epochs", -1.0), ("disc_learning_rate", float("inf")),
                                         ("frequency_weight", -2.0), ("ema_decay", 1.0), ("ema_decay", -0.5),
                                         ("ema_decay", float("nan")), ("weight_decay", -0.1),
                                         ("weight_decay", float("inf"))])
def test_the_new_settings_reject_bad_values_in_one_line(flag, value):
    with pytest.raises(UserError) as e:
        Config(**{flag: value}).validate()
    assert str(e.value).startswith(f"--{flag} must be") and "\n" not in str(e.value)


def test_the_new_flags_reach_the_config():
    import argparse

    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    args = parser.parse_args(["--adversarial_weight", "0.1", "--adversarial_start_epochs", "2.5", "--disc_augment",
                              "--disc_learning_rate", "4e-4", "--frequency_weight", "1", "--ema_decay", "0.999"])
    cfg = config_from_args(args)
    assert (cfg.adversarial_weight, cfg.adversarial_start_epochs, cfg.disc_augment, cfg.disc_learning_rate,
            cfg.frequency_weight, cfg.ema_decay) == (0.1, 2.5, True, 4e-4, 1.0, 0.999)
    defaults = Config()
    assert (defaults.adversarial_weight, defaults.disc_augment, defaults.frequency_weight, defaults.ema_decay) == (0, False, 4, 0)


def test_the_sharp_preset_sets_its_terms_and_flags_given_beside_it_win():
    from vae.cli import make_parser
    from vae.config import parse_config_args

    def config(*argv):
        parser = make_parser("train")
        add_config_flags(parser)
        return config_from_args(parse_config_args(parser, list(argv)))

    sharp = config("--preset", "sharp")
    assert (sharp.adversarial_weight, sharp.adversarial_start_epochs, sharp.disc_augment, sharp.ema_decay) == (
        0.3, 5, True, 0.999)
    assert sharp.width == Config().width and (sharp.frequency_weight, Config().frequency_weight) == (0, 4)
    mine = config("--ema_decay", "0.99", "--preset", "sharp", "--adversarial_weight", "0.1")
    assert (mine.adversarial_weight, mine.ema_decay, mine.disc_augment) == (0.1, 0.99, True)
    assert config().adversarial_weight == 0
    from vae.errors import UserError

    with pytest.raises(UserError, match=r"argument --preset: invalid choice: 'blurry'") as refused:
        config("--preset", "blurry")
    assert "\n" not in str(refused.value)


def test_the_patch_discriminator_and_its_spectral_normalisation():
    discriminator = build_discriminator(SIZE, 8)
    assert discriminator(np.zeros((2, SIZE, SIZE, 3), "float32")).shape == (2, SIZE // 8, SIZE // 8, 1)
    layer = SpectralConv2D(6, 4, strides=2)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 5)).astype("float32")
    assert layer(x).shape == (2, 4, 4, 6)
    for _ in range(30):  # power iterations: u converges to the top singular vector
        layer(x, training=True)
    matrix = np.asarray(layer.kernel).reshape(-1, 6)
    top = np.linalg.svd(matrix, compute_uv=False)[0]
    # The convolution's output is that of the kernel divided by its top singular value.
    plain = keras.ops.conv(x, np.asarray(layer.kernel) / top, strides=2, padding="same")
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(plain), rtol=1e-4, atol=1e-5)
    again = SpectralConv2D.from_config(layer.get_config())
    assert (again.filters, again.kernel_size, again.strides) == (6, 4, 2)


def test_diff_augment_draws_per_image_is_seeded_and_differentiable():
    faces = np.repeat(blob_images(1, SIZE).astype("float32") / 255.0, 4, axis=0)
    a = np.asarray(DiffAugment(seed=3)(faces))
    b = np.asarray(DiffAugment(seed=3)(faces))
    np.testing.assert_array_equal(a, b)
    assert a.shape == faces.shape and not np.allclose(a[0], a[1])  # each image its own draw
    # Mid grey: the cutout (a square of half the side, or less at a border) and the border a translation uncovers.
    assert all(0 < np.all(image == 0.5, axis=-1).sum() <= (SIZE // 2) ** 2 + 2 * (SIZE // 8) * SIZE for image in a)
    x = tf.Variable(faces)
    with tf.GradientTape() as tape:
        out = DiffAugment(seed=3)(x)
        loss = tf.reduce_sum(out * np.linspace(0, 1, SIZE * SIZE * 3, dtype="float32").reshape(SIZE, SIZE, 3))
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    assert DiffAugment.from_config(DiffAugment(seed=3).get_config()).seed == 3


def test_focal_frequency_loss_matches_the_papers_formula():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (2, 8, 8, 3)).astype("float32"), rng.uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    # The official implementation's loss on one patch, alpha 1, per image and channel weights, summed instead of averaged.
    spectrum = np.fft.fft2(np.transpose(x - y, (0, 3, 1, 2)).astype("float64"), norm="ortho")
    distance = np.abs(spectrum) ** 2
    weight = np.sqrt(distance) / np.sqrt(distance).max(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(np.asarray(focal_frequency_per_image(x, y)), (weight * distance).sum(axis=(1, 2, 3)), rtol=1e-4)
    assert np.asarray(focal_frequency_per_image(x, x)) == pytest.approx([0.0, 0.0])
    # A constant error is one frequency, weight 1: the loss is the summed squared error (Parseval).
    assert np.asarray(focal_frequency_per_image(x, x + 0.1)) == pytest.approx([0.01 * 8 * 8 * 3] * 2, rel=1e-4)
    terms = objective(x, y, np.zeros((2, 4), "float32"), np.zeros((2, 4), "float32"), 1.0, frequency_weight=2.0)
    assert float(terms.reconstruction) == pytest.approx(float(np.mean(terms.recon + 2.0 * terms.frequency)), rel=1e-6)


def test_the_frequency_term_trains_and_validation_stays_recon_plus_beta_kl(images):
    model = sharp_vae(adversarial_weight=0.0, frequency_weight=1.0)
    logs = train(model, images[:16])
    assert logs["frequency"][0] > 0
    assert logs["loss"][0] == pytest.approx(logs["recon"][0] + logs["frequency"][0] + logs["kl"][0], rel=1e-4)
    val = model.evaluate(images[:16], batch_size=8, return_dict=True, verbose=0)
    assert "frequency" not in val and val["loss"] == pytest.approx(val["recon"] + val["kl"], rel=1e-5)


def test_the_adaptive_weight_is_vqgans_gradient_ratio_and_waits_for_the_start(images):
    model = sharp_vae(adversarial_weight=0.5, adversarial_start_steps=2)
    per_step = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda _, logs: per_step.append(float(logs["adaptive_weight"])))
    train(model, images[:16], [record])
    assert per_step == [0.0, 0.0]  # the 2 steps before the start
    # The third step's ratio by hand, from the weights and noise states that step starts from.
    states = values(model.non_trainable_variables)  # the noise generators' and the spectral norms' states
    x = images[16:24].astype("float32") / 255.0
    last = model.decoder.get_layer("rgb").kernel
    with tf.GradientTape(persistent=True) as tape:
        z_mean, z_log_var = model.encoder(x, training=True)
        reconstructions = model.decoder(model.sampling([z_mean, z_log_var]), training=True)
        samples = model.decoder(model.prior_draws(x), training=False)
        logits = model.discriminator(tf.concat([x, reconstructions, samples], axis=0), training=True)
        recon_term = objective(x, reconstructions, z_mean, z_log_var, 1.0).reconstruction
        generator = -tf.reduce_mean(logits[8:])
    ratio = np.linalg.norm(tape.gradient(recon_term, last)) / (np.linalg.norm(tape.gradient(generator, last)) + 1e-4)
    for variable, state in zip(model.non_trainable_variables, states):  # as they were before the hand computation
        variable.assign(state)
    train(model, images[16:32], [record])  # logged per batch: the new epoch's running mean of the weight applied
    assert per_step[2] == pytest.approx(0.5 * min(ratio, 1e4), rel=1e-3) and per_step[3] > 0


def test_the_discriminator_learns_and_its_state_is_logged(images):
    model = sharp_vae(disc_augment=True)
    before = values(model.discriminator.trainable_weights)
    logs = train(model, images)
    for key in ("disc_loss", "disc_accuracy", "adversarial", "adaptive_weight"):
        assert np.isfinite(logs[key][0]), key
    assert 0 <= logs["disc_accuracy"][0] <= 1 and 0 < logs["disc_loss"][0] < 2
    assert (logs["disc_skipped_steps"][0], logs["disc_consecutive_skips"][0]) == (0, 0)
    assert int(model.disc_optimizer.iterations) == 5 and int(model.optimizer.iterations) == 5
    # All but the logits' bias: while every logit is inside the hinge's margin, real and fake pull it equally hard.
    moved = {w.path: not np.array_equal(a, w.numpy()) for a, w in zip(before, model.discriminator.trainable_weights)}
    del moved["patch_logits/bias"]
    assert all(moved.values()), moved


def test_a_vae_with_an_adversarial_term_needs_a_discriminator_optimizer():
    model = VAE(image_size=16, latent_dim=4, width=4, adversarial_weight=0.1)
    with pytest.raises(ValueError, match="disc_optimizer"):
        model.compile(optimizer=make_optimizer(1e-3, 10, 0))


@pytest.mark.slow
def test_checkpoints_hold_the_discriminator_its_optimizer_and_the_averages_and_resume_exactly(tmp_path, images):
    model = sharp_vae(disc_augment=True, frequency_weight=1.0, ema_decay=0.9)
    train(model, images[:16])  # 2 steps
    model.save(tmp_path / "ckpt.keras")
    saved = [values(model.weights), values(model.disc_optimizer.variables), values(model.optimizer.variables)]
    noise = [getattr(model, layer).seed_generator.state.numpy() for layer in ("prior_draws", "augment", "sampling")]
    resumed = sharp_vae(disc_augment=True, frequency_weight=1.0, ema_decay=0.9)
    resumed.load_weights(tmp_path / "ckpt.keras")  # how train.py resumes
    # Discriminator and averages included; the noise of the prior's draws and of the augmentation continues where it was.
    assert_all_equal(values(resumed.weights), saved[0])
    assert_all_equal(values(resumed.disc_optimizer.variables), saved[1])
    assert_all_equal(values(resumed.optimizer.variables), saved[2])
    assert int(resumed.disc_optimizer.iterations) == 2
    for layer, state in zip(("prior_draws", "augment"), noise):
        np.testing.assert_array_equal(getattr(resumed, layer).seed_generator.state.numpy(), state)
    # The next step depends on nothing the file lacks: one more step, then the file loaded back into the same model
    # (the fresh one above proved a new model loads it to the bit) and the same step again. The posterior's noise
    # state is not in checkpoints (the Sampling layer saves no variables): carried over by hand, as above.
    straight = train(model, images[16:24])
    after = [values(model.weights), values(model.disc_optimizer.variables)]
    assert not np.array_equal(after[0][0], saved[0][0])
    model.load_weights(tmp_path / "ckpt.keras")
    model.sampling.seed_generator.state.assign(noise[2])
    assert train(model, images[16:24]) == straight
    assert_all_equal(values(model.weights), after[0])
    assert_all_equal(values(model.disc_optimizer.variables), after[1])
    # load_model restores both optimizers as well (a reader's load_vae: the train.py test below).
    loaded = keras.saving.load_model(tmp_path / "ckpt.keras")
    assert int(loaded.disc_optimizer.iterations) == 2 and int(loaded.optimizer.iterations) == 2


# bfloat16 takes the float32 path (no loss scale), so float16, with its scale, is the one other case.
@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_a_nan_in_the_discriminators_loss_is_skipped_and_the_vae_still_steps(monkeypatch, images, precision):
    keras.config.set_dtype_policy(precision)
    nan_loss = lambda real, fake: (tf.reduce_mean(tf.cast(real, "float32")) * np.nan, tf.constant(0.5))  # noqa: E731
    monkeypatch.setattr(vae_module, "hinge_losses", nan_loss)
    model = sharp_vae(loss_scaling=precision == "mixed_float16")
    disc_before, vae_before = values(model.discriminator.trainable_weights), values(model.vae_weights)
    logs = train(model, images[:16])
    assert_all_equal(values(model.discriminator.trainable_weights), disc_before)
    assert (int(model.disc_optimizer.skipped_steps), int(model.disc_optimizer.consecutive_skips)) == (2, 2)
    assert int(model.disc_optimizer.iterations) == 0 and logs["disc_consecutive_skips"][0] == 2
    assert int(model.optimizer.iterations) == 2 and logs["skipped_steps"][0] == 0 and np.isfinite(logs["loss"][0])
    assert all(not np.array_equal(a, b) for a, b in zip(vae_before, values(model.vae_weights)))
    if precision == "mixed_float16":  # each skip halves the discriminator's loss scale, not the VAE's
        assert float(model.disc_optimizer.dynamic_scale) == 2.0**13
        assert float(model.optimizer.dynamic_scale) == 2.0 ** (15 - math.ceil(math.log2(SIZE**2 * 3)))  # untouched


def test_a_nan_in_the_discriminators_weights_drops_its_term_and_the_trainer_stops_on_its_skips(images):
    model = sharp_vae()
    kernel = model.discriminator.get_layer("disc_down0").kernel
    kernel.assign(np.where(np.arange(kernel.shape[-1]) == 0, np.nan, kernel.numpy()).astype("float32"))
    stop = NonFiniteStop(lambda epoch: 0, patience=3)
    vae_before = values(model.vae_weights)
    logs = train(model, images, [stop])  # 5 steps offered; stopped after 3 consecutive skips of the discriminator
    assert stop.tripped_at == (0, 3) and int(model.disc_optimizer.skipped_steps) == 3
    assert logs["adaptive_weight"][0] == 0.0  # the term was dropped, not the VAE's step
    assert int(model.optimizer.iterations) == 3 and all(np.isfinite(w).all() for w in values(model.vae_weights))
    assert all(not np.array_equal(a, b) for a, b in zip(vae_before, values(model.vae_weights)))


def test_the_averages_follow_the_weights_and_skip_a_skipped_step(images):
    model = sharp_vae(adversarial_weight=0.0, ema_decay=0.9)
    start = values(model.averaged_variables())
    assert_all_equal(values(model.averages), start)
    x = images[:16].astype("float32") / 255.0
    x[9, 0, 0, 0] = np.nan  # poisons the second step, which is skipped
    train(model, x[:8])
    after_one = values(model.averaged_variables())
    decay = min(0.9, 2 / 11)  # the average's warm-up after one step: (1 + n) / (10 + n)
    for average, a, b in zip(values(model.averages), start, after_one):
        np.testing.assert_allclose(average, decay * a + (1 - decay) * b, rtol=1e-5, atol=1e-6)
    averages = values(model.averages)
    train(model, x[8:16])
    assert int(model.optimizer.skipped_steps) == 1
    assert_all_equal(values(model.averages), averages)


@pytest.mark.slow
def test_averaged_weights_swap_in_and_out_and_training_continues_from_the_raw_weights(tmp_path, images):
    model = sharp_vae(adversarial_weight=0.0, ema_decay=0.9)
    train(model, images[:32])
    raw, averages = values(model.averaged_variables()), values(model.averages)
    assert any(not np.allclose(a, b) for a, b in zip(raw, averages))
    state = values(model.variables) + values(model.optimizer.variables)  # all a next step reads, its noise's state too
    raw_faces = np.asarray(model(images[:8]))
    with averaged_weights(model):
        assert_all_equal(values(model.averaged_variables()), averages)
        averaged_faces = np.asarray(model(images[:8]))
        save_averaged(model, tmp_path / "nested.keras")
    assert not np.allclose(raw_faces, averaged_faces)
    assert_all_equal(values(model.averaged_variables()), raw)  # bit for bit
    save_averaged(model, tmp_path / "best.keras")
    # Training goes on from the raw weights: every variable the next step reads is as before the swaps.
    assert_all_equal(values(model.variables) + values(model.optimizer.variables), state)
    best = load_vae(tmp_path / "best.keras")
    assert_all_equal(values(best.averaged_variables()), averages)
    np.testing.assert_allclose(np.asarray(best(images[:8])), averaged_faces, atol=1e-6)


@pytest.mark.slow
def test_train_py_with_every_new_term_writes_their_columns_and_models_that_load(tmp_path, images, capsys):
    from conftest import TINY, cli, write_pngs

    folder = write_pngs(tmp_path / "images", images)
    out = tmp_path / "run"
    cli(capsys, "train", "--data", folder, "--out", out, "--num_epochs", "2", "--val_split", "0.2", *TINY, "--image_size", SIZE,
        "--adversarial_weight", "0.1", "--adversarial_start_epochs", "1", "--disc_augment", "--frequency_weight", "1",
        "--ema_decay", "0.99", "--weight_decay", "0.1")
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert {"disc_loss", "disc_accuracy", "adversarial", "adaptive_weight", "disc_skipped_steps", "frequency"} <= set(header)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(out / "logs"), size_guidance={"tensors": 0}).Reload().Tags()["tensors"]
    assert {"disc_loss", "disc_accuracy", "adversarial", "adaptive_weight", "disc_skipped_steps", "frequency"} <= set(logged)
    model = load_vae(out / "model_last.keras")
    assert model.discriminator is not None and len(model.averages) == len(model.averaged_variables())
    # The checkpoint training resumes from holds the raw weights and their averages; the models readers get are the averages.
    state = json.loads((out / "state.json").read_text())
    checkpoint = load_vae(out / state["checkpoint"])
    assert_all_equal(values(model.averaged_variables()), values(checkpoint.averages))
    assert any(not np.allclose(a, b) for a, b in zip(values(checkpoint.averaged_variables()), values(checkpoint.averages)))
    history = [line.split(",") for line in (out / "history.csv").read_text().splitlines()]
    val_losses = [float(row[header.index("val_loss")]) for row in history[1:]]
    assert (out / "model_best.keras").samefile(out / "model_last.keras") == (val_losses[-1] == min(val_losses))
