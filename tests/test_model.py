"""The model: shapes, the loss's terms and their reduction, learning, and saving."""
import keras
import numpy as np
import pytest

from vae.model.objective import kl_per_dim, l1_per_image
from vae.model.optimizer import make_optimizer
from vae.model.sampling import Sampling
from vae.model.vae import VAE

from conftest import ROOT, blob_images, run_script


def tiny_vae(size=16, beta=1.0, weight_decay=0.0, eager=True, **kwargs):
    """A tiny compiled VAE. Eager by default: these tests take a step or a few, which run eagerly in less time than the
    step's trace takes (the same train_step; the trainer's tests, and here those of many steps, run it traced)."""
    keras.utils.set_random_seed(0)
    model = VAE(image_size=size, latent_dim=8, width=8, beta=beta, seed=0, **kwargs)
    model.compile(optimizer=make_optimizer(3e-3, total_steps=1000, warmup_steps=0, weight_decay=weight_decay),
                  run_eagerly=eager)
    return model


def test_weight_decay_shrinks_each_kernel_by_rate_times_decay_and_nothing_else():
    images = blob_images(8, 16)
    plain, decayed = tiny_vae(learn_scale=True), tiny_vae(learn_scale=True, weight_decay=5.0)
    start = {v.path: np.array(v.numpy()) for v in plain.trainable_variables}
    for model in (plain, decayed):
        model.fit(images, batch_size=8, epochs=1, verbose=0, shuffle=False)  # one step, the same gradients
    kernels = 0
    for a, b in zip(plain.trainable_variables, decayed.trainable_variables):
        if "kernel" in a.name:  # decayed before the step: w - lr * decay * w, then the same Adam update
            np.testing.assert_allclose(b.numpy(), a.numpy() - 3e-3 * 5.0 * start[a.path], rtol=1e-5, atol=1e-7)
            kernels += 1
        else:  # biases, BatchNorm's gamma and beta, the Laplace scale
            np.testing.assert_array_equal(b.numpy(), a.numpy())
    assert kernels >= 7 and len(plain.trainable_variables) > kernels


@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes(size):
    model = tiny_vae(size)
    images = blob_images(3, size)
    z_mean, z_log_var = model.encoder(images / 255.0)
    assert z_mean.shape == (3, 8) and z_log_var.shape == (3, 8)
    out = model(images)
    assert out.shape == (3, size, size, 3)
    out = np.asarray(out)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert model.decoder(np.zeros((5, 8), "float32")).shape == (5, size, size, 3)


def test_log_variance_is_clamped():
    model = tiny_vae()
    _, z_log_var = model.encoder(np.full((2, 16, 16, 3), 1e4, "float32"))
    assert np.all(np.asarray(z_log_var) <= 10.0) and np.all(np.asarray(z_log_var) >= -10.0)


def test_closed_form_kl_matches_monte_carlo():
    rng = np.random.default_rng(1)
    mean = rng.normal(0, 1, (1, 4)).astype("float32")
    log_var = rng.normal(0, 0.5, (1, 4)).astype("float32")
    closed = np.asarray(kl_per_dim(mean, log_var)).sum()
    # KL = E_q[log q(z) - log p(z)], estimated with 400k draws from q.
    std = np.exp(0.5 * log_var)
    z = mean + std * rng.standard_normal((400_000, 4))
    log_q = -0.5 * (((z - mean) / std) ** 2 + np.log(2 * np.pi) + log_var)
    log_p = -0.5 * (z**2 + np.log(2 * np.pi))
    estimate = (log_q - log_p).sum(axis=1).mean()
    assert closed == pytest.approx(estimate, abs=0.02)
    assert closed > 0.1


def test_l1_is_summed_over_pixels_and_channels():
    a = np.zeros((2, 4, 4, 3), "float32")
    b = np.full((2, 4, 4, 3), 0.25, "float32")
    np.testing.assert_allclose(np.asarray(l1_per_image(a, b)), [12.0, 12.0])


def test_test_step_loss_is_recon_plus_beta_kl():
    model = tiny_vae(beta=2.5)
    logs = model.evaluate(blob_images(16, 16), batch_size=8, return_dict=True, verbose=0)
    assert logs["kl"] > 0
    assert logs["loss"] == pytest.approx(logs["recon"] + 2.5 * logs["kl"], rel=1e-5)


def test_train_step_loss_is_recon_plus_beta_kl_without_warmup():
    model = tiny_vae(beta=0.5)
    history = model.fit(blob_images(16, 16), batch_size=8, epochs=1, verbose=0, shuffle=False).history
    assert history["beta"][0] == pytest.approx(0.5)
    assert history["loss"][0] == pytest.approx(history["recon"][0] + 0.5 * history["kl"][0], rel=1e-5)


def test_kl_warmup_rises_linearly():
    model = tiny_vae(beta=1.0, kl_warmup_steps=10)
    model.optimizer.build(model.trainable_weights)
    model.optimizer.iterations.assign(4)
    assert float(model.current_beta()) == pytest.approx(0.5)
    model.optimizer.iterations.assign(50)
    assert float(model.current_beta()) == pytest.approx(1.0)


def test_free_bits_raise_the_objective_when_kl_is_small():
    images = blob_images(8, 16)
    plain = tiny_vae().fit(images, batch_size=8, epochs=1, verbose=0, shuffle=False).history
    floored = tiny_vae(free_bits=2.0).fit(images, batch_size=8, epochs=1, verbose=0, shuffle=False).history
    # Same weights and batch: the KL term is floored at 2 nats x 8 dims = 16 nats.
    assert plain["kl"][0] < 16
    assert floored["loss"][0] == pytest.approx(floored["recon"][0] + 16.0, rel=1e-4)


def test_a_few_steps_on_a_fixed_batch_lower_the_loss():
    model = tiny_vae(eager=False)
    images = blob_images(16, 16)
    # The training-mode loss of each step: BatchNorm's moving averages, which evaluate() uses, still lag after 60 steps.
    losses = [model.train_on_batch(images, return_dict=True)["loss"] for _ in range(60)]
    assert losses[-1] < 0.8 * losses[0]


def test_non_finite_steps_are_skipped_and_counted():
    model = tiny_vae(eager=False)  # the guard as train.py runs it: in the traced step
    images = blob_images(16, 16).astype("float32") / 255.0
    images[9, 0, 0, 0] = np.nan  # poisons the second of two batches
    weights_before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(images, batch_size=8, epochs=1, verbose=0, shuffle=False).history
    assert history["skipped_steps"][0] == 1
    assert int(model.optimizer.iterations) == 1
    assert np.isfinite(history["loss"][0])
    assert all(np.isfinite(w.numpy()).all() for w in model.trainable_weights)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(weights_before, model.trainable_weights))


def test_sampling_layer_is_seeded_and_serialisable():
    mean, log_var = np.zeros((4, 3), "float32"), np.full((4, 3), np.log(4.0), "float32")
    a = np.asarray(Sampling(seed=7)([mean, log_var]))
    b = np.asarray(Sampling(seed=7)([mean, log_var]))
    np.testing.assert_array_equal(a, b)
    assert 0.5 < a.std() < 4.0  # std 2 around 0
    layer = Sampling.from_config(Sampling(seed=7, name="s").get_config())
    assert layer.seed == 7 and layer.name == "s"


def test_keras_file_round_trip_in_a_fresh_process(tmp_path):
    model = tiny_vae()
    images = blob_images(8, 16)
    model.fit(images, batch_size=8, epochs=2, verbose=0, shuffle=False)
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "expected.npy", np.asarray(model(images)))  # eager calls here and there: no predict traces
    fixture = ROOT / "tests" / "fixtures" / "model_before_restructure"
    code = (
        "import sys, numpy as np, keras, vae.model\n"
        # A model saved by the package before vae/ was regrouped (a 16 px VAE trained one step) still loads and
        # computes what it computed then.
        f"old = keras.saving.load_model({str(fixture) + '.keras'!r})\n"
        f"want = np.load({str(fixture) + '.npz'!r})\n"
        "assert type(old).__name__ == 'VAE' and old.image_size == 16 and int(old.optimizer.iterations) == 2\n"
        "np.testing.assert_allclose(np.asarray(old(want['x'])), want['recon'], atol=1e-5)\n"
        "np.testing.assert_allclose(np.asarray(old.decoder(want['z'])), want['faces'], atol=1e-5)\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        "assert type(m).__name__ == 'VAE' and m.latent_dim == 8 and m.image_size == 16\n"
        "assert int(m.optimizer.iterations) == 2, int(m.optimizer.iterations)\n"
        f"out = np.asarray(m(np.load({str(tmp_path / 'x.npy')!r})))\n"
        f"np.testing.assert_array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))\n"
        "print('identical')\n"
    )
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr
    assert "identical" in result.stdout


@pytest.mark.parametrize("shape, filters", [((4, 4, 16), 8), ((3, 5, 4), 6)])
def test_the_decoders_sub_pixel_inference_computes_the_transposed_convolution(shape, filters):
    from vae.model.decoder import Conv2DTranspose

    x = np.random.default_rng(0).standard_normal((5, *shape)).astype("float32")
    plain = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="sigmoid")
    plain.build(x.shape)
    plain.bias.assign(np.linspace(-1, 1, filters).astype("float32"))
    ours = Conv2DTranspose(filters, 4, strides=2, padding="same", activation="sigmoid")
    ours.build(x.shape)
    ours.set_weights(plain.get_weights())
    want = np.asarray(plain(x))
    assert want.shape == (5, 2 * shape[0], 2 * shape[1], filters)
    np.testing.assert_allclose(np.asarray(ours(x, training=False)), want, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ours(x, training=True)), want)  # training runs Keras' own kernel


def test_weights_saved_before_the_sub_pixel_decoder_resume_into_a_new_model():
    from vae.model.vae import VAE

    fixture = ROOT / "tests" / "fixtures" / "model_before_restructure"
    model = VAE(image_size=16, latent_dim=4, width=4, beta=0.1, seed=0, bn_momentum=0.99)
    model.compile(optimizer=make_optimizer(1e-3, total_steps=10, warmup_steps=0))
    model.optimizer.build(model.trainable_weights)
    model.load_weights(str(fixture) + ".keras")  # how train.py resumes from a checkpoint
    want = np.load(str(fixture) + ".npz")
    np.testing.assert_allclose(np.asarray(model.decoder(want["z"])), want["faces"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(model(want["x"])), want["recon"], atol=1e-5)
    assert int(model.optimizer.iterations) == 2


def test_a_calibrated_decoder_learns_the_error_scale_per_channel(tmp_path):
    from vae.model.objective import laplace_nll

    model = tiny_vae(32, beta=0.5, learn_scale=True, eager=False)  # at 16 px its scale is not yet the better fit
    images = blob_images(16, 32)
    start = np.exp(np.asarray(model.log_scale))
    history = model.fit(images, batch_size=8, epochs=40, verbose=0, shuffle=False).history
    scale = np.exp(np.asarray(model.log_scale))
    assert start == pytest.approx([0.2] * 3) and not np.allclose(scale, start)
    # The loss is the Laplace NLL plus beta KL; its scale follows the per-value error it is trained on.
    x = images / 255.0
    z_mean, z_log_var = model.encoder(x)
    recon = np.asarray(model.decoder(z_mean))
    error = np.abs(x - recon).mean(axis=(0, 1, 2))
    assert scale == pytest.approx(error, rel=0.5)
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0] - 500
    # The learned scale fits these errors better than the one it started from: a lower NLL.
    assert np.asarray(laplace_nll(x, recon, np.log(scale))).mean() < np.asarray(laplace_nll(x, recon, np.log(start))).mean()
    model.save(tmp_path / "calibrated.keras")
    loaded = keras.saving.load_model(tmp_path / "calibrated.keras")
    assert loaded.learn_scale and np.array_equal(np.asarray(loaded.log_scale), np.asarray(model.log_scale))


def test_a_time_budget_decays_the_rate_to_zero_when_the_time_is_up():
    from vae.model.optimizer import WarmupDecay

    schedule = WarmupDecay(1e-2, warmup_steps=0, total_steps=1000, decay="cosine")
    assert float(schedule(10)) == pytest.approx(1e-2, rel=1e-3)
    schedule.time_spent.assign(0.5)  # half the budget gone after 10 of 1000 steps: half way down the cosine
    assert float(schedule(10)) == pytest.approx(5e-3, rel=1e-3)
    schedule.time_spent.assign(1.0)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-9)
    linear = WarmupDecay(1e-2, warmup_steps=0, total_steps=100, decay="linear")
    assert [float(linear(s)) for s in (0, 50, 100)] == pytest.approx([1e-2, 5e-3, 0.0], abs=1e-9)
