"""The tokenizer recipe (an ml_collections ConfigDict, see tokenizers/vqgan_shapes.py): its
sections checked, and its model section as a VQGANConfig."""

from __future__ import annotations

import dataclasses

import ml_collections

from cm3jax.errors import UserError
from cm3jax.image_tokenizer.model import VQGANConfig

SECTIONS = ("model", "training", "data")


def vqgan_config(config: ml_collections.ConfigDict) -> VQGANConfig:
    """The VQGANConfig of a recipe's `model` section (lists become tuples)."""
    fields = {f.name for f in dataclasses.fields(VQGANConfig)}
    model = dict(config.model)
    unknown = sorted(set(model) - fields)
    if unknown:
        raise UserError(f"Unknown key(s) {', '.join(unknown)} in config.model; VQGANConfig takes "
                        f"{', '.join(sorted(fields))}.")
    return VQGANConfig(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in model.items()})


def check_recipe(config: ml_collections.ConfigDict) -> None:
    missing = [s for s in SECTIONS if s not in config]
    if missing:
        raise UserError(f"The tokenizer config lacks the section(s) {', '.join(missing)}; start from "
                        f"tokenizers/vqgan_shapes.py.")
    if config.data.resolution != config.model.resolution:
        raise UserError(f"config.data.resolution={config.data.resolution} differs from "
                        f"config.model.resolution={config.model.resolution}; set both to the same side.")
    vqgan_config(config)
