import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.retrieval.clip import CLIP, ClipConfig, document_keys, eos_positions, init_clip, l2_normalize

TINY = ClipConfig(image_size=16, patch_size=4, vision_width=16, vision_layers=1, vision_heads=2, vision_mlp=32,
                  vocab_size=50, max_length=10, text_width=16, text_layers=2, text_heads=2, text_mlp=32,
                  eos_token_id=49, projection_dim=8)


@pytest.fixture(scope="module")
def model():
    return init_clip(TINY)


@pytest.fixture(scope="module")
def text_fn(model):
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda ids, lengths: nnx.merge(graphdef, state).text_features(ids, lengths))
    return lambda ids, lengths=None: np.asarray(fn(jnp.asarray(ids), lengths))


def test_default_config_is_openai_vit_b32():
    config = ClipConfig().check()
    assert (config.image_size, config.patch_size, config.vision_width, config.vision_layers) == (224, 32, 768, 12)
    assert (config.text_width, config.text_layers, config.max_length, config.projection_dim) == (512, 12, 77, 512)
    assert config.num_patches == 49
    params = nnx.state(nnx.eval_shape(lambda: CLIP(config, nnx.Rngs(0))), nnx.Param)
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    assert count == 151_277_313  # openai/clip-vit-base-patch32's parameter count


@pytest.mark.parametrize("change, message", [
    (dict(image_size=30), "multiple of patch_size"), (dict(text_width=15), "divisible"),
    (dict(vision_activation="relu"), "not supported"), (dict(eos_token_id=50), "outside the vocabulary"),
    (dict(vision_layers=0), "positive"),
])
def test_bad_configs_are_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(TINY, **change).check()


def test_text_is_causal_and_pooled_at_the_eos(text_fn):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 48, size=(3, 10))
    ids[:, 4] = 49
    after = ids.copy()
    after[:, 5:] = rng.integers(0, 48, size=(3, 5))  # tokens after the EOS must not matter
    before = ids.copy()
    before[:, 2] = (ids[:, 2] + 1) % 48  # tokens before it must
    np.testing.assert_allclose(text_fn(ids), text_fn(after), atol=1e-6)
    assert np.abs(text_fn(ids) - text_fn(before)).max() > 1e-3
    np.testing.assert_allclose(text_fn(ids, jnp.full(3, 5)), text_fn(ids), atol=1e-6)
    assert np.abs(text_fn(ids, jnp.full(3, 4)) - text_fn(ids)).max() > 1e-3


def test_eos_positions_as_transformers_finds_them():
    ids = jnp.array([[5, 9, 7, 9], [9, 1, 2, 3]])
    np.testing.assert_array_equal(eos_positions(ids, 9), [1, 0])  # the first EOS
    np.testing.assert_array_equal(eos_positions(ids, 2), [1, 0])  # legacy: the largest id


def test_embeddings_are_unit_vectors_and_images_must_fit(model):
    pixels = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
    graphdef, state = nnx.split(model)
    embedded = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s).embed_images(x))(state, pixels))
    assert embedded.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1, atol=1e-6)
    with pytest.raises(UserError, match="preprocess"):
        jax.eval_shape(model.embed_images, jnp.zeros((1, 20, 20, 3)))
    with pytest.raises(UserError, match="exceed"):
        jax.eval_shape(model.embed_texts, jnp.zeros((1, 11), jnp.int32))


def test_document_keys_are_the_normalised_mean():
    rng = np.random.default_rng(2)
    text, image = l2_normalize(rng.normal(size=(4, 6))), l2_normalize(rng.normal(size=(4, 6)))
    keys = document_keys(text, image)
    np.testing.assert_allclose(keys, (text + image) / np.linalg.norm(text + image, axis=1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(keys, axis=1), 1, atol=1e-12)
    # orthogonal unit vectors: the key is their sum over sqrt(2)
    e = np.eye(2)
    np.testing.assert_allclose(document_keys(e[:1], e[1:]), [[2 ** -0.5, 2 ** -0.5]], atol=1e-12)
    assert document_keys(text, None) is text and document_keys(None, image) is image
    np.testing.assert_allclose(np.asarray(document_keys(jnp.asarray(text), jnp.asarray(image))), keys, atol=1e-6)
    with pytest.raises(UserError, match="needs"):
        document_keys(None, None)
