"""The tokenizer recipe: its model section becomes a VQGANConfig (lists as tuples, unknown keys
refused by name), and check_recipe refuses missing sections and mismatched resolutions."""

import dataclasses

import ml_collections
import pytest

from cm3jax.errors import UserError
from cm3jax.image_tokenizer.model import VQGANConfig
from cm3jax.image_tokenizer.recipe import SECTIONS, check_recipe, vqgan_config
from tests.image_tokenizer.conftest import tiny_config


def test_the_model_section_becomes_a_vqgan_config_with_tuples():
    config = tiny_config()
    config.model.channel_multipliers = [1, 2, 2]
    config.model.attn_resolutions = []
    model = vqgan_config(config)
    assert isinstance(model, VQGANConfig)
    assert model.channel_multipliers == (1, 2, 2) and model.attn_resolutions == ()
    assert model.codebook_size == 32 and model.resolution == 32
    assert {k: getattr(model, k) for k in config.model} == {
        k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in config.model.items()}


def test_unknown_model_keys_are_named():
    config = tiny_config()
    with config.unlocked():
        config.model.codebok_size = 8
        config.model.depth = 3
    fields = ", ".join(sorted(f.name for f in dataclasses.fields(VQGANConfig)))
    with pytest.raises(UserError, match=f"Unknown key\\(s\\) codebok_size, depth in config.model; VQGANConfig takes "
                                        f"{fields}"):
        vqgan_config(config)


def test_check_recipe_accepts_the_shipped_recipe():
    assert SECTIONS == ("model", "training", "data")
    assert check_recipe(tiny_config()) is None


@pytest.mark.parametrize("dropped", [("data",), ("model", "training")])
def test_check_recipe_refuses_missing_sections(dropped):
    config = tiny_config()
    kept = ml_collections.ConfigDict({k: v for k, v in config.items() if k not in dropped})
    with pytest.raises(UserError, match=f"lacks the section\\(s\\) {', '.join(dropped)}; start from "
                                        "tokenizers/vqgan_shapes.py"):
        check_recipe(kept)


def test_check_recipe_refuses_a_resolution_mismatch_and_unknown_keys():
    config = tiny_config("--config.data.resolution=64")
    with pytest.raises(UserError, match="config.data.resolution=64 differs from config.model.resolution=32"):
        check_recipe(config)
    config = tiny_config()
    with config.unlocked():
        config.model.extra = 1
    with pytest.raises(UserError, match="Unknown key\\(s\\) extra"):
        check_recipe(config)
