import dataclasses
import json

import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.retrieval.bank import ShapesBankOptions, build_shapes_bank
from cm3jax.retrieval.index import ExactIndex
from cm3jax.retrieval.neighbours import (compute_neighbours, fill_rows, load_neighbours, object_keys,
                                         same_meaning_rows, sample_context, save_neighbours, shapes_neighbours,
                                         unseen_emblem_rows)
from cm3jax.retrieval.select import QueryDropout, SelectionOptions
from cm3jax.shapes.captions import meaning
from cm3jax.shapes.dataset import data_source, make, scene_of
from tests.retrieval.bank_fixtures import TOY, WORLD, fake_codes, make_codec, make_world
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


def test_excluded_rows_are_never_returned(setup):
    bank, index, texts, images, ids, world = setup
    plain = compute_neighbours(bank, index, ToyEmbedder(), texts, images, ids, OPTIONS, QueryDropout(0.0),
                               progress=False)
    excluded = frozenset(np.unique(plain[plain >= 0])[::2].tolist())
    rows = compute_neighbours(bank, index, ToyEmbedder(), texts, images, ids, OPTIONS, QueryDropout(0.0),
                              exclude_rows=excluded, progress=False)
    assert not set(rows.reshape(-1).tolist()) & excluded and (rows >= 0).mean() > 0.9


def test_shapes_neighbours_hold_unseen_emblems_out_of_training_only(setup, tmp_path):
    bank, index, texts, images, ids, _ = setup
    world = str(tmp_path / "shapes")  # the same memory split, and training scenes
    make(world, dataclasses.replace(WORLD, num_train=40), workers=1, progress=False)
    held_out = unseen_emblem_rows(bank, world)
    assert sorted(bank.ids[r] for r in held_out) == [f"memory-{i:06d}" for i in range(16, 32)]
    options = SelectionOptions(k=2, candidates=48, max_relevance=None)
    train, train_settings = shapes_neighbours(bank, index, ToyEmbedder(), world, "train", options, QueryDropout(0.5),
                                              progress=False)
    assert not set(train.reshape(-1).tolist()) & held_out
    assert train_settings["held_out_rows"] == sorted(held_out) and train_settings["query_dropout"] == 0.5
    memory, memory_settings = shapes_neighbours(bank, index, ToyEmbedder(), world, "memory", options,
                                                QueryDropout(0.5), progress=False)
    assert memory_settings["held_out_rows"] == [] and memory_settings["query_dropout"] == 0.0
    assert set(memory[16:32].reshape(-1).tolist()) & held_out  # the memory split's unseen emblems find theirs
    with pytest.raises(UserError, match="leave it out"):
        shapes_neighbours(bank, index, ToyEmbedder(), world, "novel", options, QueryDropout(), progress=False)


def test_saved_neighbours_round_trip_and_are_checked_against_their_bank(setup, tmp_path):
    bank, index, texts, images, ids, world = setup
    rows = compute_neighbours(bank, index, ToyEmbedder(), texts, images, ids, OPTIONS, progress=False)
    with pytest.raises(UserError, match="save the bank"):
        save_neighbours(str(tmp_path / "n"), "train", rows, "unsaved", bank, {})
    bank.save(str(tmp_path / "bank"))
    save_neighbours(str(tmp_path / "n"), "train", rows, str(tmp_path / "bank"), bank, {"seed": 0})
    save_neighbours(str(tmp_path / "n"), "memory", rows[:3], str(tmp_path / "bank"), bank, {"seed": 1})
    np.testing.assert_array_equal(load_neighbours(str(tmp_path / "n"), "train", bank), rows)
    manifest = json.loads((tmp_path / "n" / "cm3jax_neighbours.json").read_text())
    assert manifest["splits"] == {"train": {"seed": 0}, "memory": {"seed": 1}}  # each split's own settings
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


def test_same_meaning_rows_are_the_bank_documents_saying_what_a_scene_says_but_for_emblems(setup):
    bank, _, _, _, _, world = setup
    memory = [scene_of(s) for s in data_source(world, "memory")]
    scene_of_id = {scene.id: scene for scene in memory}
    twins = same_meaning_rows(bank, world, memory)
    for scene, rows in zip(memory, twins):
        if scene.emblem is not None:
            assert rows == frozenset(), "an emblem's document is what the bank is for"
        else:
            assert bank.ids.index(scene.id) in rows
            assert all(meaning(scene_of_id[bank.ids[r]]) == meaning(scene) for r in rows)
    assert sum(map(len, twins)) >= 16


def test_training_neighbours_skip_documents_that_mean_what_their_query_does(tmp_path):
    world = str(tmp_path / "shapes")  # enough scenes that some training scenes have a twin in the bank
    make(world, dataclasses.replace(WORLD, num_train=300, num_memory=400), workers=1, progress=False)
    bank = build_shapes_bank(world, fake_codes(world), make_codec(), ToyEmbedder(), embedder_record=TOY,
                             options=ShapesBankOptions(seed=3), progress=False)
    index = ExactIndex(bank.keys_ND)
    scenes = [scene_of(s) for s in data_source(world, "train")]
    twins = same_meaning_rows(bank, world, scenes)
    assert sum(bool(t) for t in twins) >= 3
    options = SelectionOptions(k=2, candidates=bank.keys_ND.shape[0], max_relevance=None)
    kept, skipped = (shapes_neighbours(bank, index, ToyEmbedder(), world, "train",
                                       dataclasses.replace(options, skip_same_meaning=skip), QueryDropout(0.0),
                                       progress=False)[0] for skip in (False, True))
    returned = [set(r.tolist()) & t for r, t in zip(kept, twins)]
    assert any(returned), "without the option, twins are retrieved (the toy embedder ranks them first)"
    assert not any(set(r.tolist()) & t for r, t in zip(skipped, twins))
    assert (skipped >= 0).mean() > 0.9


def test_fill_rows_puts_the_given_documents_first_and_draws_them_all(setup):
    bank, *_ = setup
    rows = fill_rows(np.array([5, 7, 9, 11], np.int32), [7])  # ranked 5, 9, 7, 11 by sample_context
    assert rows.tolist() == [7, -1, 5, -1]
    docs = sample_context(bank, rows, np.random.default_rng(0), 2)
    assert [tuple(d) for d in docs] == [tuple(bank.tokens(7)), tuple(bank.tokens(5))]
    assert fill_rows(np.array([5, -1, 6, -1], np.int32), [3, 4]).tolist() == [3, -1, 4, -1]


def test_shared_object_neighbours_hold_the_examples_own_objects_and_never_a_twin(tmp_path):
    world = str(tmp_path / "shapes")
    make(world, dataclasses.replace(WORLD, num_train=300, num_memory=600), workers=1, progress=False)
    bank = build_shapes_bank(world, fake_codes(world), make_codec(), ToyEmbedder(), embedder_record=TOY,
                             options=ShapesBankOptions(seed=3), progress=False)
    scenes = [scene_of(s) for s in data_source(world, "train")]
    memory_of_id = {s.id: s for s in map(scene_of, data_source(world, "memory"))}
    twins = same_meaning_rows(bank, world, scenes)
    held_out = unseen_emblem_rows(bank, world)
    options = SelectionOptions(k=2, candidates=bank.keys_ND.shape[0], max_relevance=None)
    retrieved, shared = (shapes_neighbours(bank, ExactIndex(bank.keys_ND), ToyEmbedder(), world, "train",
                                           dataclasses.replace(options, share_objects=share), QueryDropout(0.0),
                                           progress=False)[0] for share in (False, True))
    covered = 0
    for scene, rows_K, retrieved_K, twin_rows in zip(scenes, shared, retrieved, twins):
        assert not set(rows_K.tolist()) & (twin_rows | held_out)
        if scene.emblem is not None:
            assert rows_K.tolist() == retrieved_K.tolist(), "an emblem example keeps what the retriever found"
            continue
        own = set(object_keys(scene))
        first = memory_of_id.get(bank.ids[rows_K[0]]) if rows_K[0] >= 0 else None  # the first drawn
        shares = len(set(object_keys(first)) & own) if first is not None else 0
        best = max(len(set(object_keys(m)) & own) for doc_id, m in memory_of_id.items()
                   if bank.ids.index(doc_id) not in twin_rows | held_out)
        assert shares == best, "the first document holds as many of the example's objects as any can"
        covered += shares > 0
    assert covered >= 20, "a 600-scene bank holds some training objects exactly"
    assert (shared != retrieved).any()
