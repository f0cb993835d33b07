"""A tiny Shapes world and text tokenizer shared by the retrieval tests (made once per worker), and
untrained CLIP checkpoints written in the layout clip_train writes."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from cm3jax.checkpoints import Checkpoints
from cm3jax.config import load_config, to_json_dict
from cm3jax.retrieval.clip import CLIP
from cm3jax.retrieval.clip_checkpoints import meta_record, tokenizer_path
from cm3jax.retrieval.clip_train import clip_config
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.shapes.dataset import WorldSpec, make
from cm3jax.text_tokenizer import TextTokenizer, train_text_tokenizer


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("retrieval_data") / "shapes")
    make(directory, WorldSpec(num_train=64, num_eval=32, num_novel=0, num_emblems_unseen=0, num_memory=48),
         workers=1, progress=False)
    return directory


@pytest.fixture(scope="session")
def text_model(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("retrieval_text") / "text.model")
    train_text_tokenizer(shapes_corpus(100), 400).save(path)
    return path


RECIPE = str(Path(__file__).resolve().parents[2] / "retrieval" / "clip_shapes.py")


def tiny_overrides(shapes_dir: str, text_model: str) -> list[str]:
    return [f"--config.data.shapes_dir={shapes_dir}", f"--config.data.text_tokenizer={text_model}"]


@pytest.fixture(scope="session")
def tiny_clip_run(tmp_path_factory, shapes_dir, text_model) -> tuple[str, int]:
    """A finished tiny CLIP run made through the command line: (workdir, exit code)."""
    from cm3jax.cli import main
    workdir = str(tmp_path_factory.mktemp("tiny_clip") / "run")
    code = main(["retrieval", "clip", "--config", f"{RECIPE}:tiny", "--workdir", workdir,
                 *tiny_overrides(shapes_dir, text_model)])
    return workdir, code


def save_untrained_clip(workdir: str, text_model: str, step: int = 2, seed: int = 0) -> CLIP:
    """Writes a freshly initialised tiny CLIP and its text tokenizer as a CLIP run at `step`; returns it."""
    tokenizer = TextTokenizer.load(text_model)
    recipe = load_config(f"{RECIPE}:tiny")
    config = clip_config(recipe, tokenizer)
    model = CLIP(config, nnx.Rngs(seed))
    os.makedirs(workdir, exist_ok=True)
    shutil.copy(text_model, tokenizer_path(workdir))
    with Checkpoints(workdir) as store:
        store.save(step, {"params": nnx.to_pure_dict(nnx.state(model)), "opt_state": {"count": np.zeros((), np.int32)},
                          "meta": meta_record(to_json_dict(recipe), config, tokenizer)})
    return model
