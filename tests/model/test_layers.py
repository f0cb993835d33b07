import jax
import jax.numpy as jnp
import numpy as np

from cm3jax.model.layers import QUERY_CHUNK, attention_mask, dot_product_attention


def test_causal_blocks_equal_full_attention_on_packed_rows():
    t = 3 * QUERY_CHUNK
    lengths = [100, 200, t - 300]  # documents crossing the block boundaries
    segments = jnp.concatenate([jnp.full(n, i + 1) for i, n in enumerate(lengths)])[None].repeat(2, 0)
    positions = jnp.concatenate([jnp.arange(n) for n in lengths])[None].repeat(2, 0)
    mask = attention_mask(segments, positions, segments, positions)
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (2, t, 4, 8))
    k, v = (jax.random.normal(key, (2, t, 2, 8)) for key in keys[1:])  # grouped: 2 query heads per kv head
    full = dot_product_attention(q, k, v, mask)
    blocked = dot_product_attention(q, k, v, mask, causal_blocks=True)
    np.testing.assert_allclose(blocked, full, atol=1e-6)
    reference = np.einsum("bthe,bshe->bhts", np.asarray(q), np.repeat(np.asarray(k), 2, axis=2)) / np.sqrt(8)
    reference = np.where(np.asarray(mask)[:, None], reference, -np.inf)
    probs = np.exp(reference - reference.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(full, np.einsum("bhts,bshe->bthe", probs, np.repeat(np.asarray(v), 2, axis=2)),
                               atol=1e-5)
