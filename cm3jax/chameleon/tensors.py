"""Which Hugging Face Chameleon tensor is which decoder parameter, and how its axes map.

HF's linear weights are [out, in]; ours are [in, out] with heads split out:
    q_proj [H*E, D] -> wq [D, H, E]      o_proj [D, H*E] -> wo [H, E, D]
    gate_proj / up_proj [F, D] -> wg / wi [D, F]      down_proj [D, F] -> wo [F, D]
    lm_head [V, D] -> lm_head [D, V]     embed_tokens, norms, q_norm / k_norm [heads, E]: as they are.
Both sides rotate queries and keys rotate-half style (HF's converter already permuted Meta's
interleaved q/k rows), after the per-head QK-norm, so no row is reordered here.
With `scan_layers` a block parameter is stacked [L, ...]; `layer` says which slice a tensor is.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cm3jax.model.config import DecoderConfig


@dataclasses.dataclass(frozen=True)
class Tensor:
    hf_name: str
    path: tuple  # the parameter's flat NNX path in Decoder
    layer: int | None  # the slice of a stacked [L, ...] parameter (scan_layers), else None
    hf_shape: tuple[int, ...]
    ours_shape: tuple[int, ...]  # of one layer's slice
    transpose: bool  # a linear layer's [out, in] weight: transposed, then its axes split (or merged)

    def to_ours(self, hf: np.ndarray) -> np.ndarray:
        """float32 in our layout, cast and transposed in one pass (one copy of the tensor)."""
        if not self.transpose:
            return np.asarray(hf, np.float32).reshape(self.ours_shape)
        out = np.empty(hf.shape[::-1], np.float32)
        out[...] = hf.T
        return out.reshape(self.ours_shape)

    def to_hf(self, ours: np.ndarray) -> np.ndarray:
        if not self.transpose:
            return np.ascontiguousarray(ours.reshape(self.hf_shape))
        return np.ascontiguousarray(ours.reshape(self.hf_shape[::-1]).T)


def plan(config: DecoderConfig) -> list[Tensor]:
    """Every tensor of a Hugging Face ChameleonForConditionalGeneration holding `config`'s decoder
    (the VQ-VAE's `model.vqmodel.*` aside), in file order."""
    d, h, k, e, f, v = (config.d_model, config.n_heads, config.num_kv_heads, config.head_size, config.mlp_hidden,
                        config.vocab_size)
    out = [Tensor("model.embed_tokens.weight", ("embed",), None, (v, d), (v, d), False)]
    for i in range(config.n_layers):
        hf = f"model.layers.{i}."
        block, layer = (("blocks",), i) if config.scan_layers else (("blocks", i), None)

        def add(name, path, hf_shape, ours_shape, transpose):
            out.append(Tensor(hf + name, block + path, layer, hf_shape, ours_shape, transpose))
        add("input_layernorm.weight", ("attention_norm", "scale"), (d,), (d,), False)
        add("self_attn.q_proj.weight", ("attention", "wq"), (h * e, d), (d, h, e), True)
        add("self_attn.k_proj.weight", ("attention", "wk"), (k * e, d), (d, k, e), True)
        add("self_attn.v_proj.weight", ("attention", "wv"), (k * e, d), (d, k, e), True)
        add("self_attn.o_proj.weight", ("attention", "wo"), (d, h * e), (h, e, d), True)
        add("self_attn.q_norm.weight", ("attention", "q_norm", "scale"), (h, e), (h, e), False)
        add("self_attn.q_norm.bias", ("attention", "q_norm", "bias"), (h, e), (h, e), False)
        add("self_attn.k_norm.weight", ("attention", "k_norm", "scale"), (k, e), (k, e), False)
        add("self_attn.k_norm.bias", ("attention", "k_norm", "bias"), (k, e), (k, e), False)
        add("post_attention_layernorm.weight", ("mlp_norm", "scale"), (d,), (d,), False)
        add("mlp.gate_proj.weight", ("mlp", "wg"), (f, d), (d, f), True)
        add("mlp.up_proj.weight", ("mlp", "wi"), (f, d), (d, f), True)
        add("mlp.down_proj.weight", ("mlp", "wo"), (d, f), (f, d), True)
    out.append(Tensor("model.norm.weight", ("final_norm", "scale"), None, (d,), (d,), False))
    if not config.tie_embeddings:
        out.append(Tensor("lm_head.weight", ("lm_head",), None, (v, d), (d, v), True))
    return out
