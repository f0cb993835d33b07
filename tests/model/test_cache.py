import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cm3jax.config import decoder_config, load_config
from cm3jax.model.cache import LayerCache, StackedCache, by_head
from cm3jax.model.decoder import Decoder
from cm3jax.sampling import sampler
from cm3jax.sampling.strategies import SamplingSettings
from cm3jax.vocab import MultimodalVocab


def _new(batch, tokens, kv_heads=2, head_size=3):
    k = jnp.arange(1, 1 + batch * tokens * kv_heads * head_size, dtype=jnp.float32)
    k = k.reshape(batch, tokens, kv_heads, head_size)
    return k, -k


def _filled(shape, seed):
    keys = jax.random.split(jax.random.key(seed))
    return jax.random.normal(keys[0], shape), jax.random.normal(keys[1], shape)


def test_layer_cache_writes_each_row_from_its_own_start_slot_only():
    k, v = _new(3, 2)
    starts = np.array([0, 3, 6])
    old_k, old_v = _filled((3 * 2, 8, 3), 0)  # [B * K, S, E]
    cache = LayerCache(old_k, old_v).write(k, v, jnp.asarray(starts))
    expected_k, expected_v = np.array(old_k).reshape(3, 2, 8, 3), np.array(old_v).reshape(3, 2, 8, 3)
    for row, start in enumerate(starts):
        expected_k[row, :, start:start + 2] = np.swapaxes(k[row], 0, 1)
        expected_v[row, :, start:start + 2] = np.swapaxes(v[row], 0, 1)
    np.testing.assert_array_equal(by_head(cache.k_NSE, 3), expected_k)
    np.testing.assert_array_equal(by_head(cache.v_NSE, 3), expected_v)


def test_writes_take_the_caches_dtype():
    k, v = _new(1, 2)
    cache = LayerCache.zeros(1, 4, 2, 3, jnp.bfloat16).write(k, v, jnp.asarray([1]))
    assert cache.k_NSE.shape == (2, 4, 3) and cache.k_NSE.dtype == cache.v_NSE.dtype == jnp.bfloat16
    np.testing.assert_array_equal(cache.k_NSE[:, 1:3].astype(jnp.float32), np.swapaxes(k[0], 0, 1))


def test_a_stacked_layer_writes_only_its_own_layers_slots():
    k, v = _new(2, 1)
    old_k, old_v = _filled((3, 2 * 2, 4, 3), 1)  # [L, B * K, S, E]
    written = StackedCache(old_k, old_v).layer(jnp.int32(1)).write(k, v, jnp.asarray([2, 0]))
    expected_k, expected_v = np.array(old_k).reshape(3, 2, 2, 4, 3), np.array(old_v).reshape(3, 2, 2, 4, 3)
    expected_k[1, 0, :, 2], expected_k[1, 1, :, 0] = k[0, 0], k[1, 0]
    expected_v[1, 0, :, 2], expected_v[1, 1, :, 0] = v[0, 0], v[1, 0]
    np.testing.assert_array_equal(written.stack.k_LNSE, expected_k.reshape(3, 4, 4, 3))
    np.testing.assert_array_equal(written.stack.v_LNSE, expected_v.reshape(3, 4, 4, 3))
    np.testing.assert_array_equal(by_head(written.k_NSE, 2), expected_k[1])
    np.testing.assert_array_equal(by_head(written.v_NSE, 2), expected_v[1])


def test_one_row_is_written_as_many_rows_are():
    k, v = _new(1, 2)
    old_k, old_v = _filled((3, 2, 6, 3), 2)  # [L, B * K, S, E]
    one = StackedCache(old_k, old_v).layer(jnp.int32(2)).write(k, v, jnp.asarray([3])).stack
    expected_k = np.array(old_k)
    expected_k[2, :, 3:5] = np.swapaxes(k[0], 0, 1)
    np.testing.assert_array_equal(one.k_LNSE, expected_k)
    pair = LayerCache(*_filled((2 * 2, 6, 3), 3)).write(jnp.concatenate([k, k]), jnp.concatenate([v, v]),
                                                        jnp.asarray([3, 3]))
    alone = LayerCache(pair.k_NSE[:2] * 0, pair.v_NSE[:2] * 0).write(k, v, jnp.asarray([3]))
    np.testing.assert_array_equal(alone.k_NSE[:, 3:5], pair.k_NSE[:2, 3:5])


def _decode_loop_hlo(batch: int) -> tuple[str, tuple[int, ...]]:
    """The optimized HLO of the sampler's decode loop on a tiny model, and one cache array's shape."""
    config = load_config("experiments/shapes_tiny.py:test")
    vocab = MultimodalVocab(64, 32, 4)
    config.model.vocab_size = vocab.padded_size
    config.model.image_id_start, config.model.image_id_end = vocab.image_offset, vocab.size
    model = Decoder(decoder_config(config), nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    cache = model.init_cache(batch, 32)
    settings = SamplingSettings(top_p=0.9)
    n = jnp.zeros((batch,), jnp.int32)
    lowered = sampler._decode.lower(graphdef, state, cache, jnp.zeros((batch, vocab.padded_size)), n + 3, n, n,
                                    jnp.arange(batch), jax.random.key(0), settings.dynamic(),
                                    settings=settings.static(), vocab=vocab, streams=1, max_new=16, until="eos")
    return lowered.compile().as_text(), cache[0].k_NSE.shape


def test_the_decode_loop_updates_the_cache_in_place():
    """No step copies a layer's keys or values (with the cache stored [B, K, S, E], XLA:CPU copied
    each three times a step at batch 1: 20 copies in this loop)."""
    for batch in (1, 3):
        hlo, shape = _decode_loop_hlo(batch)
        cache_type = re.escape(f"f32[{','.join(map(str, shape))}]")
        assert re.findall(rf"= {cache_type}\S* copy\(", hlo) == [], batch
