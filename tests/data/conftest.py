"""Tokenizers on disk for the data tests: a tiny untrained VQ-GAN checkpoint and a text tokenizer
trained on a few Shapes scenes (made once per session)."""

import pytest

from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.text_tokenizer import train_text_tokenizer
from tests.image_tokenizer.conftest import save_tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer_files(tmp_path_factory):
    """(text tokenizer path, image tokenizer workdir, the VQGAN saved there, the text tokenizer)."""
    directory = tmp_path_factory.mktemp("data_tokenizers")
    text = train_text_tokenizer(shapes_corpus(40), 320)
    text.save(str(directory / "text.model"))
    model = save_tiny_tokenizer(str(directory / "vqgan"))
    return str(directory / "text.model"), str(directory / "vqgan"), model, text
