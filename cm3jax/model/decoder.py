"""The decoder-only transformer over the shared vocabulary.

Its blocks are unrolled (a list, one compiled copy each) or, with `scan_layers`, one Block whose
parameters carry a leading layer axis [L, ...], run by `jax.lax.scan`: one compiled copy for all.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from cm3jax.model.cache import KVCache, LayerCache, StackedCache, StackedLayer
from cm3jax.model.config import DecoderConfig
from cm3jax.model.layers import MLP, Attention, Norm, dense, param, truncated_normal
from cm3jax.sharding import constrain

ACTIVATION = ("batch", "length", "act_embed")


class Block(nnx.Module):
    """Pre-norm (x + f(norm(x))) or, with swin_norm, x + norm(f(x))."""

    def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
        self.swin = config.swin_norm
        self.attention_norm = Norm(config, rngs)
        self.attention = Attention(config, rngs)
        self.mlp_norm = Norm(config, rngs)
        self.mlp = MLP(config, rngs)

    def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segments_BT: jax.Array) -> jax.Array:
        if self.swin:
            h = x_BTD + self.attention_norm(self.attention(x_BTD, positions_BT, segments_BT))
            out = h + self.mlp_norm(self.mlp(h))
        else:
            h = x_BTD + self.attention(self.attention_norm(x_BTD), positions_BT, segments_BT)
            out = h + self.mlp(self.mlp_norm(h))
        return constrain(out, ACTIVATION)

    def cached(self, x_BTD: jax.Array, positions_BT: jax.Array, cache: LayerCache | StackedLayer
               ) -> tuple[jax.Array, LayerCache | StackedLayer]:
        if self.swin:
            attended, cache = self.attention.cached(x_BTD, positions_BT, cache)
            h = x_BTD + self.attention_norm(attended)
            out = h + self.mlp_norm(self.mlp(h))
        else:
            attended, cache = self.attention.cached(self.attention_norm(x_BTD), positions_BT, cache)
            h = x_BTD + attended
            out = h + self.mlp(self.mlp_norm(h))
        return constrain(out, ACTIVATION), cache


def stacked_blocks(config: DecoderConfig, rngs: nnx.Rngs) -> Block:
    """n_layers blocks as one Block whose parameters are stacked [L, ...] ("layers": replicated)."""
    @nnx.split_rngs(splits=config.n_layers)
    @nnx.vmap(in_axes=0, out_axes=0)
    def build(layer_rngs: nnx.Rngs) -> Block:
        return Block(config, layer_rngs)

    blocks = build(rngs)
    for _, variable in nnx.iter_graph(blocks):
        if isinstance(variable, nnx.Param):
            variable.set_metadata(logical_axes=("layers", *variable.get_metadata("logical_axes")))
    return blocks


class Decoder(nnx.Module):
    def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
        self.config = config
        init = truncated_normal(config.init_std)
        self.embed = param(rngs, init, (config.vocab_size, config.d_model), ("vocab", "embed"))
        self.positions = (param(rngs, truncated_normal(config.position_init_std), (config.max_seq_len, config.d_model),
                                ("position", "embed"))
                          if config.positions == "learned" else None)
        self.image_positions = (param(rngs, truncated_normal(config.position_init_std),
                                      (config.image_positions, config.d_model), ("position", "embed"))
                                if config.image_positions else None)
        features = config.image_code_features
        self.image_codes = (param(rngs, lambda key, shape: jnp.zeros(shape, jnp.float32),
                                  (config.image_codebook_size, features), (None, None)) if features else None)
        self.image_code_in = param(rngs, init, (features, config.d_model), (None, "embed")) if features else None
        self.image_code_out = param(rngs, init, (config.d_model, features), ("embed", None)) if features else None
        self.blocks = (stacked_blocks(config, rngs) if config.scan_layers
                       else nnx.List([Block(config, rngs) for _ in range(config.n_layers)]))
        self.final_norm = Norm(config, rngs)
        self.lm_head = (None if config.tie_embeddings
                        else param(rngs, init, (config.d_model, config.vocab_size), ("embed", "vocab")))

    def image_index(self, tokens_BT: jax.Array, segments_BT: jax.Array | None = None) -> jax.Array:
        """int32 [B, T]: each image token's place in its run of image tokens (from 0), -1 for
        every other token; a run ends at any other token and where a packed document ends."""
        is_image_BT = self._is_image(tokens_BT)
        after_image = jnp.pad(is_image_BT[:, :-1], ((0, 0), (1, 0)))
        if segments_BT is not None:
            after_image &= jnp.pad(segments_BT[:, :-1] == segments_BT[:, 1:], ((0, 0), (1, 0)))
        t_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
        run_start_BT = jax.lax.cummax(jnp.where(is_image_BT & ~after_image, t_BT, -1), axis=1)
        return jnp.where(is_image_BT, t_BT - run_start_BT, -1).astype(jnp.int32)

    def embed_tokens(self, tokens_BT: jax.Array, positions_BT: jax.Array,
                     image_index_BT: jax.Array | None = None) -> jax.Array:
        dtype = jnp.dtype(self.config.dtype)
        x = jnp.take(self.embed[...], tokens_BT, axis=0)
        if self.positions is not None:
            x = x + jnp.take(self.positions[...], positions_BT, axis=0)
        if self.image_positions is not None:
            index_BT = self.image_index(tokens_BT) if image_index_BT is None else image_index_BT
            table = self.image_positions[...]
            place_BTD = jnp.take(table, jnp.clip(index_BT, 0, table.shape[0] - 1), axis=0)
            x = x + jnp.where((index_BT >= 0)[..., None], place_BTD, 0.0)
        if self.image_codes is not None:
            x = x + dense(self._code_vectors(tokens_BT), self.image_code_in[...])
        return constrain(x.astype(dtype), ACTIVATION)

    def _codebook(self) -> jax.Array:
        """[K, F] the image tokenizer's codebook vectors: fixed, never trained."""
        return jax.lax.stop_gradient(self.image_codes[...])

    def _code_vectors(self, tokens_BT: jax.Array) -> jax.Array:
        """[B, T, F] each image token's codebook vector, zeros for every other token."""
        c = self.config
        code_BT = jnp.clip(tokens_BT - c.image_id_start, 0, c.image_codebook_size - 1)
        return jnp.where(self._is_image(tokens_BT)[..., None], jnp.take(self._codebook(), code_BT, axis=0), 0.0)

    def _is_image(self, tokens_BT: jax.Array) -> jax.Array:
        """bool [B, T]: the image token ids [image_id_start, image_id_end)."""
        return (tokens_BT >= self.config.image_id_start) & (tokens_BT < self.config.image_id_end)

    def logits(self, x_BTD: jax.Array) -> jax.Array:
        """float32 logits over the whole (padded) vocabulary."""
        x = self.final_norm(x_BTD)
        head = self.embed[...].T if self.lm_head is None else self.lm_head[...]
        if self.image_codes is None:
            return constrain(dense(x, head.astype(x.dtype), jnp.float32), ("batch", "length", "act_vocab"))
        c = self.config
        code_out_DF, codes_FK = self.image_code_out[...].astype(x.dtype), self._codebook().T.astype(x.dtype)
        vocab_pad = (c.image_id_start, head.shape[-1] - c.image_id_end)  # image codes -> the whole vocabulary
        d, f, k = code_out_DF.shape + codes_FK.shape[1:]
        if math.prod(x.shape[:-1]) * f * (d + k) > d * f * k:
            # many tokens (training, prefill): fold the code features into the head once, [D, K]
            head = head.astype(x.dtype) + jnp.pad(dense(code_out_DF, codes_FK), [(0, 0), vocab_pad])
            return constrain(dense(x, head, jnp.float32), ("batch", "length", "act_vocab"))
        logits = dense(x, head.astype(x.dtype), jnp.float32)
        image_logits = dense(dense(x, code_out_DF), codes_FK, jnp.float32)
        image_logits = jnp.pad(image_logits, [(0, 0)] * (logits.ndim - 1) + [vocab_pad])
        return constrain(logits + image_logits, ("batch", "length", "act_vocab"))

    def __call__(self, tokens_BT: jax.Array, positions_BT: jax.Array | None = None,
                 segments_BT: jax.Array | None = None) -> jax.Array:
        """Logits [B, T, V]. Packed rows give each document its own `segments` id and positions
        from 0; tokens attend only within their document, causally."""
        if positions_BT is None:
            positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
        if segments_BT is None:
            segments_BT = jnp.ones_like(tokens_BT)
        image_index = self.image_index(tokens_BT, segments_BT) if self.image_positions is not None else None
        x = self.embed_tokens(tokens_BT, positions_BT, image_index)
        if self.config.scan_layers:
            graphdef, stacked = nnx.split(self.blocks)

            def step(x_BTD, layer_state):
                return nnx.merge(graphdef, layer_state)(x_BTD, positions_BT, segments_BT), None
            if self.config.remat:
                step = jax.checkpoint(step, prevent_cse=False)  # inside a scan, CSE cannot undo the remat
            x, _ = jax.lax.scan(step, x, stacked)
        else:
            for block in self.blocks:
                if self.config.remat:
                    x = nnx.remat(lambda b, *a: b(*a))(block, x, positions_BT, segments_BT)
                else:
                    x = block(x, positions_BT, segments_BT)
        return self.logits(x)

    def init_cache(self, batch: int, slots: int) -> KVCache:
        """An empty cache of `slots` positions per row, in the compute dtype: one LayerCache per
        block, or with `scan_layers` one StackedCache."""
        c = self.config
        if slots > c.max_seq_len:
            raise ValueError(f"A cache of {slots} slots exceeds the context of {c.max_seq_len}.")
        layer = (batch, slots, c.num_kv_heads, c.head_size, jnp.dtype(c.dtype))
        if c.scan_layers:
            return StackedCache.zeros(c.n_layers, *layer)
        return tuple(LayerCache.zeros(*layer) for _ in range(c.n_layers))

    def cached(self, tokens_BT: jax.Array, positions_BT: jax.Array, cache: KVCache,
               image_index_BT: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
        """Final hidden states [B, T, D] of T new tokens per row at consecutive positions, reading
        and extending the cache (prefill: the whole prompt at positions 0..T-1; decode: T = 1).
        `logits` turns the hidden states wanted into logits. With image positions, a decode step
        names each new token's place in its image (`image_index`; -1 for no image token): the
        new tokens alone do not show where their image began. A prefill computes it."""
        x = self.embed_tokens(tokens_BT, positions_BT, image_index_BT)
        if self.config.scan_layers:
            graphdef, stacked = nnx.split(self.blocks)

            def step(carry, layer):
                x_BTD, stack = carry
                layer_state, index = layer
                x_BTD, written = nnx.merge(graphdef, layer_state).cached(x_BTD, positions_BT, stack.layer(index))
                return (x_BTD, written.stack), None
            (x, cache), _ = jax.lax.scan(step, (x, cache), (stacked, jnp.arange(self.config.n_layers)))
            return x, cache
        layers = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block.cached(x, positions_BT, layer_cache)
            layers.append(layer_cache)
        return x, tuple(layers)
