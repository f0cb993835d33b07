"""Retriever over an exact index of a toy Shapes bank: a text query gets its nearest documents
first, the selection heuristics drop near copies and keep at most k, for_prompt gives the bank's
own token ids (and refuses another vocabulary), and tiles lays out the query and its documents.
clip_image_scorer scores with an untrained tiny CLIP: the cosines, not their quality."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from cm3jax.errors import UserError
from cm3jax.retrieval.bank import TEXT, ShapesBankOptions, build_shapes_bank
from cm3jax.retrieval.embedder import ClipEmbedder
from cm3jax.retrieval.retriever import Retriever, clip_image_scorer
from cm3jax.retrieval.shapes_memory import make_index
from cm3jax.shapes.render import render_many
from cm3jax.shapes.world import sample_split
from tests.retrieval.bank_fixtures import TOY, fake_codes, make_codec, make_world
from tests.retrieval.conftest import save_untrained_clip
from tests.retrieval.toy_embedder import ToyEmbedder


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    root = tmp_path_factory.mktemp("retriever")
    world = make_world(str(root / "shapes"))
    bank = build_shapes_bank(world, fake_codes(world), make_codec(), ToyEmbedder(), embedder_record=TOY,
                             options=ShapesBankOptions(seed=3), progress=False)
    bank.save(str(root / "bank"))
    make_index(str(root / "bank"), str(root / "index"), backend="exact")
    return Retriever.load(str(root / "index"))


def _text_row(retriever, skip=0):
    return [r for r in range(len(retriever.bank)) if retriever.bank.texts[r]][skip]


def test_load_brings_the_index_its_bank_and_embedder(retriever):
    assert retriever.index.backend == "exact" and retriever.index.size == len(retriever.bank) == 48
    assert isinstance(retriever.embedder, ToyEmbedder)
    assert retriever.image_resolution == 32


def test_a_text_query_gets_the_nearest_documents_first(retriever):
    row = _text_row(retriever)
    text = retriever.bank.texts[row]
    hits = retriever.query(text, None, k=5)
    assert len(hits) == 5
    query = ToyEmbedder().embed_documents([text], [None])[0]
    expected = np.sort(retriever.bank.keys_ND @ query)[::-1][:5]
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)
    assert hits[0].row == row


def test_heuristics_drop_near_copies_and_keep_at_most_k(retriever):
    bank = retriever.bank
    for skip in range(6):
        row = _text_row(retriever, skip)
        text, image = bank.texts[row], bank.image(row)
        plain = retriever.query(text, image, k=10)
        assert plain[0].row == row and plain[0].score > 0.99, "the plain query finds the copy"
        chosen = retriever.query(text, image, k=3, heuristics=True)
        assert 1 <= len(chosen) <= 3
        assert row not in [h.row for h in chosen]
        assert all(h.score <= 0.9 for h in chosen), "no near copy of the query"
        assert len({bank.content_digest(h.row) for h in chosen}) == len(chosen), "no duplicates"


def test_for_prompt_gives_the_banks_token_ids(retriever):
    text = retriever.bank.texts[_text_row(retriever)]
    tokens, records = retriever.for_prompt(text, k=2, vocab=retriever.bank.vocab)
    assert len(tokens) == len(records) == 2
    for ids, record in zip(tokens, records):
        row = retriever.bank.row_of(record["id"])
        np.testing.assert_array_equal(ids, retriever.bank.tokens(row))
        assert record["kind"] == retriever.bank.kind(row) and record["text"] == retriever.bank.texts[row]
    assert records[0]["text"] == text, "the closest match is kept for a prompt"
    assert records[0]["score"] >= records[1]["score"]


def test_for_prompt_refuses_another_vocabulary(retriever):
    other = dataclasses.replace(retriever.bank.vocab, image_codebook_size=retriever.bank.vocab.image_codebook_size * 2)
    with pytest.raises(UserError, match="memory bank of .*index"):
        retriever.for_prompt("a red circle", k=2, vocab=other)


def test_tiles_show_the_query_and_each_document(retriever):
    text = retriever.bank.texts[_text_row(retriever)]
    hits = retriever.query(text, None, k=6)
    tiles, captions = retriever.tiles("a query", None, hits)
    assert tiles.shape == (1 + len(hits), 32, 32, 3) and tiles.dtype == np.uint8
    assert len(captions) == 1 + len(hits) and captions[0] == "query: a query"
    assert (tiles[0] == 255).all(), "no query image: a white tile"
    for tile, caption, hit in zip(tiles[1:], captions[1:], hits):
        bank = retriever.bank
        assert caption == f"{hit.score:.3f} {bank.ids[hit.row]}: {bank.texts[hit.row] or '(image)'}"
        if bank.kind(hit.row) == TEXT:
            assert (tile == 255).all()
        else:
            np.testing.assert_array_equal(tile, bank.image(hit.row))
    image = np.zeros((32, 32, 3), np.uint8)
    tiles, captions = retriever.tiles(None, image, hits[:1])
    assert tiles.shape == (2, 32, 32, 3) and (tiles[0] == 0).all() and captions[0] == "query: (image)"


def test_a_query_image_file_is_fitted_to_the_banks_images(retriever, tmp_path):
    path = str(tmp_path / "query.png")
    Image.new("RGB", (64, 48), (200, 10, 10)).save(path)
    image = retriever.load_query_image(path)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert tuple(image[16, 16]) == (200, 10, 10)
    hits = retriever.query(None, image, k=3)
    assert len(hits) == 3 and [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)


def test_clip_image_scorer_gives_each_image_its_cosine_with_the_caption(tmp_path, text_model):
    workdir = str(tmp_path / "clip")
    save_untrained_clip(workdir, text_model)
    scorer = clip_image_scorer(workdir)
    images = render_many(sample_split("eval", 3))
    scores = scorer("a red circle", images)
    embedder = ClipEmbedder.load(workdir)
    assert scores.shape == (3,)
    np.testing.assert_allclose(scores, embedder.embed_images(images) @ embedder.embed_texts(["a red circle"])[0],
                               atol=1e-5)
    assert (np.abs(scores) <= 1 + 1e-5).all()
