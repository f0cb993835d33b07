"""The decoder's parts: norms, rotary positions, attention, MLP. No biases anywhere.

Parameters are declared with logical axis names (cm3jax.sharding.RULES maps them to the mesh).
Tensor names carry their shapes: B batch, T query length, S key length, D model width,
H query heads, K key/value heads, G = H / K, E head size, F MLP width, V vocabulary.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from cm3jax.model.cache import LayerCache, StackedLayer
from cm3jax.model.config import DecoderConfig
from cm3jax.sharding import constrain

NEG_INF = -1e30


def _matmul(x_BTD: jax.Array, w_DF: jax.Array, out_dtype) -> jax.Array:
    return jax.lax.dot_general(x_BTD, w_DF, (((x_BTD.ndim - 1,), (0,)), ((), ())), preferred_element_type=out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense(x_BTD: jax.Array, w_DF: jax.Array, out_dtype=None) -> jax.Array:
    """x @ w over x's last axis, with a hand-written backward. Left to autodiff, XLA:CPU lays the
    output gradient out transposed for the weight gradient and computes x^T g^T in a generic
    kernel at a third of the plain product's rate (a quarter of bench-small's training step); on
    the CPU a barrier keeps x and g as they are, so the weight gradient is the fast x^T g."""
    return _matmul(x_BTD, w_DF, out_dtype)


def _dense_fwd(x_BTD, w_DF, out_dtype):
    return _matmul(x_BTD, w_DF, out_dtype), (x_BTD, w_DF)


def _weight_grad(x_ND: jax.Array, g_NF: jax.Array) -> jax.Array:
    return jax.lax.dot_general(x_ND, g_NF, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _weight_grad_behind_barrier(x_ND: jax.Array, g_NF: jax.Array) -> jax.Array:
    return _weight_grad(*jax.lax.optimization_barrier((x_ND, g_NF)))


def _dense_bwd(out_dtype, residuals, g_BTF):
    x_BTD, w_DF = residuals
    dx_BTD = jax.lax.dot_general(g_BTF.astype(w_DF.dtype), w_DF, (((g_BTF.ndim - 1,), (1,)), ((), ())),
                                 preferred_element_type=x_BTD.dtype)
    x_ND = x_BTD.reshape(-1, x_BTD.shape[-1])
    g_NF = g_BTF.reshape(-1, g_BTF.shape[-1]).astype(x_BTD.dtype)
    # The barrier is an XLA:CPU layout fix, measured only there; elsewhere the plain product.
    dw_DF = jax.lax.platform_dependent(x_ND, g_NF, cpu=_weight_grad_behind_barrier, default=_weight_grad)
    return dx_BTD, dw_DF.astype(w_DF.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


def truncated_normal(std: float):
    """Normal(0, std) truncated at +-3 std (metaseq's trunc_normal_(std, -3 std, 3 std))."""
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.truncated_normal(key, -3.0, 3.0, shape, dtype)
    return init


def param(rngs: nnx.Rngs, init, shape: tuple[int, ...], names: tuple[str | None, ...]) -> nnx.Param:
    return nnx.Param(init(rngs.params(), shape), logical_axes=names)


class Norm(nnx.Module):
    """LayerNorm without learnable parameters (CM3Leon) or RMSNorm with a learned scale (Chameleon).
    Statistics in float32 over the last axis."""

    def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
        self.kind, self.eps = config.norm, config.norm_eps
        self.scale = (param(rngs, lambda k, s: jnp.ones(s, jnp.float32), (config.d_model,), ("norm",))
                      if self.kind == "rmsnorm" else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if self.kind == "rmsnorm":
            y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.scale[...]
        else:
            mean = jnp.mean(x, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        return y.astype(dtype)


class HeadNorm(nnx.Module):
    """QK-norm as Chameleon does it: LayerNorm over each head's vector with a per-head affine."""

    def __init__(self, heads: int, head_size: int, eps: float, rngs: nnx.Rngs, names: tuple[str, str]):
        self.eps = eps
        self.scale = param(rngs, lambda k, s: jnp.ones(s, jnp.float32), (heads, head_size), names)
        self.bias = param(rngs, lambda k, s: jnp.zeros(s, jnp.float32), (heads, head_size), names)

    def __call__(self, x_BTHE: jax.Array) -> jax.Array:
        x = x_BTHE.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
        return y.astype(x_BTHE.dtype)


def rope(x_BTHE: jax.Array, positions_BT: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding, rotate-half convention (the first and second halves of each head pair up)."""
    half = x_BTHE.shape[-1] // 2
    inv_freq = 1.0 / theta ** (jnp.arange(half, dtype=jnp.float32) / half)
    angles_BTE = positions_BT[..., None].astype(jnp.float32) * inv_freq
    cos, sin = jnp.cos(angles_BTE)[:, :, None], jnp.sin(angles_BTE)[:, :, None]
    x = x_BTHE.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BTHE.dtype)


def attention_mask(q_segments_BT, q_positions_BT, k_segments_BS, k_positions_BS) -> jax.Array:
    """bool[B, T, S]: a query sees keys of its own document at or before its own position."""
    same = q_segments_BT[:, :, None] == k_segments_BS[:, None, :]
    causal = k_positions_BS[:, None, :] <= q_positions_BT[:, :, None]
    return same & causal


QUERY_CHUNK = 128  # causal self-attention works in query blocks of this many rows


def dot_product_attention(q_BTHE, k_BKSE, v_BKSE, mask_BTS, causal_blocks: bool = False) -> jax.Array:
    """Softmax attention under a boolean mask. With `causal_blocks` (self-attention over rows
    whose mask never lets a query see a later key, as packed causal rows are), queries go in
    blocks of QUERY_CHUNK rows and each block reads only the keys up to its own end: the
    same result without computing the masked upper triangle's blocks. Keys and values come head
    first."""
    b, t, h, e = q_BTHE.shape
    k_heads = k_BKSE.shape[1]
    q_BKGTE = (q_BTHE * e ** -0.5).reshape(b, t, k_heads, h // k_heads, e).transpose(0, 2, 3, 1, 4)

    def attend(q_part_BKGTE, mask_part_BTS):
        keys = mask_part_BTS.shape[-1]
        logits = jnp.einsum("bkgte,bkse->bkgts", q_part_BKGTE, k_BKSE[:, :, :keys],
                            preferred_element_type=jnp.float32)
        logits = jnp.where(mask_part_BTS[:, None, None], logits, NEG_INF)
        probs = jax.nn.softmax(logits, axis=-1).astype(v_BKSE.dtype)
        return jnp.einsum("bkgts,bkse->bkgte", probs, v_BKSE[:, :, :keys])

    blocks = t // QUERY_CHUNK if causal_blocks and t == k_BKSE.shape[2] and t % QUERY_CHUNK == 0 else 1
    if blocks == 1:
        out_BKGTE = attend(q_BKGTE, mask_BTS)
    else:
        c = QUERY_CHUNK
        out_BKGTE = jnp.concatenate([attend(q_BKGTE[:, :, :, i * c:(i + 1) * c], mask_BTS[:, i * c:(i + 1) * c, :(i + 1) * c])
                                     for i in range(blocks)], axis=3)
    return out_BKGTE.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)


def cached_attention(q_BTHE, k_NSE, v_NSE, mask_BTS) -> jax.Array:
    """dot_product_attention over a cache laid out as cm3jax.model.cache stores it: keys and values
    [N, S, E] with N = B * K, read as they are stored."""
    b, t, h, e = q_BTHE.shape
    n, s = k_NSE.shape[:2]
    k_heads = n // b
    g = h // k_heads
    q_NXE = (q_BTHE * e ** -0.5).reshape(b, t, k_heads, g, e).transpose(0, 2, 3, 1, 4).reshape(n, g * t, e)
    logits_NXS = jnp.einsum("nxe,nse->nxs", q_NXE, k_NSE, preferred_element_type=jnp.float32)
    mask_NXS = jnp.broadcast_to(mask_BTS[:, None, None], (b, k_heads, g, t, s)).reshape(n, g * t, s)
    probs_NXS = jax.nn.softmax(jnp.where(mask_NXS, logits_NXS, NEG_INF), axis=-1).astype(v_NSE.dtype)
    out_NXE = jnp.einsum("nxs,nse->nxe", probs_NXS, v_NSE)
    return out_NXE.reshape(b, k_heads, g, t, e).transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)


class Attention(nnx.Module):
    def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
        d, h, k, e = config.d_model, config.n_heads, config.num_kv_heads, config.head_size
        init = truncated_normal(config.init_std)
        out_init = (lambda key, s: jnp.zeros(s, jnp.float32)) if config.zero_init_outputs else init
        self.config = config
        self.wq = param(rngs, init, (d, h, e), ("embed", "heads", "head_dim"))
        self.wk = param(rngs, init, (d, k, e), ("embed", "kv_heads", "head_dim"))
        self.wv = param(rngs, init, (d, k, e), ("embed", "kv_heads", "head_dim"))
        self.wo = param(rngs, out_init, (h, e, d), ("heads", "head_dim", "embed"))
        if config.qk_norm:
            self.q_norm = HeadNorm(h, e, config.head_norm_eps, rngs, ("heads", "head_dim"))
            self.k_norm = HeadNorm(k, e, config.head_norm_eps, rngs, ("kv_heads", "head_dim"))
        else:
            self.q_norm = self.k_norm = None

    def project(self, x_BTD: jax.Array, positions_BT: jax.Array):
        """Queries, keys and values of x, normalised and rotated as configured."""
        dtype = x_BTD.dtype
        q, k, v = (dense(x_BTD, w[...].astype(dtype).reshape(w.shape[0], -1)).reshape(*x_BTD.shape[:2], *w.shape[1:])
                   for w in (self.wq, self.wk, self.wv))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.config.positions == "rope":
            q = rope(q, positions_BT, self.config.rope_theta)
            k = rope(k, positions_BT, self.config.rope_theta)
        return q, k, v

    def output(self, out_BTHE: jax.Array) -> jax.Array:
        b, t, h, e = out_BTHE.shape
        return dense(out_BTHE.reshape(b, t, h * e), self.wo[...].astype(out_BTHE.dtype).reshape(h * e, -1))

    def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segments_BT: jax.Array) -> jax.Array:
        q, k, v = self.project(x_BTD, positions_BT)
        mask = attention_mask(segments_BT, positions_BT, segments_BT, positions_BT)
        k_BKSE, v_BKSE = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        return self.output(dot_product_attention(q, k_BKSE, v_BKSE, mask, causal_blocks=True))

    def cached(self, x_BTD: jax.Array, positions_BT: jax.Array, cache: LayerCache | StackedLayer
               ) -> tuple[jax.Array, LayerCache | StackedLayer]:
        """Attention of T new tokens per row (consecutive positions, one document per row) over the
        row's cache: their keys and values are written at slots = positions, and each query reads
        the slots at or before its own position."""
        q, k, v = self.project(x_BTD, positions_BT)
        cache = cache.write(k, v, positions_BT[:, 0])
        slots_S = jnp.arange(cache.k_NSE.shape[1])
        mask_BTS = slots_S[None, None, :] <= positions_BT[:, :, None]
        return self.output(cached_attention(q, cache.k_NSE, cache.v_NSE, mask_BTS)), cache


class MLP(nnx.Module):
    def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
        d, f = config.d_model, config.mlp_hidden
        init = truncated_normal(config.init_std)
        out_init = (lambda key, s: jnp.zeros(s, jnp.float32)) if config.zero_init_outputs else init
        self.kind = config.mlp
        self.wi = param(rngs, init, (d, f), ("embed", "mlp"))
        self.wg = param(rngs, init, (d, f), ("embed", "mlp")) if self.kind == "swiglu" else None
        self.wo = param(rngs, out_init, (f, d), ("mlp", "embed"))

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        dtype = x_BTD.dtype
        h_BTF = dense(x_BTD, self.wi[...].astype(dtype))
        if self.kind == "swiglu":
            h_BTF = jax.nn.silu(dense(x_BTD, self.wg[...].astype(dtype))) * h_BTF
        else:
            h_BTF = jax.nn.gelu(h_BTF, approximate=False)
        h_BTF = constrain(h_BTF, ("batch", "length", "act_heads"))
        return dense(h_BTF, self.wo[...].astype(dtype))
