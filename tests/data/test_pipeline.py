import functools

import grain.python as grain
import numpy as np
import pytest

from cm3jax.data.pipeline import ObjectiveConfig, document_rows, make_pipeline
from cm3jax.data.shapes_tasks import ShapesMixture, shapes_document
from cm3jax.documents import DocumentCodec
from cm3jax.objectives import unmask
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.text_tokenizer import train_text_tokenizer
from cm3jax.vocab import MultimodalVocab

SEQ_LEN = 128


@pytest.fixture(scope="module")
def codec():
    tokenizer = train_text_tokenizer(shapes_corpus(num_scenes=300), 400)
    return DocumentCodec(MultimodalVocab(tokenizer.vocab_size, 64, 16, tokenizer.fingerprint), tokenizer, (4, 4))


def _examples(n=40):
    rng = np.random.default_rng(0)
    captions = shapes_corpus(num_scenes=n)[:n]
    return grain.MapDataset.source([{"caption": c, "codes": rng.integers(0, 64, (4, 4))} for c in captions])


def _pipeline(codec, seed=0, process_index=0, process_count=1, repeat=True, mixture=ShapesMixture()):
    to_row = document_rows(functools.partial(shapes_document, mixture=mixture), codec, ObjectiveConfig(), SEQ_LEN)
    return make_pipeline(_examples(), to_row, SEQ_LEN, local_batch=4, seed=seed, process_index=process_index,
                         process_count=process_count, repeat=repeat)


def _documents(batch):
    """(inputs + last target) of every packed document in a batch."""
    out = []
    for row in range(batch["inputs"].shape[0]):
        for segment in set(batch["segments"][row].tolist()) - {0}:
            where = batch["segments"][row] == segment
            assert batch["positions"][row][where].tolist() == list(range(where.sum()))
            inputs, targets = batch["inputs"][row][where], batch["targets"][row][where]
            assert np.array_equal(inputs[1:], targets[:-1]), "targets are the inputs shifted by one"
            out.append(np.concatenate([inputs, targets[-1:]]))
    return out


def test_packed_rows_hold_whole_cm3_documents(codec):
    batch = next(iter(_pipeline(codec)))
    assert {k: v.shape for k, v in batch.items()} == {k: (4, SEQ_LEN) for k in
                                                        ("inputs", "targets", "weights", "positions", "segments")}
    documents = _documents(batch)
    assert len(documents) > 4, "several documents share a row"
    for tokens in documents:
        original = unmask(tokens, codec.vocab)
        kinds = [type(s).__name__ for s in codec.decode(original)]
        assert kinds in (["TextSegment", "ImageSegment"], ["ImageSegment", "TextSegment"],
                         ["SpecialToken", "ImageSegment"])
    assert (batch["weights"][batch["segments"] == 0] == 0).all()


def test_same_seed_same_batches_and_exact_resume(codec):
    first = iter(_pipeline(codec, seed=3))
    for _ in range(3):
        next(first)
    state = first.get_state()
    expected = [next(first) for _ in range(3)]
    resumed = iter(_pipeline(codec, seed=3))
    resumed.set_state(state)
    for a, b in zip(expected, [next(resumed) for _ in range(3)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    other = next(iter(_pipeline(codec, seed=4)))
    assert not np.array_equal(other["inputs"], next(iter(_pipeline(codec, seed=3)))["inputs"])


def test_processes_read_disjoint_shards(codec):
    def captions(process_index):
        seen = set()
        for batch in _pipeline(codec, process_index=process_index, process_count=2, repeat=False):
            for tokens in _documents(batch):
                for segment in codec.decode(unmask(tokens, codec.vocab)):
                    if hasattr(segment, "codes"):
                        seen.add(segment.codes.tobytes())
        return seen
    a, b = captions(0), captions(1)
    assert a and b and not a & b


def _caption_image(codec, caption, code):
    from cm3jax.documents import ImageSegment, TextSegment
    return (TextSegment(caption), ImageSegment(np.full((4, 4), code)))


def test_retrieved_documents_come_first_each_closed_by_eos(codec):
    from cm3jax.data.pipeline import to_training_example
    query = _caption_image(codec, "a red circle", 1)
    context = [codec.encode(_caption_image(codec, "a blue square", 2)), codec.encode(_caption_image(codec, "x", 3))]
    example = to_training_example(query, codec, ObjectiveConfig(cm3_rate=0.0), SEQ_LEN, np.random.default_rng(0),
                                  context)
    tokens = np.append(example["inputs"], example["targets"][-1])
    eos = codec.vocab.eos_id
    expected = np.concatenate([context[0], [eos], context[1], [eos], codec.encode(query), [eos]])
    np.testing.assert_array_equal(tokens, expected)


def test_the_context_budget_drops_retrieved_documents_first_never_the_query(codec):
    from cm3jax.data.pipeline import to_training_example
    query = _caption_image(codec, "a red circle", 1)
    doc = codec.encode(_caption_image(codec, "a blue square in the top left of a big picture", 2))
    query_ids = codec.encode(query)
    seq_len = len(doc) + 1 + len(query_ids) + 2  # room for the query and one document, not two
    example = to_training_example(query, codec, ObjectiveConfig(cm3_rate=0.0), seq_len, np.random.default_rng(0),
                                  [doc, doc[::-1]])
    tokens = np.append(example["inputs"], example["targets"][-1])
    np.testing.assert_array_equal(tokens, np.concatenate([doc, [codec.vocab.eos_id], query_ids, [codec.vocab.eos_id]]))
    alone = to_training_example(query, codec, ObjectiveConfig(cm3_rate=1.0), len(query_ids), np.random.default_rng(0),
                                [doc])
    np.testing.assert_array_equal(alone["inputs"], query_ids)  # no room for sentinels either: trained causally
    from cm3jax.errors import UserError
    with pytest.raises(UserError, match=f"takes {len(query_ids)} tokens, 5 more than train.seq_len = "
                                        f"{len(query_ids) - 5}"):
        to_training_example(query, codec, ObjectiveConfig(), len(query_ids) - 5, np.random.default_rng(0), [doc])


def test_drawn_code_weight_weighs_every_image_code_but_each_documents_background(codec):
    from cm3jax.data.pipeline import to_training_example
    from cm3jax.documents import ImageSegment, TextSegment
    from cm3jax.errors import UserError
    grid = np.full((4, 4), 1)
    grid[1:3, 1:3] = 5  # a drawn object on background code 1
    query = (TextSegment("a red circle"), ImageSegment(grid))
    context = [codec.encode((TextSegment("a blue square"), ImageSegment(np.where(grid == 5, 6, 2))))]
    plain = to_training_example(query, codec, ObjectiveConfig(cm3_rate=0.0), SEQ_LEN, np.random.default_rng(0), context)
    weighted = to_training_example(query, codec, ObjectiveConfig(cm3_rate=0.0, drawn_code_weight=4.0), SEQ_LEN,
                                   np.random.default_rng(0), context)
    np.testing.assert_array_equal(weighted["targets"], plain["targets"])
    drawn = np.isin(weighted["targets"], codec.vocab.image_ids(np.array([5, 6])))
    assert drawn.sum() == 8  # four object codes in each of the two images
    np.testing.assert_array_equal(weighted["weights"], np.where(drawn, 4.0, 1.0) * plain["weights"])
    assert (plain["weights"][np.isin(plain["targets"], codec.vocab.image_ids(np.array([1, 2])))] == 1).all()
    with pytest.raises(UserError, match="drawn_code_weight is a loss weight and must be positive"):
        ObjectiveConfig(drawn_code_weight=0.0)
