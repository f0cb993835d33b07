"""The key/value cache of cached decoding: per layer, keys and values [B, K, S, E] by slot.

A row's token at position p lives in slot p (rows are left-aligned), so rows of different
lengths share one cache and each writes at its own position. An unrolled decoder keeps a tuple
of LayerCache, one per block; a decoder with `scan_layers` keeps one StackedCache [L, B, K, S, E],
which each step of its scan reads and writes through a StackedLayer, in place. Heads come before
slots because attention reads them so: stored by slot first, every decode step copied each
layer's whole cache into this layout (a fifth of a batch-8 step on bench-small).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def _write(cache_xBKSE: jax.Array, new_BTKE: jax.Array, start_B: jax.Array,
           layer: jax.Array | None = None) -> jax.Array:
    """new_BTKE written from slot start_B[b] in row b of the cache (of one layer, or of `layer`
    of a stacked cache)."""
    lead = () if layer is None else (layer,)

    def put(cache_xKSE, new_TKE, start):
        new_KTE = new_TKE.astype(cache_xKSE.dtype).transpose(1, 0, 2)
        new = new_KTE.reshape((1,) * len(lead) + new_KTE.shape)
        return jax.lax.dynamic_update_slice(cache_xKSE, new, (*lead, 0, start, 0))
    return jax.vmap(put, in_axes=(len(lead), 0, 0), out_axes=len(lead))(cache_xBKSE, new_BTKE, start_B)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerCache:
    k_BKSE: jax.Array
    v_BKSE: jax.Array

    @classmethod
    def zeros(cls, batch: int, slots: int, kv_heads: int, head_size: int, dtype) -> "LayerCache":
        shape = (batch, kv_heads, slots, head_size)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def write(self, k_BTKE: jax.Array, v_BTKE: jax.Array, start_B: jax.Array) -> "LayerCache":
        """Keys and values of T consecutive tokens written from slot start_B[b] in row b."""
        return LayerCache(_write(self.k_BKSE, k_BTKE, start_B), _write(self.v_BKSE, v_BTKE, start_B))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StackedCache:
    """Every block's keys and values in one pair of arrays with a leading layer axis."""
    k_LBKSE: jax.Array
    v_LBKSE: jax.Array

    @classmethod
    def zeros(cls, layers: int, batch: int, slots: int, kv_heads: int, head_size: int, dtype) -> "StackedCache":
        shape = (layers, batch, kv_heads, slots, head_size)
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
    def k_BKSE(self) -> jax.Array:
        return self.stack.k_LBKSE[self.index]

    @property
    def v_BKSE(self) -> jax.Array:
        return self.stack.v_LBKSE[self.index]

    def write(self, k_BTKE: jax.Array, v_BTKE: jax.Array, start_B: jax.Array) -> "StackedLayer":
        stack = StackedCache(_write(self.stack.k_LBKSE, k_BTKE, start_B, self.index),
                             _write(self.stack.v_LBKSE, v_BTKE, start_B, self.index))
        return StackedLayer(stack, self.index)


KVCache = tuple[LayerCache, ...] | StackedCache
