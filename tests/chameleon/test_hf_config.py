"""Hugging Face Chameleon config.json <-> the decoder's switches, and what is refused."""

import dataclasses

import pytest

from cm3jax.chameleon.hf_config import check_exportable, decoder_fields, hf_fields
from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig

BASE = dict(model_type="chameleon", vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4)


def test_the_switches_of_a_released_config():
    config = DecoderConfig(**decoder_fields(dict(BASE, num_key_value_heads=2, swin_norm=True, rms_norm_eps=1e-6,
                                                 rope_theta=500.0, max_position_embeddings=256)))
    assert (config.norm, config.mlp, config.positions, config.qk_norm, config.swin_norm) == (
        "rmsnorm", "swiglu", "rope", True, True)
    assert (config.num_kv_heads, config.rope_theta, config.norm_eps, config.head_norm_eps, config.max_seq_len) == (
        2, 500.0, 1e-6, 1e-5, 256)


def test_config_json_round_trips_through_the_decoder_config():
    config = DecoderConfig(**decoder_fields(dict(BASE, num_key_value_heads=1, tie_word_embeddings=True)))
    back = DecoderConfig(**decoder_fields(hf_fields(config, {"<s>": 0}, {"bos_token_id": 0})))
    assert back == config


@pytest.mark.parametrize("change, message", [
    (dict(model_type="llama"), "not 'chameleon'"),
    (dict(attention_bias=True), "attention_bias is true"),
    (dict(hidden_act="gelu"), "SwiGLU"),
    (dict(rope_scaling={"type": "linear", "factor": 2.0}), "RoPE scaling"),
    (dict(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4}), "RoPE scaling"),
    (dict(hidden_size=30), "not divisible"),
    ({"intermediate_size": None}, "no intermediate_size"),
])
def test_configs_cm3jax_cannot_run_are_refused_by_name(change, message):
    hf = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(UserError, match=message):
        decoder_fields(hf)


def test_export_names_every_switch_chameleon_lacks():
    config = DecoderConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, mlp_hidden=48)
    with pytest.raises(UserError) as error:
        check_exportable(config)
    for switch in ("model.norm is 'layernorm'", "model.mlp is 'gelu'", "model.positions is 'learned'",
                   "model.qk_norm is False"):
        assert switch in str(error.value)
    chameleon = DecoderConfig(**decoder_fields(BASE))
    check_exportable(chameleon)
    with pytest.raises(UserError, match="QK-norm eps"):
        check_exportable(dataclasses.replace(chameleon, qk_norm_eps=1e-6))
