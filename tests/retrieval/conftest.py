"""A tiny Shapes world and text tokenizer shared by the retrieval tests (made once per worker)."""

from pathlib import Path

import pytest

from cm3jax.shapes.dataset import WorldSpec, make
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.text_tokenizer import train_text_tokenizer


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
