"""Shared builders for the retrieval tests: a tiny Shapes world, a text tokenizer trained on its
captions, a codec with a 2 x 2 code grid, and stand-in image codes computed from the pixels
(block means quantised to 16 levels), so equal images get equal codes as with a real tokenizer."""

from __future__ import annotations

import numpy as np

from cm3jax.documents import DocumentCodec
from cm3jax.shapes.dataset import WorldSpec, data_source, make
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.text_tokenizer import train_text_tokenizer
from cm3jax.vocab import MultimodalVocab

GRID = (2, 2)
CODEBOOK = 16
WORLD = WorldSpec(num_train=0, num_eval=0, num_novel=0, num_emblems_unseen=0, num_memory=48)
TOY = {"factory": "tests.retrieval.toy_embedder:ToyEmbedder", "args": [32, 0]}


def make_world(directory: str) -> str:
    make(directory, WORLD, workers=1, progress=False)
    return directory


def make_codec() -> DocumentCodec:
    tokenizer = train_text_tokenizer(shapes_corpus(num_scenes=100), 320)
    vocab = MultimodalVocab(tokenizer.vocab_size, CODEBOOK, GRID[0] * GRID[1], tokenizer.fingerprint)
    return DocumentCodec(vocab, tokenizer, GRID)


def fake_codes_of(image_RR3: np.ndarray) -> np.ndarray:
    r = image_RR3.shape[0]
    blocks = image_RR3.reshape(GRID[0], r // GRID[0], GRID[1], r // GRID[1], 3).mean(axis=(1, 3, 4))
    return np.minimum(blocks / 256 * CODEBOOK, CODEBOOK - 1).astype(np.int32)


def fake_codes(shapes_dir: str) -> list[dict]:
    """What `read_codes(codes_dir, "memory")` would give: {"id", "codes"} per memory scene."""
    source = data_source(shapes_dir, "memory")
    return [{"id": source[i]["id"], "codes": fake_codes_of(source[i]["image"])} for i in range(len(source))]
