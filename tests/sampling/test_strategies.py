import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.sampling.strategies import SamplingSettings, categorical, cd_k_scores, choose, draw, guide, top_k_filter, top_p_filter

RNG = np.random.default_rng(0)


def _logits(*shape):
    return jnp.asarray(RNG.normal(size=shape) * 3, jnp.float32)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)


def test_cd_k_matches_a_numpy_reference_of_the_formula():
    for alpha, k in [(0.1, 1), (0.1, 5), (0.5, 3), (1.0, 10)]:
        cond, uncond = _log_softmax(_logits(50)), _log_softmax(_logits(50))
        p = np.exp(cond)
        threshold = alpha * np.sort(p)[::-1][k - 1]
        expected = np.where(p >= threshold, cond - uncond, -np.inf)
        got = np.asarray(cd_k_scores(jnp.asarray(cond, jnp.float32), jnp.asarray(uncond, jnp.float32), alpha, k))
        assert np.array_equal(np.isinf(got), np.isinf(expected))
        np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], rtol=1e-5, atol=1e-5)


def test_guidance_formulas():
    logits = _logits(3, 20)
    lp = _log_softmax(logits)
    knobs = SamplingSettings(cfg_scale=3.0, image_scale=1.5, text_scale=7.5).dynamic()
    np.testing.assert_allclose(guide(logits[:2], knobs), lp[1] + 3.0 * (lp[0] - lp[1]), rtol=1e-5, atol=1e-4)
    full, image, uncond = lp
    expected = uncond + 1.5 * (image - uncond) + 7.5 * (full - image)  # Chameleon's instruct guidance
    np.testing.assert_allclose(guide(logits, knobs), expected, rtol=1e-5, atol=1e-4)
    ones = SamplingSettings().dynamic()
    np.testing.assert_array_equal(guide(logits[:2], ones), guide(logits[:1], ones))
    np.testing.assert_array_equal(guide(logits, ones), guide(logits[:1], ones))


def test_top_k_and_top_p_filters():
    scores = jnp.log(jnp.array([0.5, 0.05, 0.3, 0.15]))
    np.testing.assert_array_equal(np.isfinite(top_k_filter(scores, 2)), [True, False, True, False])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(scores, 0.5)), [True, False, False, False])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(scores, 0.7)), [True, False, True, False])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(scores, 0.9)), [True, False, True, True])
    np.testing.assert_array_equal(top_p_filter(scores, 1.0), scores)


def test_categorical_follows_the_distribution_and_never_draws_impossible_tokens():
    logits = jnp.log(jnp.array([0.0, 0.2, 0.0, 0.5, 0.3, 0.0]))
    keys = jax.random.split(jax.random.key(3), 20000)
    tokens = np.asarray(jax.vmap(lambda k: categorical(k, logits))(keys))
    np.testing.assert_allclose(np.bincount(tokens, minlength=6) / len(tokens), [0, 0.2, 0, 0.5, 0.3, 0], atol=0.01)
    assert int(categorical(keys[0], jnp.array([-jnp.inf, 2.0, -jnp.inf]))) == 1


@pytest.mark.parametrize("size, scale", [(1000, (0.5, 5)), (16384, (0.01, 0.05))])  # peaked; near uniform
def test_top_p_keeps_the_sorted_prefix_that_first_reaches_p(size, scale):
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scores = (rng.normal(size=size) * rng.uniform(*scale)).astype(np.float32)
        p = rng.uniform(0.05, 0.99)
        probs = np.asarray(jax.nn.softmax(jnp.asarray(scores)))  # the filter's own rounding
        order = np.argsort(-probs, kind="stable")
        crossing = int(np.searchsorted(np.cumsum(probs[order], dtype=np.float64), p))  # first index reaching p
        expected = probs >= probs[order[crossing]]  # that prefix, and any tied with its last
        np.testing.assert_array_equal(np.isfinite(jax.jit(top_p_filter)(jnp.asarray(scores), p)), expected)


def test_top_p_one_equals_plain_temperature_sampling():
    keys = jax.random.split(jax.random.key(0), 200)
    scores = _logits(64)
    plain = jax.vmap(lambda k: categorical(k, scores / 0.7))(keys)
    nucleus = jax.vmap(lambda k: draw(scores, k, jnp.float32(0.7), 0, jnp.float32(1.0)))(keys)
    np.testing.assert_array_equal(plain, nucleus)


def test_draws_follow_the_filtered_distribution():
    scores = jnp.log(jnp.array([0.5, 0.05, 0.3, 0.15]))
    keys = jax.random.split(jax.random.key(1), 4000)
    tokens = np.asarray(jax.vmap(lambda k: draw(scores, k, jnp.float32(1.0), 0, jnp.float32(0.7)))(keys))
    counts = np.bincount(tokens, minlength=4) / len(tokens)
    np.testing.assert_allclose(counts, [0.5 / 0.8, 0, 0.3 / 0.8, 0], atol=0.03)
    assert draw(scores, keys[0], jnp.float32(0.0)) == 0


def test_choose_respects_the_allowed_tokens_and_the_mix():
    logits = _logits(2, 30)
    allowed = jnp.arange(30) >= 20
    key = jax.random.key(2)
    for strategy in ("greedy", "sample", "cd_k", "mix"):
        settings = SamplingSettings(strategy=strategy, cfg_scale=2.0)
        for row in (False, True):
            token = int(choose(logits, allowed, key, jnp.bool_(row), settings, settings.dynamic()))
            assert 20 <= token < 30
    greedy_cd = SamplingSettings(strategy="mix", temperature=0.0, cd_alpha=0.1, cd_k=3)
    lp = _log_softmax(np.asarray(logits)[:, 20:])
    p = np.exp(lp[0])
    plausible = p >= 0.1 * np.sort(p)[::-1][2]
    expected = 20 + int(np.argmax(np.where(plausible, lp[0] - lp[1], -np.inf)))
    assert int(choose(logits, allowed, key, jnp.bool_(True), greedy_cd, greedy_cd.dynamic())) == expected
    conditional_argmax = 20 + int(np.argmax(lp[0]))  # cfg_scale 1: the conditional stream alone
    assert int(choose(logits, allowed, key, jnp.bool_(False), greedy_cd, greedy_cd.dynamic())) == conditional_argmax


@pytest.mark.parametrize("bad, message", [
    (dict(top_p=0.0), "top-p must lie in"), (dict(top_p=1.5), "top-p must lie in"),
    (dict(cfg_scale=-1.0), "guidance scale cfg_scale"), (dict(strategy="beam"), "Unknown sampling strategy"),
    (dict(temperature=-0.1), "Temperature"), (dict(cd_alpha=0.0), "CD-K needs")])
def test_bad_settings_are_named(bad, message):
    with pytest.raises(UserError, match=message):
        SamplingSettings(**bad)


def test_static_settings_drop_the_float_knobs():
    a = SamplingSettings(temperature=0.3, top_p=0.5, cfg_scale=4.0, top_k=5)
    assert a.static() == SamplingSettings(top_k=5)
