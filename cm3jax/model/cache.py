"""The key/value cache of cached decoding: per layer, keys and values [B, S, K, E] by slot.

A row's token at position p lives in slot p (rows are left-aligned), so rows of different
lengths share one cache and each writes at its own position. An unrolled decoder keeps a tuple
of LayerCache, one per block; a decoder with `scan_layers` keeps one StackedCache [L, B, S, K, E],
which each step of its scan reads and writes through a StackedLayer, in place.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def _write(cache_xBSKE: jax.Array, new_BTKE: jax.Array, start_B: jax.Array,
           layer: jax.Array | None = None) -> jax.Array:
    """new_BTKE written from slot start_B[b] in row b of the cache (of one layer, or of `layer`
    of a stacked cache)."""
    lead = () if layer is None else (layer,)

    def put(cache_xSKE, new_TKE, start):
        new = new_TKE.astype(cache_xSKE.dtype).reshape((1,) * len(lead) + new_TKE.shape)
        return jax.lax.dynamic_update_slice(cache_xSKE, new, (*lead, start, 0, 0))
    return jax.vmap(put, in_axes=(len(lead), 0, 0), out_axes=len(lead))(cache_xBSKE, new_BTKE, start_B)


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
        return LayerCache(_write(self.k_BSKE, k_BTKE, start_B), _write(self.v_BSKE, v_BTKE, start_B))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StackedCache:
    """Every block's keys and values in one pair of arrays with a leading layer axis."""
    k_LBSKE: jax.Array
    v_LBSKE: jax.Array

    @classmethod
    def zeros(cls, layers: int, batch: int, slots: int, kv_heads: int, head_size: int, dtype) -> "StackedCache":
        shape = (layers, batch, slots, kv_heads, head_size)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def layer(self, index: jax.Array) -> "StackedLayer":
        return StackedLayer(self, index)


@dataclasses.dataclass(frozen=True)
class StackedLayer:
    """Layer `index` of a StackedCache, used as a LayerCache is: a write updates only the new
    tokens' slots of the stack."""
    stack: StackedCache
    index: jax.Array

    @property
    def k_BSKE(self) -> jax.Array:
        return self.stack.k_LBSKE[self.index]

    @property
    def v_BSKE(self) -> jax.Array:
        return self.stack.v_LBSKE[self.index]

    def write(self, k_BTKE: jax.Array, v_BTKE: jax.Array, start_B: jax.Array) -> "StackedLayer":
        stack = StackedCache(_write(self.stack.k_LBSKE, k_BTKE, start_B, self.index),
                             _write(self.stack.v_LBSKE, v_BTKE, start_B, self.index))
        return StackedLayer(stack, self.index)


KVCache = tuple[LayerCache, ...] | StackedCache
