import jax
import jax.numpy as jnp
import numpy as np

from cm3jax.model.layers import QUERY_CHUNK, attention_mask, cached_attention, dense, dot_product_attention


def test_causal_blocks_equal_full_attention_on_packed_rows():
    t = 3 * QUERY_CHUNK
    lengths = [100, 200, t - 300]  # documents crossing the block boundaries
    segments = jnp.concatenate([jnp.full(n, i + 1) for i, n in enumerate(lengths)])[None].repeat(2, 0)
    positions = jnp.concatenate([jnp.arange(n) for n in lengths])[None].repeat(2, 0)
    mask = attention_mask(segments, positions, segments, positions)
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (2, t, 4, 8))
    k, v = (jax.random.normal(key, (2, t, 2, 8)) for key in keys[1:])  # grouped: 2 query heads per kv head
    k_BKSE, v_BKSE = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # head first
    full = dot_product_attention(q, k_BKSE, v_BKSE, mask)
    blocked = dot_product_attention(q, k_BKSE, v_BKSE, mask, causal_blocks=True)
    np.testing.assert_allclose(blocked, full, atol=1e-6)
    reference = np.einsum("bthe,bshe->bhts", np.asarray(q), np.repeat(np.asarray(k), 2, axis=2)) / np.sqrt(8)
    reference = np.where(np.asarray(mask)[:, None], reference, -np.inf)
    probs = np.exp(reference - reference.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(full, np.einsum("bhts,bshe->bthe", probs, np.repeat(np.asarray(v), 2, axis=2)),
                               atol=1e-5)


def test_attention_over_the_cache_layout_equals_attention_by_head():
    keys = jax.random.split(jax.random.key(2), 3)
    b, t, s, k_heads = 3, 2, 7, 2
    q = jax.random.normal(keys[0], (b, t, 4, 8))  # 2 query heads per kv head
    k_BKSE, v_BKSE = (jax.random.normal(key, (b, k_heads, s, 8)) for key in keys[1:])
    ends = jnp.asarray([[2, 3], [5, 6], [0, 1]])  # each query sees the slots up to its own
    mask = jnp.arange(s)[None, None] <= ends[:, :, None]
    flat = cached_attention(q, k_BKSE.reshape(b * k_heads, s, 8), v_BKSE.reshape(b * k_heads, s, 8), mask)
    np.testing.assert_allclose(flat, dot_product_attention(q, k_BKSE, v_BKSE, mask), atol=1e-6)


def test_dense_values_and_gradients_equal_the_plain_product():
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(keys[0], (2, 5, 8))
    w = jax.random.normal(keys[1], (8, 6))
    g = jax.random.normal(keys[2], (2, 5, 6))
    for out_dtype in (None, jnp.float32):
        def loss(fn):
            return lambda x, w: jnp.sum(fn(x, w) * g)
        ours = jax.value_and_grad(loss(lambda x, w: dense(x, w, out_dtype)), argnums=(0, 1))(x, w)
        plain = jax.value_and_grad(loss(lambda x, w: jnp.einsum("btd,df->btf", x, w)), argnums=(0, 1))(x, w)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_dense_keeps_bfloat16_operands_and_float32_logits():
    x = jnp.ones((2, 3, 4), jnp.bfloat16)
    w = jnp.full((4, 5), 0.5, jnp.bfloat16)
    assert dense(x, w).dtype == jnp.bfloat16
    assert dense(x, w, jnp.float32).dtype == jnp.float32
    dx, dw = jax.grad(lambda x, w: jnp.sum(dense(x, w, jnp.float32)), argnums=(0, 1))(x, w)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    np.testing.assert_allclose(dw.astype(jnp.float32), np.full((4, 5), 6.0))  # 2 x 3 tokens of ones
    np.testing.assert_allclose(dx.astype(jnp.float32), np.full((2, 3, 4), 2.5))


def test_dense_weight_gradient_has_the_cpu_barrier_only_on_the_cpu():
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(dense(x, w)), argnums=(0, 1)))
    args = jax.ShapeDtypeStruct((2, 5, 8), jnp.float32), jax.ShapeDtypeStruct((8, 6), jnp.float32)
    lowered = {platform: grad.trace(*args).lower(lowering_platforms=(platform,)).as_text()
               for platform in ("cpu", "cuda", "tpu")}
    assert "optimization_barrier" in lowered["cpu"]
    assert "optimization_barrier" not in lowered["cuda"] and "optimization_barrier" not in lowered["tpu"]
    assert "dot_general" in lowered["cuda"] and "dot_general" in lowered["tpu"]
