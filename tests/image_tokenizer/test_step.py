from pathlib import Path

import jax
import numpy as np
import pytest

from cm3jax.config import load_config
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.data import render_split
from cm3jax.image_tokenizer.step import check_codebook_method, make_key, make_optimizer, train_programs

RECIPE = str(Path(__file__).resolve().parents[2] / "tokenizers" / "vqgan_shapes.py")


def tiny_config(*overrides: str):
    return load_config(f"{RECIPE}:tiny", overrides)


def test_the_schedule_warms_up_then_decays_to_its_final_fraction():
    training = tiny_config().training  # 30 steps, 3 of warmup to 3e-3, ending at 5% of it
    _, schedule = make_optimizer(training)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 1, 3, 30)], [0.0, 1e-3, 3e-3, 1.5e-4], rtol=1e-5)
    _, critic_schedule = make_optimizer(training, learning_rate=1e-4)
    assert float(critic_schedule(3)) == pytest.approx(1e-4)


def test_a_warmup_as_long_as_the_run_is_refused():
    with pytest.raises(UserError, match=r"warmup_steps=30 must lie in \[0, training.steps=30\)"):
        make_optimizer(tiny_config("--config.training.warmup_steps=30").training)


def test_an_unknown_codebook_method_is_refused():
    with pytest.raises(UserError, match="'kmeans'; choose one of gradient, ema"):
        check_codebook_method(tiny_config("--config.training.codebook.method=kmeans").training)


def test_the_critic_joins_at_its_start_step():
    programs = train_programs(tiny_config("--config.training.discriminator.enabled=True"))
    assert programs.adversarial_start_step == 10
    assert programs.step_at(9) is programs.steps[False] and programs.step_at(10) is programs.steps[True]
    plain = train_programs(tiny_config())
    assert set(plain.steps) == {False} and plain.step_at(10_000) is plain.steps[False]
    assert train_programs(tiny_config()) is plain, "one recipe compiles once per process"


def test_the_step_counts_and_reports_its_learning_rate():
    programs = train_programs(tiny_config())
    state, opt_state = programs.init()
    _, images = render_split("train", 8, 0, 32, progress=False)
    rates = []
    for step in range(3):
        state, opt_state, metrics = programs.step_at(step)(state, opt_state, images, make_key(step))
        rates.append(float(metrics["learning_rate"]))
    assert int(state["step"]) == 3
    np.testing.assert_allclose(rates, [0.0, 1e-3, 2e-3], rtol=1e-5)
    for key in ("loss", "l2", "margin", "quantization", "commitment", "grad_norm", "code_usage", "perplexity"):
        assert np.isfinite(float(metrics[key])), key


def test_discriminator_step_gives_finite_losses_and_trains_the_critic():
    config = tiny_config("--config.training.discriminator.enabled=True")
    programs = train_programs(config)
    state, opt_state = programs.init()
    critic_before = jax.tree.map(np.asarray, state["discriminator"])
    _, images = render_split("train", 8, 0, 32, progress=False)
    adversarial_step = programs.steps[True]
    for step in range(2):  # the warmup's learning rate is zero at step 0
        state, opt_state, metrics = adversarial_step(state, opt_state, images, make_key(step))
    for key in ("loss", "generator_adversarial", "discriminator", "margin"):
        assert np.isfinite(float(metrics[key])), key
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), critic_before, state["discriminator"])
    assert any(jax.tree.leaves(changed))


