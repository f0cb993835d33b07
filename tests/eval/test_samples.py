import numpy as np
import pytest

from cm3jax.retrieval.bank import ShapesBankOptions, build_shapes_bank
from cm3jax.shapes.world import sample_scene
from cm3jax.eval.samples import _contexts, _first_document_is_the_emblem
from tests.retrieval.bank_fixtures import TOY, fake_codes, make_codec, make_world
from tests.retrieval.toy_embedder import ToyEmbedder


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    world = make_world(str(tmp_path_factory.mktemp("world") / "shapes"))
    return build_shapes_bank(world, fake_codes(world), make_codec(), ToyEmbedder(), embedder_record=TOY,
                             options=ShapesBankOptions(seed=3), progress=False), world


def test_contexts_take_the_documents_found_by_text_only(bank):
    bank, _ = bank
    rows = np.array([[5, 7, 1, 2], [-1, 9, 3, 4], [-1, -1, 6, 8]], np.int32)  # 2 by text, then 2 by image
    contexts = _contexts(bank, rows, documents=1)
    assert [len(c) for c in contexts] == [1, 1, 0]
    np.testing.assert_array_equal(contexts[0][0], bank.tokens(5))
    np.testing.assert_array_equal(contexts[1][0], bank.tokens(9))
    assert [len(c) for c in _contexts(bank, rows, documents=2)] == [2, 1, 0]


def test_first_document_counts_only_the_emblem_asked_for(bank):
    bank, _ = bank
    scenes = [sample_scene("emblems_unseen", i) for i in range(3)]  # emblems 16, 17, 18: memory rows 16-18
    rows = np.array([[16, 3, 0, 0], [18, 17, 0, 0], [-1, -1, 17, 0]], np.int32)
    # right; the right one only second; none by text (the image half does not count)
    assert _first_document_is_the_emblem(bank, scenes, rows) == pytest.approx(1 / 3)
