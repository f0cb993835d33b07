"""Hugging Face `ChameleonConfig` (config.json) <-> the decoder's switches (DecoderConfig).

Hugging Face's Chameleon always normalises queries and keys (a LayerNorm over each head with a
per-head affine, eps 1e-5), has no biases, a SwiGLU MLP, rotate-half RoPE, RMSNorm and head size
hidden_size / heads; `swin_norm` moves each block's norms after attention and MLP (34B).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig

HF_QK_NORM_EPS = 1e-5  # ChameleonLayerNorm hard-codes it, whatever rms_norm_eps is


def _rope_theta(hf: Mapping[str, Any], where: str) -> float:
    """rope_parameters (transformers 5) or rope_theta / rope_scaling (transformers 4)."""
    rope = hf.get("rope_parameters") or {}
    kind = rope.get("rope_type", "default")
    scaling = hf.get("rope_scaling")
    if kind != "default" or scaling:
        raise UserError(f"{where}: RoPE scaling ({scaling or kind}) is not supported; only the plain "
                        f"rotary embedding of the released Chameleon checkpoints is.")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))


def decoder_fields(hf: Mapping[str, Any], where: str = "config.json") -> dict[str, Any]:
    """The DecoderConfig fields of a Hugging Face Chameleon config (a config.json as a dict)."""
    if hf.get("model_type") not in (None, "chameleon"):
        raise UserError(f"{where}: model_type is {hf.get('model_type')!r}, not 'chameleon'; give the config.json "
                        f"of a Chameleon (or Anole) checkpoint.")
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if k not in hf]
    if missing:
        raise UserError(f"{where} has no {', '.join(missing)}; is it a Chameleon config.json?")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise UserError(f"{where}: {flag} is true; cm3jax's decoder has no biases (no released Chameleon "
                            f"checkpoint uses them).")
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{where}: hidden_act is {hf['hidden_act']!r}; Chameleon's MLP is SwiGLU (silu).")
    d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    if d % heads:
        raise UserError(f"{where}: hidden_size {d} is not divisible by num_attention_heads {heads}.")
    kv = hf.get("num_key_value_heads") or heads
    return dict(vocab_size=int(hf["vocab_size"]), d_model=d, n_layers=int(hf["num_hidden_layers"]), n_heads=heads,
                n_kv_heads=int(kv), mlp_hidden=int(hf["intermediate_size"]), norm="rmsnorm",
                norm_eps=float(hf.get("rms_norm_eps", 1e-5)), mlp="swiglu", positions="rope",
                rope_theta=_rope_theta(hf, where), max_seq_len=int(hf.get("max_position_embeddings", 4096)),
                qk_norm=True, qk_norm_eps=HF_QK_NORM_EPS, swin_norm=bool(hf.get("swin_norm", False)),
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def check_exportable(config: DecoderConfig) -> None:
    """Refuses a decoder that Hugging Face's Chameleon cannot express, naming each switch."""
    wanted = dict(norm="rmsnorm", mlp="swiglu", positions="rope", qk_norm=True, image_positions=0,
                  image_code_features=0)
    wrong = [f"model.{k} is {getattr(config, k)!r} (Chameleon: {v!r})" for k, v in wanted.items()
             if getattr(config, k) != v]
    if config.head_size * config.n_heads != config.d_model:
        wrong.append(f"head_dim {config.head_size} x {config.n_heads} heads is not d_model {config.d_model}")
    if config.head_norm_eps != HF_QK_NORM_EPS:
        wrong.append(f"the QK-norm eps is {config.head_norm_eps} (Chameleon: {HF_QK_NORM_EPS})")
    if wrong:
        raise UserError("This decoder cannot be written as a Hugging Face Chameleon checkpoint: " + "; ".join(wrong) +
                        ". Train with the Chameleon switches (see experiments/chameleon_7b.py).")


def hf_fields(config: DecoderConfig, vocabulary_map: Mapping[str, int], special_ids: Mapping[str, int],
              vq_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """config.json of a Hugging Face Chameleon checkpoint holding `config`'s decoder."""
    check_exportable(config)
    fields = dict(model_type="chameleon", architectures=["ChameleonForConditionalGeneration"],
                  vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.mlp_hidden,
                  num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
                  num_key_value_heads=config.num_kv_heads, hidden_act="silu",
                  max_position_embeddings=config.max_seq_len, rms_norm_eps=config.norm_eps,
                  rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
                  swin_norm=config.swin_norm, tie_word_embeddings=config.tie_embeddings, attention_bias=False,
                  mlp_bias=False, model_parallel_size=1, vocabulary_map=dict(vocabulary_map),
                  torch_dtype="float32", **special_ids)
    if vq_config is not None:
        fields["vq_config"] = dict(vq_config)
    return fields


def same_decoder(a: DecoderConfig, b: DecoderConfig) -> list[str]:
    """The fields in which two decoder configs differ (the compute-only ones aside)."""
    ignore = {"dtype", "remat", "scan_layers", "init_std", "position_init_std", "zero_init_outputs"}
    return [f.name for f in dataclasses.fields(DecoderConfig)
            if f.name not in ignore and getattr(a, f.name) != getattr(b, f.name)]
