"""The key/value cache of cached decoding: per layer, keys and values [B, S, K, E] by slot.

A row's token at position p lives in slot p (rows are left-aligned), so rows of different
lengths share one cache and each writes at its own position.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerCache:
    k_BSKE: jax.Array
    v_BSKE: jax.Array

    @classmethod
    def zeros(cls, batch: int, slots: int, kv_heads: int, head_size: int, dtype) -> "LayerCache":
        shape = (batch, slots, kv_heads, head_size)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def write(self, k_BTKE: jax.Array, v_BTKE: jax.Array, start_B: jax.Array) -> "LayerCache":
        """Keys and values of T consecutive tokens written from slot start_B[b] in row b."""
        def put(cache_SKE, new_TKE, start):
            return jax.lax.dynamic_update_slice(cache_SKE, new_TKE.astype(cache_SKE.dtype), (start, 0, 0))
        return LayerCache(jax.vmap(put)(self.k_BSKE, k_BTKE, start_B), jax.vmap(put)(self.v_BSKE, v_BTKE, start_B))


KVCache = tuple  # of LayerCache, one per decoder block
