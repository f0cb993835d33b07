import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cm3jax.config import decoder_experiment
from cm3jax.errors import UserError
from cm3jax.train.optimizer import decay_mask, learning_rate, make_optimizer, updates_done

TRAIN = decoder_experiment(dict(vocab_size=8), dict(warmup_steps=4, peak_lr=1.0, end_lr_fraction=0.1,
                                                    weight_decay=0.5)).train


def test_the_schedule_warms_up_linearly_then_decays_linearly_to_its_end_fraction():
    schedule = learning_rate(peak=2.0, warmup_steps=4, total_steps=14, end_fraction=0.25)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 1, 2, 4, 9, 14, 20)],
                               [0.0, 0.5, 1.0, 2.0, 1.25, 0.5, 0.5], rtol=1e-6)


def test_no_warmup_starts_at_the_peak():
    schedule = learning_rate(peak=1.0, warmup_steps=0, total_steps=10, end_fraction=0.0)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 1, 10)], [1.0, 0.9, 0.0], atol=1e-7)


def test_the_run_must_outlast_its_warmup():
    with pytest.raises(UserError, match="must exceed train.warmup_steps"):
        learning_rate(1.0, 10, 10, 0.1)


def test_weight_decay_skips_vectors_and_scalars():
    params = {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3), "scale": jnp.ones(())}
    assert decay_mask(params) == {"kernel": True, "bias": False, "scale": False}
    tx, _ = make_optimizer(TRAIN, 10)
    opt_state = tx.init(params)
    zero = {k: jnp.zeros_like(v) for k, v in params.items()}
    for _ in range(5):  # past the warmup: with zero gradients only weight decay moves a parameter
        updates, opt_state = tx.update(zero, opt_state, params)
    assert float(jnp.abs(updates["kernel"]).max()) > 0
    assert float(jnp.abs(updates["bias"]).max()) == 0 and float(jnp.abs(updates["scale"]).max()) == 0


def test_weight_decay_leaves_the_frozen_codebook_alone():
    params = {"image_codes": jnp.ones((4, 2)), "image_code_in": jnp.ones((2, 3))}
    assert decay_mask(params) == {"image_codes": False, "image_code_in": True}


def test_updates_done_counts_the_schedules_steps():
    params = {"kernel": jnp.ones((2, 2))}
    tx, schedule = make_optimizer(TRAIN, 10)
    opt_state = tx.init(params)
    for expected in range(3):
        assert int(updates_done(opt_state)) == expected
        _, opt_state = tx.update(params, opt_state, params)
    assert float(schedule(updates_done(opt_state))) == pytest.approx(0.75)


def test_an_unknown_optimizer_is_refused():
    train = ml_collections.ConfigDict(TRAIN.to_dict())
    train.optimizer = "lion"
    with pytest.raises(UserError, match="'lion' is not supported; use 'adamw'"):
        make_optimizer(train, 10)
    assert isinstance(make_optimizer(TRAIN, 10)[0], optax.GradientTransformation)
