"""The private Keras names the package relies on live in vae/model/keras_adapter.py only, still exist, and still do what
each workaround is there for: a Keras upgrade that changes one fails here, not silently in a user's run."""
import re

import keras
import numpy as np
import pytest

from vae.model.keras_adapter import PRIVATE_NAMES, learning_rate_schedule
from vae.model.optimizer import WarmupDecay, current_learning_rate, make_optimizer, report_time_spent
from vae.model.vae import VAE

from conftest import ROOT


@pytest.mark.parametrize("owner", PRIVATE_NAMES, ids=lambda c: c.__name__)
def test_every_private_name_still_exists(owner):
    for name in PRIVATE_NAMES[owner]:
        instance_only = name in ("_variables", "_learning_rate")
        if instance_only:
            optimizer = make_optimizer(1e-3, total_steps=10, warmup_steps=0)
            target = optimizer if owner is keras.optimizers.LossScaleOptimizer else optimizer.inner_optimizer
            optimizer.build([keras.Variable(np.zeros(2, np.float32))])
            assert hasattr(target, name), f"Keras {keras.__version__} has no {owner.__name__}.{name}"
        else:
            assert callable(getattr(owner, name, None)), f"Keras {keras.__version__} has no {owner.__name__}.{name}"


def test_no_private_keras_name_outside_the_adapter():
    names = sorted({n for names in PRIVATE_NAMES.values() for n in names})
    found = []
    for path in (ROOT / "vae").rglob("*.py"):
        if path.name == "keras_adapter.py":
            continue
        text = path.read_text()
        found += [(path.name, n) for n in names if re.search(rf"\.{n}\b|def {n}\b", text)]
    assert found == []


def test_a_non_finite_step_is_skipped_and_counted_and_a_finite_one_applied():
    optimizer = make_optimizer(0.1, total_steps=10, warmup_steps=0)
    weight = keras.Variable(np.array([1.0, 2.0], np.float32))
    optimizer.build([weight])
    optimizer.apply([keras.ops.convert_to_tensor(np.array([np.nan, 1.0], np.float32))], [weight])
    assert np.array_equal(np.asarray(weight), [1.0, 2.0])
    assert (int(optimizer.skipped_steps), int(optimizer.consecutive_skips), int(optimizer.iterations)) == (1, 1, 0)
    optimizer.apply([keras.ops.convert_to_tensor(np.array([1.0, -1.0], np.float32))], [weight])
    np.testing.assert_allclose(np.asarray(weight), [0.9, 2.1], atol=1e-5)  # Adam's first step: lr * sign(g)
    assert (int(optimizer.skipped_steps), int(optimizer.consecutive_skips), int(optimizer.iterations)) == (1, 0, 1)
    # What checkpoints hold for the wrapper: its own variables, the counts last, none of the inner optimizer's moments.
    own = optimizer.own_variables()
    assert [v.name for v in own][-2:] == ["skipped_steps", "consecutive_skips"]
    assert not {id(v) for v in own} & {id(v) for v in optimizer.inner_optimizer.variables}


def test_the_schedule_is_found_and_told_the_time_spent():
    optimizer = make_optimizer(1e-2, total_steps=1000, warmup_steps=0, schedule="cosine")
    schedule = learning_rate_schedule(optimizer)
    assert isinstance(schedule, WarmupDecay)
    assert current_learning_rate(optimizer) == pytest.approx(1e-2)
    report_time_spent(optimizer, 0.5)
    assert current_learning_rate(optimizer) == pytest.approx(5e-3, rel=1e-4)  # half the cosine: half the peak


def test_a_built_model_skips_keras_symbolic_build_and_an_unbuilt_one_does_not(monkeypatch):
    calls = []
    original = keras.Model._maybe_symbolic_build
    monkeypatch.setattr(keras.Model, "_maybe_symbolic_build", lambda self, **kw: calls.append(1) or original(self, **kw))
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    model = VAE(image_size=16, latent_dim=4, width=4, seed=0)
    # Eager: fit() asks for the symbolic build either way, and two steps run in less time than their trace takes.
    model.compile(optimizer=make_optimizer(1e-3, total_steps=4, warmup_steps=0), run_eagerly=True)
    model.fit(images, batch_size=4, epochs=1, verbose=0)  # optimizer unbuilt: Keras builds it
    assert calls == [1]
    model.fit(images, batch_size=4, epochs=1, verbose=0)  # built now: skipped
    assert calls == [1]
