import json
import os

import numpy as np
import pytest

from cm3jax.config import load_config
from cm3jax.errors import UserError
from cm3jax.retrieval.clip import document_keys
from cm3jax.retrieval.clip_data import load_pairs
from cm3jax.retrieval.clip_train import EVAL_JSON, evaluate
from cm3jax.retrieval.embedder import ClipEmbedder
from tests.retrieval.conftest import RECIPE

TEXTS = ["a large red circle in the top left", "the flag of jormark", "", "top: a small blue cross",
         "there is a big green square at the bottom right on a white background"]


@pytest.fixture(scope="module")
def embedder(tiny_clip_run):
    return ClipEmbedder.load(tiny_clip_run[0])


def _unit_rows(x):
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)


def test_loaded_checkpoint_reproduces_the_runs_eval(tiny_clip_run, embedder, shapes_dir):
    with open(os.path.join(tiny_clip_run[0], EVAL_JSON)) as f:
        recorded = json.load(f)
    again = evaluate(embedder, load_pairs(shapes_dir, ("eval",), progress=False),
                     load_pairs(shapes_dir, ("memory",), progress=False),
                     load_config(f"{RECIPE}:tiny").eval.emblem_templates)
    for key, value in again.items():
        assert recorded[key] == pytest.approx(value), key


def test_texts_embed_alike_alone_or_in_batches_of_any_size(embedder):
    assert embedder.dim == embedder.config.projection_dim == 32
    together = embedder.embed_texts(TEXTS)
    assert together.shape == (5, 32) and together.dtype == np.float32
    _unit_rows(together)
    alone = np.concatenate([embedder.embed_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(alone, together, atol=1e-5)
    small_batches = ClipEmbedder(embedder.model, embedder.tokenizer, batch_size=2, progress=False)
    np.testing.assert_allclose(small_batches.embed_texts(TEXTS), together, atol=1e-5)
    assert embedder.embed_texts([]).shape == (0, 32)
    assert not np.allclose(together[0], together[1], atol=1e-3)


def test_images_embed_from_arrays_or_lists_of_any_size(embedder, shapes_dir):
    images = load_pairs(shapes_dir, ("eval",), progress=False).images[:5]
    from_array = embedder.embed_images(images)
    assert from_array.shape == (5, 32) and from_array.dtype == np.float32
    _unit_rows(from_array)
    np.testing.assert_allclose(embedder.embed_images(list(images)), from_array, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_images(images[2:3]), from_array[2:3], atol=1e-5)
    odd = [np.zeros((20, 45, 3), np.uint8), np.full((40, 40), 128, np.uint8), np.zeros((33, 33, 4), np.uint8)]
    _unit_rows(embedder.embed_images(odd))
    with pytest.raises(UserError, match=r"\[N, H, W, 3\]"):
        embedder.embed_images(images[0])


def test_document_keys_by_modality(embedder, shapes_dir):
    images = load_pairs(shapes_dir, ("eval",), progress=False).images[:4]
    texts = TEXTS[:4]
    keys = embedder.embed_documents([texts[0], None, texts[2], texts[3]], [images[0], images[1], None, images[3]])
    text_emb, image_emb = embedder.embed_texts(texts), embedder.embed_images(images)
    np.testing.assert_allclose(keys[0], document_keys(text_emb[:1], image_emb[:1])[0], atol=1e-5)
    np.testing.assert_allclose(keys[1], image_emb[1], atol=1e-5)
    np.testing.assert_allclose(keys[2], text_emb[2], atol=1e-5)
    np.testing.assert_allclose(keys[3], (text_emb[3] + image_emb[3]) / np.linalg.norm(text_emb[3] + image_emb[3]),
                               atol=1e-5)
    _unit_rows(keys)
    np.testing.assert_allclose(embedder.embed_documents(texts, images), document_keys(text_emb, image_emb), atol=1e-5)
    with pytest.raises(UserError, match="neither text nor image"):
        embedder.embed_documents(["a red circle", None], [None, None])
    with pytest.raises(UserError, match="2 texts but 1 images"):
        embedder.embed_documents(["a", "b"], [None])
