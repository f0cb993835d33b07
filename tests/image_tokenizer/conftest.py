"""A tiny VQ-GAN tokenizer checkpoint, untrained (made in seconds), for tests that need one on disk."""

from pathlib import Path

import pytest
from flax import nnx

from cm3jax.checkpoints import Checkpoints
from cm3jax.config import load_config
from cm3jax.image_tokenizer import checkpoints
from cm3jax.image_tokenizer.model import VQGAN
from cm3jax.image_tokenizer.recipe import vqgan_config

RECIPE = str(Path(__file__).resolve().parents[2] / "tokenizers" / "vqgan_shapes.py")
STEP = 3


def tiny_config(*overrides: str):
    return load_config(f"{RECIPE}:tiny", overrides)


def save_tiny_tokenizer(workdir: str, step: int = STEP, seed: int = 0) -> VQGAN:
    """Writes a freshly initialised tiny VQGAN as a tokenizer run's checkpoint at `step`; returns it."""
    config = tiny_config()
    model = VQGAN(vqgan_config(config), nnx.Rngs(seed))
    state = {"params": nnx.to_pure_dict(nnx.state(model))}
    with Checkpoints(workdir) as store:
        checkpoints.save(store, step, state, {"params": {}}, config)
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> tuple[str, VQGAN]:
    workdir = str(tmp_path_factory.mktemp("tiny_tokenizer"))
    return workdir, save_tiny_tokenizer(workdir)
