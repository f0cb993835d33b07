"""The key/value cache of cached decoding: per layer, keys and values [N, S, E], N = B * K: head k
of row b is cache row b * K + k, and a row's token at position p lives in slot p.

Rows are left-aligned, so rows of different lengths share one cache and each writes at its own
position. An unrolled decoder keeps a tuple of LayerCache, one per block; a decoder with
`scan_layers` keeps one StackedCache [L, N, S, E], which each step of its scan reads and writes
through a StackedLayer, in place. Batch and heads share one axis because attention's products
read the cache so, batched over (row, head): stored [B, K, S, E], the cache was reshaped for each
product, and at batch 1 XLA:CPU then copied every layer's keys and values three times a decode
step (a fifth of bench-small's step; docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def _write(cache_xNSE: jax.Array, new_BTKE: jax.Array, start_B: jax.Array,
           layer: jax.Array | None = None) -> jax.Array:
    """new_BTKE written from slot start_B[b] in row b of the cache (of one layer, or of `layer`
    of a stacked cache). Slots are never out of range: the sampler sizes the cache."""
    b, t, k = new_BTKE.shape[:3]
    rows_BTK = jnp.broadcast_to(jnp.arange(b)[:, None, None] * k + jnp.arange(k), (b, t, k))
    slots_BTK = jnp.broadcast_to((start_B[:, None] + jnp.arange(t))[:, :, None], (b, t, k))
    lead = () if layer is None else (layer,)
    return cache_xNSE.at[(*lead, rows_BTK, slots_BTK)].set(new_BTKE.astype(cache_xNSE.dtype),
                                                           mode="promise_in_bounds", unique_indices=True)


def by_head(cache_NSE: jax.Array, batch: int) -> jax.Array:
    """[B, K, S, E]: a layer's keys or values with rows and heads apart."""
    n, s, e = cache_NSE.shape
    return cache_NSE.reshape(batch, n // batch, s, e)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerCache:
    k_NSE: jax.Array
    v_NSE: jax.Array

    @classmethod
    def zeros(cls, batch: int, slots: int, kv_heads: int, head_size: int, dtype) -> "LayerCache":
        shape = (batch * kv_heads, slots, head_size)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def write(self, k_BTKE: jax.Array, v_BTKE: jax.Array, start_B: jax.Array) -> "LayerCache":
        """Keys and values of T consecutive tokens written from slot start_B[b] in row b."""
        return LayerCache(_write(self.k_NSE, k_BTKE, start_B), _write(self.v_NSE, v_BTKE, start_B))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StackedCache:
    """Every block's keys and values in one pair of arrays with a leading layer axis."""
    k_LNSE: jax.Array
    v_LNSE: jax.Array

    @classmethod
    def zeros(cls, layers: int, batch: int, slots: int, kv_heads: int, head_size: int, dtype) -> "StackedCache":
        shape = (layers, batch * kv_heads, slots, head_size)
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
    def k_NSE(self) -> jax.Array:
        return self.stack.k_LNSE[self.index]

    @property
    def v_NSE(self) -> jax.Array:
        return self.stack.v_LNSE[self.index]

    def write(self, k_BTKE: jax.Array, v_BTKE: jax.Array, start_B: jax.Array) -> "StackedLayer":
        stack = StackedCache(_write(self.stack.k_LNSE, k_BTKE, start_B, self.index),
                             _write(self.stack.v_LNSE, v_BTKE, start_B, self.index))
        return StackedLayer(stack, self.index)


KVCache = tuple[LayerCache, ...] | StackedCache
