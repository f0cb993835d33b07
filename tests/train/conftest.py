"""A tiny trained Shapes world (dataset, text tokenizer, VQ-GAN, codes) for the training-loop tests,
made once per session, and the tiny decoder config that trains on it."""

from pathlib import Path

import pytest

from cm3jax.config import load_config
from cm3jax.image_tokenizer.checkpoints import load_tokenizer
from cm3jax.image_tokenizer.pretokenize import pretokenize
from cm3jax.image_tokenizer.train import train as train_image_tokenizer
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.shapes.dataset import WorldSpec, make
from cm3jax.text_tokenizer import train_text_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The world's directory: shapes/, text.model, vqgan/ and codes/."""
    tmp = tmp_path_factory.mktemp("world")
    make(str(tmp / "shapes"), WorldSpec(num_train=48, num_eval=16, num_novel=0, num_emblems_unseen=0, num_memory=0),
         workers=1, progress=False)
    train_text_tokenizer(shapes_corpus(num_scenes=300), 400).save(str(tmp / "text.model"))
    train_image_tokenizer(load_config(f"{ROOT}/tokenizers/vqgan_shapes.py:tiny"), str(tmp / "vqgan"), progress=False)
    image_model, _ = load_tokenizer(str(tmp / "vqgan"))
    pretokenize(str(tmp / "shapes"), str(tmp / "codes"), image_model, batch_size=16, progress=False)
    return tmp


def tiny_overrides(world, **train_overrides):
    overrides = [f"--config.data.{k}={world / v}" for k, v in
                 (("shapes_dir", "shapes"), ("codes_dir", "codes"), ("text_tokenizer", "text.model"),
                  ("image_tokenizer", "vqgan"))]
    overrides += ["--config.model.d_model=32", "--config.model.n_layers=2", "--config.model.n_heads=2",
                  "--config.model.mlp_hidden=64"]
    return overrides + [f"--config.train.{k}={v}" for k, v in train_overrides.items()]


def tiny_config(world, **train_overrides):
    return load_config(f"{ROOT}/experiments/shapes_tiny.py:test", tiny_overrides(world, **train_overrides))
