import dataclasses

import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.retrieval.bank import IMAGE, KINDS, TEXT, TEXT_IMAGE, MemoryBank, SourceDocument, build_bank
from cm3jax.retrieval.index import ExactIndex
from cm3jax.retrieval.select import QueryDropout, SelectionOptions, retrieve, select
from tests.retrieval.bank_fixtures import TOY, make_codec
from tests.retrieval.toy_embedder import ToyEmbedder

# Every heuristic off: what remains is plain relevance order.
PLAIN = SelectionOptions(k=4, candidates=8, prefer_multimodal=False, max_relevance=None, skip_duplicates=False,
                         exclude_own=False)


def _bank(kinds, keys=None, tokens=None):
    """Documents d0, d1, ... of the given kinds; by default orthogonal keys and distinct tokens."""
    n = len(kinds)
    keys = np.eye(n, dtype=np.float32) if keys is None else np.asarray(keys, np.float32)
    tokens = tokens or [[100 + i] for i in range(n)]
    has_image = [k != TEXT for k in kinds]
    image_rows = np.cumsum(has_image) - 1
    return MemoryBank([f"d{i}" for i in range(n)], [KINDS.index(k) for k in kinds],
                      np.concatenate(tokens).astype(np.int32), np.cumsum([0] + [len(t) for t in tokens]),
                      [None if k == IMAGE else f"text {i}" for i, k in enumerate(kinds)],
                      np.zeros((sum(has_image), 2, 2, 3), np.uint8), np.where(has_image, image_rows, -1), keys, {})


def _rows(hits):
    return [h.row for h in hits]


def test_relevance_order():
    bank = _bank([TEXT_IMAGE] * 5)
    ids, scores = np.array([3, 0, 4, 1, 2]), np.array([0.2, 0.7, 0.5, 0.1, 0.6])
    hits = select(bank, ids, scores, PLAIN)
    assert _rows(hits) == [0, 2, 4, 3] and [h.score for h in hits] == pytest.approx([0.7, 0.6, 0.5, 0.2])
    assert _rows(select(bank, ids, scores, dataclasses.replace(PLAIN, k=2))) == [0, 2]
    # absent candidates (id -1, padded by the index) are skipped
    assert _rows(select(bank, np.array([-1, 1]), np.array([-np.inf, 0.3]), PLAIN)) == [1]


def test_modality_preference():
    bank = _bank([TEXT, IMAGE, TEXT_IMAGE, TEXT_IMAGE])
    ids, scores = np.array([0, 1, 2, 3]), np.array([0.8, 0.7, 0.6, 0.5])
    prefer = dataclasses.replace(PLAIN, prefer_multimodal=True)
    assert _rows(select(bank, ids, scores, dataclasses.replace(prefer, k=2))) == [2, 3]
    # single-modality documents only fill up, still in relevance order
    assert _rows(select(bank, ids, scores, dataclasses.replace(prefer, k=4))) == [2, 3, 0, 1]
    assert _rows(select(bank, ids, scores, dataclasses.replace(PLAIN, k=2))) == [0, 1]


def test_near_copies_of_the_query_are_skipped():
    bank = _bank([TEXT_IMAGE] * 4)
    ids, scores = np.array([0, 1, 2, 3]), np.array([0.97, 0.91, 0.9, 0.4])
    skip = dataclasses.replace(PLAIN, max_relevance=0.9)
    assert _rows(select(bank, ids, scores, skip)) == [2, 3]  # above 0.9 goes, 0.9 itself stays
    assert _rows(select(bank, ids, scores, PLAIN)) == [0, 1, 2, 3]
    assert SelectionOptions().max_relevance == 0.9  # the paper's threshold is the default


def test_duplicates_of_documents_already_taken_are_skipped():
    keys = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0.995, 0.0999, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    # d1 has d0's token ids (but an orthogonal key); d2's key is a near copy of d0's (inner
    # product 0.995) with other tokens; d3 and d4 differ from everything in both
    bank = _bank([TEXT_IMAGE] * 5, keys=keys, tokens=[[7, 8], [7, 8], [9], [10], [7]])
    ids, scores = np.arange(5), np.array([0.8, 0.7, 0.6, 0.5, 0.4])
    dedupe = dataclasses.replace(PLAIN, skip_duplicates=True, duplicate_similarity=0.99)
    assert _rows(select(bank, ids, scores, dedupe)) == [0, 3, 4]
    assert _rows(select(bank, ids, scores, dataclasses.replace(dedupe, duplicate_similarity=0.999))) == [0, 2, 3, 4]
    assert _rows(select(bank, ids, scores, PLAIN)) == [0, 1, 2, 3]


def test_the_query_s_own_document_is_never_returned():
    bank = _bank([TEXT_IMAGE] * 3)
    ids, scores = np.array([0, 1, 2]), np.array([0.5, 0.4, 0.3])
    exclude = dataclasses.replace(PLAIN, exclude_own=True)
    assert _rows(select(bank, ids, scores, exclude, own_id="d1")) == [0, 2]
    assert _rows(select(bank, ids, scores, exclude, own_id="elsewhere")) == [0, 1, 2]
    assert _rows(select(bank, ids, scores, PLAIN, own_id="d1")) == [0, 1, 2]


def test_query_dropout_drops_a_fifth_of_the_words_with_a_seeded_rng():
    text = "a large red circle in the top left on a black background"  # 12 words -> drop 2
    words = text.split()
    dropout = QueryDropout()
    assert dropout.rate == 0.2
    out = dropout.apply(text, np.random.default_rng(0))
    kept = out.split()
    assert len(kept) == 10
    it = iter(words)
    assert all(w in it for w in kept)  # a subsequence: order kept, nothing added
    assert out == dropout.apply(text, np.random.default_rng(0))
    assert len({dropout.apply(text, np.random.default_rng(s)) for s in range(20)}) > 10
    # every position is equally likely to go: each about 2/12 of the time
    rng, dropped = np.random.default_rng(1), np.zeros(len(words))
    numbered = " ".join(str(i) for i in range(len(words)))
    for _ in range(3000):
        dropped += [str(i) not in dropout.apply(numbered, rng).split() for i in range(len(words))]
    np.testing.assert_allclose(dropped / 3000, 2 / 12, atol=0.03)
    assert QueryDropout(0.0).apply(text, rng) == text and dropout.apply("circle", rng) == "circle"
    with pytest.raises(UserError, match="rate"):
        QueryDropout(1.0)


WIDE = 256  # toy keys wide enough that unrelated word bags score near 0


class _Recording(ToyEmbedder):
    def __init__(self):
        super().__init__(WIDE)
        self.texts = []

    def embed_documents(self, texts, images):
        self.texts.extend(texts)
        return super().embed_documents(texts, images)


@pytest.fixture(scope="module")
def toy_bank():
    captions = ["a red circle", "a red circle on a black background", "a blue square at the top",
                "a green cross in the center", "the flag of vexland", "a small yellow triangle"]
    rng = np.random.default_rng(0)
    docs = [SourceDocument(f"m{i}", text=c, image=rng.integers(0, 256, (32, 32, 3)).astype(np.uint8),
                           codes=rng.integers(0, 16, (2, 2))) for i, c in enumerate(captions)]
    return build_bank(docs, ToyEmbedder(WIDE), make_codec(), embedder_record={**TOY, "args": [WIDE, 0]}, source={},
                      progress=False)


def test_retrieve_embeds_the_query_applies_dropout_only_in_training_and_selects(toy_bank):
    index = ExactIndex(toy_bank.keys_ND)
    query = "a big red circle on a black background at the left"
    options = SelectionOptions(k=2, candidates=6, max_relevance=None)
    embedder = _Recording()
    hits = retrieve(toy_bank, index, embedder, [query], [None], options)[0]
    assert embedder.texts == [query] and len(hits) == 2 and hits[0].row in (0, 1)
    ids, scores = index.search(ToyEmbedder(WIDE).embed_texts([query]), 6)
    assert [h.row for h in hits] == ids[0, :2].tolist()
    # own document excluded by id
    assert "m1" not in [toy_bank.ids[h.row] for h in
                        retrieve(toy_bank, index, embedder, [query], [None], options, own_ids=["m1"])[0]]
    with pytest.raises(UserError, match="seeded"):
        retrieve(toy_bank, index, embedder, [query], [None], options, training=True)
    embedder.texts.clear()
    retrieve(toy_bank, index, embedder, [query], [None], options, training=True, rng=np.random.default_rng(3))
    assert embedder.texts == [QueryDropout().apply(query, np.random.default_rng(3))]
    assert len(embedder.texts[0].split()) == len(query.split()) - 2
    with pytest.raises(UserError, match="index holds"):
        retrieve(toy_bank, ExactIndex(toy_bank.keys_ND[:3]), embedder, [query], [None], options)
