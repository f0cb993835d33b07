import jax
import jax.numpy as jnp
import numpy as np

from cm3jax.model.cache import LayerCache, StackedCache


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
    old_k, old_v = _filled((3, 2, 8, 3), 0)  # [B, K, S, E]
    cache = LayerCache(old_k, old_v).write(k, v, jnp.asarray(starts))
    expected_k, expected_v = np.array(old_k), np.array(old_v)
    for row, start in enumerate(starts):
        expected_k[row, :, start:start + 2] = np.swapaxes(k[row], 0, 1)
        expected_v[row, :, start:start + 2] = np.swapaxes(v[row], 0, 1)
    np.testing.assert_array_equal(cache.k_BKSE, expected_k)
    np.testing.assert_array_equal(cache.v_BKSE, expected_v)


def test_writes_take_the_caches_dtype():
    k, v = _new(1, 2)
    cache = LayerCache.zeros(1, 4, 2, 3, jnp.bfloat16).write(k, v, jnp.asarray([1]))
    assert cache.k_BKSE.shape == (1, 2, 4, 3) and cache.k_BKSE.dtype == cache.v_BKSE.dtype == jnp.bfloat16
    np.testing.assert_array_equal(cache.k_BKSE[0, :, 1:3].astype(jnp.float32), np.swapaxes(k[0], 0, 1))


def test_a_stacked_layer_writes_only_its_own_layers_slots():
    k, v = _new(2, 1)
    old_k, old_v = _filled((3, 2, 2, 4, 3), 1)  # [L, B, K, S, E]
    written = StackedCache(old_k, old_v).layer(jnp.int32(1)).write(k, v, jnp.asarray([2, 0]))
    expected_k, expected_v = np.array(old_k), np.array(old_v)
    expected_k[1, 0, :, 2], expected_k[1, 1, :, 0] = k[0, 0], k[1, 0]
    expected_v[1, 0, :, 2], expected_v[1, 1, :, 0] = v[0, 0], v[1, 0]
    np.testing.assert_array_equal(written.stack.k_LBKSE, expected_k)
    np.testing.assert_array_equal(written.stack.v_LBKSE, expected_v)
    np.testing.assert_array_equal(written.k_BKSE, expected_k[1])
    np.testing.assert_array_equal(written.v_BKSE, expected_v[1])


def test_one_row_is_written_as_many_rows_are():
    k, v = _new(1, 2)
    old_k, old_v = _filled((3, 1, 2, 6, 3), 2)  # [L, B, K, S, E]
    one = StackedCache(old_k, old_v).layer(jnp.int32(2)).write(k, v, jnp.asarray([3])).stack
    expected_k = np.array(old_k)
    expected_k[2, 0, :, 3:5] = np.swapaxes(k[0], 0, 1)
    np.testing.assert_array_equal(one.k_LBKSE, expected_k)
    pair = LayerCache(*_filled((2, 2, 6, 3), 3)).write(jnp.concatenate([k, k]), jnp.concatenate([v, v]),
                                                       jnp.asarray([3, 3]))
    alone = LayerCache(pair.k_BKSE[:1] * 0, pair.v_BKSE[:1] * 0).write(k, v, jnp.asarray([3]))
    np.testing.assert_array_equal(alone.k_BKSE[0, :, 3:5], pair.k_BKSE[0, :, 3:5])
