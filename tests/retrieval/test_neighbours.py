import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.retrieval.bank import ShapesBankOptions, build_shapes_bank
from cm3jax.retrieval.index import ExactIndex
from cm3jax.retrieval.neighbours import compute_neighbours, load_neighbours, sample_context, save_neighbours
from cm3jax.retrieval.select import QueryDropout, SelectionOptions
from cm3jax.shapes.dataset import data_source
from tests.retrieval.bank_fixtures import TOY, fake_codes, make_codec, make_world
from tests.retrieval.toy_embedder import ToyEmbedder

OPTIONS = SelectionOptions(k=2, candidates=16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    world = make_world(str(tmp_path_factory.mktemp("world") / "shapes"))
    bank = build_shapes_bank(world, fake_codes(world), make_codec(), ToyEmbedder(), embedder_record=TOY,
                             options=ShapesBankOptions(seed=3), progress=False)
    source = data_source(world, "memory")
    examples = [source[i] for i in range(len(source))]  # the bank's own scenes as queries: the hardest case
    texts = [e["caption"].decode() for e in examples]
    images = np.stack([np.asarray(e["image"]) for e in examples])
    ids = [e["id"].decode() for e in examples]
    return bank, ExactIndex(bank.keys_ND), texts, images, ids, world


def test_neighbours_by_text_and_by_image_follow_the_heuristics(setup):
    bank, index, texts, images, ids, world = setup
    rows = compute_neighbours(bank, index, ToyEmbedder(), texts, images, ids, OPTIONS, QueryDropout(0.0),
                              progress=False, batch_size=10)
    assert rows.shape == (len(texts), 4) and rows.dtype == np.int32
    assert (rows >= 0).mean() > 0.9
    for i, row in enumerate(rows):
        taken = [r for r in row.tolist() if r >= 0]
        assert ids[i] not in [bank.ids[r] for r in taken], "never the query's own document"
        for half in (row[:2], row[2:]):
            half = [r for r in half.tolist() if r >= 0]
            assert len(set(half)) == len(half)
    again = compute_neighbours(bank, index, ToyEmbedder(), texts, images, ids, OPTIONS, QueryDropout(0.0),
                               progress=False)
    np.testing.assert_array_equal(rows, again)


def test_query_dropout_changes_text_queries_reproducibly(setup):
    bank, index, texts, images, ids, world = setup
    plain = compute_neighbours(bank, index, ToyEmbedder(), texts, images, ids, OPTIONS, QueryDropout(0.0),
                               progress=False)
    dropped = [compute_neighbours(bank, index, ToyEmbedder(), texts, images, ids, OPTIONS, QueryDropout(0.5),
                                  seed=s, progress=False) for s in (1, 1, 2)]
    np.testing.assert_array_equal(dropped[0], dropped[1])
    assert not np.array_equal(plain[:, :2], dropped[0][:, :2])
    np.testing.assert_array_equal(plain[:, 2:], dropped[0][:, 2:])  # image queries have no words to drop


def test_saved_neighbours_round_trip_and_are_checked_against_their_bank(setup, tmp_path):
    bank, index, texts, images, ids, world = setup
    rows = compute_neighbours(bank, index, ToyEmbedder(), texts, images, ids, OPTIONS, progress=False)
    with pytest.raises(UserError, match="save the bank"):
        save_neighbours(str(tmp_path / "n"), "train", rows, "unsaved", bank, OPTIONS, QueryDropout(), 0)
    bank.save(str(tmp_path / "bank"))
    save_neighbours(str(tmp_path / "n"), "train", rows, str(tmp_path / "bank"), bank, OPTIONS, QueryDropout(), 0)
    np.testing.assert_array_equal(load_neighbours(str(tmp_path / "n"), "train", bank), rows)
    with pytest.raises(UserError, match="No neighbours for split 'eval'"):
        load_neighbours(str(tmp_path / "n"), "eval", bank)
    other = build_shapes_bank(world, fake_codes(world), make_codec(), ToyEmbedder(seed=1), embedder_record=TOY,
                              options=ShapesBankOptions(seed=3), progress=False)
    other.save(str(tmp_path / "other"))
    with pytest.raises(UserError, match="index another memory bank"):
        load_neighbours(str(tmp_path / "n"), "train", other)
    (tmp_path / "n" / "train.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        load_neighbours(str(tmp_path / "n"), "train", bank)
    with pytest.raises(UserError, match="No neighbours in"):
        load_neighbours(str(tmp_path / "missing"), "train", bank)


def test_sample_context_draws_up_to_three_distinct_documents(setup):
    bank, *_ = setup
    rng = np.random.default_rng(0)
    rows = np.array([5, 7, 7, -1], np.int32)
    for _ in range(20):
        docs = sample_context(bank, rows, rng, 3)
        assert len(docs) == 2  # 5 and 7: the duplicate and the absent one count once / not at all
        assert {tuple(d) for d in docs} == {tuple(bank.tokens(5)), tuple(bank.tokens(7))}
    assert len(sample_context(bank, np.array([1, 2, 3, 4], np.int32), rng, 3)) == 3
    assert sample_context(bank, np.full(4, -1, np.int32), rng, 3) == []
