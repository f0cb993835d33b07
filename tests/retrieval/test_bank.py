import json
import os

import numpy as np
import pytest

from cm3jax.documents import ImageSegment, TextSegment
from cm3jax.errors import UserError
from cm3jax.retrieval.bank import (IMAGE, KINDS, TEXT, TEXT_IMAGE, Embedder, MemoryBank, ShapesBankOptions,
                                   SourceDocument, build_bank, build_shapes_bank, load_bank, load_embedder)
from cm3jax.shapes.dataset import data_source, scene_of
from cm3jax.vocab import MultimodalVocab
from tests.retrieval.bank_fixtures import TOY, WORLD, fake_codes, make_codec, make_world
from tests.retrieval.toy_embedder import ToyEmbedder

OPTIONS = ShapesBankOptions(text_only=0.4, image_only=0.3, seed=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(str(tmp_path_factory.mktemp("world") / "shapes"))


@pytest.fixture(scope="module")
def codec():
    return make_codec()


@pytest.fixture(scope="module")
def bank(world, codec):
    return build_shapes_bank(world, fake_codes(world), codec, ToyEmbedder(), embedder_record=TOY, options=OPTIONS,
                             batch_size=7, progress=False)


def _unit(x):
    return x / np.linalg.norm(x)


def test_the_toy_embedder_satisfies_the_protocol():
    assert isinstance(ToyEmbedder(), Embedder)


def test_memory_split_becomes_documents_of_three_kinds(world, codec, bank):
    source = data_source(world, "memory")
    assert len(bank) == WORLD.num_memory == len(source)
    assert bank.ids == [source[i]["id"].decode() for i in range(len(source))]
    kinds = [bank.kind(i) for i in range(len(bank))]
    emblems = [scene_of(source[i]).emblem is not None for i in range(len(source))]
    assert sum(emblems) == 32 and all(k == TEXT_IMAGE for k, e in zip(kinds, emblems) if e)
    assert {k for k, e in zip(kinds, emblems) if not e} == set(KINDS)  # 16 scenes at 40/30/30 draw every kind
    # the draws are reproducible and depend on the seed
    again = build_shapes_bank(world, fake_codes(world), codec, ToyEmbedder(), embedder_record=TOY, options=OPTIONS,
                              progress=False)
    other = build_shapes_bank(world, fake_codes(world), codec, ToyEmbedder(), embedder_record=TOY,
                              options=ShapesBankOptions(0.4, 0.3, seed=2), progress=False)
    assert np.array_equal(again.kinds_N, bank.kinds_N) and not np.array_equal(other.kinds_N, bank.kinds_N)


def test_documents_hold_tokens_text_image_and_the_right_key(world, codec, bank):
    source, codes, toy = data_source(world, "memory"), fake_codes(world), ToyEmbedder()
    for row in range(len(bank)):
        doc, example = bank.document(row), source[row]
        caption, image = example["caption"].decode(), example["image"]
        segments = {TEXT: (TextSegment(caption),), IMAGE: (ImageSegment(codes[row]["codes"]),),
                    TEXT_IMAGE: (TextSegment(caption), ImageSegment(codes[row]["codes"]))}[doc.kind]
        assert np.array_equal(doc.tokens, codec.encode(segments))
        assert codec.decode(doc.tokens) == segments
        assert doc.text == (None if doc.kind == IMAGE else caption)
        assert (doc.image is None) == (doc.kind == TEXT)
        if doc.image is not None:
            assert np.array_equal(doc.image, image)
        text_key, image_key = toy.embed_texts([caption])[0], toy.embed_images(image[None])[0]
        expected = {TEXT: text_key, IMAGE: image_key, TEXT_IMAGE: _unit(text_key + image_key)}[doc.kind]
        np.testing.assert_allclose(bank.keys_ND[row], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(bank.keys_ND, axis=1), 1, atol=1e-5)


def test_save_load_round_trip(tmp_path, bank):
    directory = str(tmp_path / "bank")
    manifest = bank.save(directory)
    loaded = load_bank(directory, vocab=bank.vocab)
    assert loaded.ids == bank.ids and loaded.texts == bank.texts and loaded.fingerprint == manifest["fingerprint"]
    for name in ("keys_ND", "kinds_N", "tokens_T", "offsets_N1", "images_MRR3", "image_rows_N"):
        assert np.array_equal(getattr(loaded, name), getattr(bank, name)), name
    assert manifest["kinds"] == {k: int(np.sum(bank.kinds_N == i)) for i, k in enumerate(KINDS)}
    assert loaded.row_of(bank.ids[5]) == 5 and loaded.image_resolution == 32
    # the record rebuilds the embedder the keys came from
    embedder = load_embedder(loaded.embedder_record)
    doc = loaded.document(40)
    np.testing.assert_allclose(embedder.embed_documents([doc.text], [doc.image])[0], loaded.keys_ND[40], atol=1e-6)
    with pytest.raises(UserError, match="not empty"):
        bank.save(directory)


@pytest.fixture
def saved(tmp_path, bank):
    directory = str(tmp_path / "bank")
    bank.save(directory)
    return directory


def test_load_refuses_a_corrupt_file(saved):
    path = os.path.join(saved, "keys.npy")
    data = bytearray(open(path, "rb").read())
    data[-3] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(UserError, match="corrupt: keys.npy"):
        load_bank(saved)


def test_load_refuses_missing_files_and_manifests(saved, tmp_path):
    os.remove(os.path.join(saved, "tokens.npy"))
    with pytest.raises(UserError, match="missing tokens.npy"):
        load_bank(saved)
    with pytest.raises(UserError, match="No memory bank"):
        load_bank(str(tmp_path / "nowhere"))
    with open(os.path.join(saved, "cm3jax_bank.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_bank(saved)


def test_load_refuses_a_manifest_that_does_not_match(saved):
    path = os.path.join(saved, "cm3jax_bank.json")
    manifest = json.load(open(path))
    json.dump({**manifest, "size": manifest["size"] + 1}, open(path, "w"))
    with pytest.raises(UserError, match="manifest says"):
        load_bank(saved)
    json.dump({**manifest, "version": 99}, open(path, "w"))
    with pytest.raises(UserError, match="v99"):
        load_bank(saved)


def test_load_refuses_another_vocabulary(saved, bank):
    other = MultimodalVocab(bank.vocab.text_size, 32, 4, bank.vocab.text_fingerprint)
    with pytest.raises(UserError, match="image_codebook_size"):
        load_bank(saved, vocab=other)


def test_codes_must_pair_up_with_the_scenes(world, codec):
    codes = fake_codes(world)
    with pytest.raises(UserError, match="codes hold 47"):
        build_shapes_bank(world, codes[:-1], codec, ToyEmbedder(), embedder_record=TOY, progress=False)
    swapped = [codes[1], codes[0]] + codes[2:]
    with pytest.raises(UserError, match="do not pair up at index 0"):
        build_shapes_bank(world, swapped, codec, ToyEmbedder(), embedder_record=TOY, progress=False)


class _Unnormalised(ToyEmbedder):
    def embed_documents(self, texts, images):
        return 2 * super().embed_documents(texts, images)


def test_keys_must_be_unit_vectors(codec):
    docs = [SourceDocument("a", text="a red circle"), SourceDocument("b", text="a blue square")]
    with pytest.raises(UserError, match="norm 2.0000, not 1"):
        build_bank(docs, _Unnormalised(), codec, embedder_record=TOY, source={}, progress=False)


def test_ids_must_be_unique_and_documents_non_empty(codec):
    with pytest.raises(UserError, match="not unique"):
        build_bank([SourceDocument("a", text="x"), SourceDocument("a", text="y")], ToyEmbedder(), codec,
                   embedder_record=TOY, source={}, progress=False)
    with pytest.raises(UserError, match="neither text nor an image"):
        build_bank([SourceDocument("a")], ToyEmbedder(), codec, embedder_record=TOY, source={}, progress=False)
    with pytest.raises(UserError, match="no image codes"):
        build_bank([SourceDocument("a", image=np.zeros((32, 32, 3), np.uint8))], ToyEmbedder(), codec,
                   embedder_record=TOY, source={}, progress=False)


def test_an_unloadable_embedder_record_is_a_user_error():
    with pytest.raises(UserError, match="Cannot load the bank's embedder"):
        load_embedder({"factory": "cm3jax.no_such_module:Thing", "args": []})
    with pytest.raises(UserError, match="names no factory"):
        load_embedder({"args": []})


def test_a_bank_is_checked_for_consistency():
    with pytest.raises(UserError, match="offsets"):
        MemoryBank(["a"], np.array([0]), np.array([5, 6], np.int32), np.array([0, 3]), ["x"],
                   np.zeros((0, 1, 1, 3), np.uint8), np.array([-1]), np.ones((1, 1), np.float32), {})
    with pytest.raises(UserError, match="texts do not match their kind"):
        MemoryBank(["a"], np.array([0]), np.array([5, 6], np.int32), np.array([0, 2]), [None],
                   np.zeros((0, 1, 1, 3), np.uint8), np.array([-1]), np.ones((1, 1), np.float32), {})
