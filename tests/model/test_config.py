import dataclasses

import jax
import pytest
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder

BASE = dict(vocab_size=96, d_model=32, n_layers=2, n_heads=4, mlp_hidden=48, max_seq_len=40)
SWITCHES = {
    "cm3leon": {},
    "rmsnorm, swiglu, rope": dict(norm="rmsnorm", mlp="swiglu", positions="rope"),
    "qk_norm, grouped kv heads": dict(qk_norm=True, n_kv_heads=2, positions="rope"),
    "head_dim": dict(head_dim=16),
    "tied": dict(tie_embeddings=True),
    "scanned": dict(norm="rmsnorm", qk_norm=True, n_kv_heads=2, scan_layers=True),
    "image positions": dict(image_positions=16, image_id_start=64, image_id_end=96),
    "image code features": dict(image_code_features=8, image_id_start=64, image_id_end=96),
    "image pixel features": dict(image_code_features=64, image_code_source="pixels", image_id_start=64,
                                 image_id_end=96),
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_param_count_equals_the_built_models(name):
    config = DecoderConfig(**BASE, **SWITCHES[name])
    model = Decoder(config, nnx.Rngs(0))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == config.param_count()


@pytest.mark.parametrize("changes, message", [
    (dict(norm="batchnorm"), "model.norm must be one of layernorm, rmsnorm, got 'batchnorm'"),
    (dict(mlp="relu"), "model.mlp must be one of gelu, swiglu"),
    (dict(positions="alibi"), "model.positions must be one of learned, rope"),
    (dict(image_positions=16), "with image ids \\[0, 0\\) set from the vocabulary"),
    (dict(image_code_features=8), "width of the image tokenizer's code vectors, with image ids \\[0, 0\\)"),
    (dict(image_code_source="codes"), "model.image_code_source must be one of codebook, pixels, factors, got 'codes'"),
    (dict(d_model=30), "d_model 30 is not divisible by n_heads 4; set head_dim"),
    (dict(n_kv_heads=3), "n_heads 4 must be a multiple of n_kv_heads 3"),
    (dict(positions="rope", head_dim=7), "RoPE needs an even head size, got 7"),
])
def test_invalid_configs_name_the_problem(changes, message):
    with pytest.raises(UserError, match=message):
        DecoderConfig(**{**BASE, **changes})


def test_from_dict_suggests_the_key_meant():
    with pytest.raises(UserError, match=r"scan_layer \(did you mean scan_layers\b"):
        DecoderConfig.from_dict({**BASE, "scan_layer": True})
    assert DecoderConfig.from_dict({**BASE, "scan_layers": True}) == dataclasses.replace(
        DecoderConfig(**BASE), scan_layers=True)
