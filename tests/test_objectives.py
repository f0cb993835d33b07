import collections

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cm3jax.errors import UserError
from cm3jax.objectives import (causal, cm3_mask, infill_prompt, most_frequent_code, number_of_spans, random_cm3, unmask,
                               weight_drawn_codes)
from cm3jax.vocab import MAX_SENTINELS, MultimodalVocab

VOCAB = MultimodalVocab(text_size=50, image_codebook_size=40, image_tokens=4)


def _document(runs):
    """Alternating text and image runs separated by <break>, as the codec lays them out."""
    parts = []
    for i, (kind, values) in enumerate(runs):
        if i:
            parts.append([VOCAB.break_id])
        parts.append(VOCAB.text_ids(values) if kind == "text" else VOCAB.image_ids(values))
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


runs = st.lists(st.one_of(
    st.tuples(st.just("text"), st.lists(st.integers(0, 49), min_size=1, max_size=12)),
    st.tuples(st.just("image"), st.lists(st.integers(0, 39), min_size=4, max_size=4)),
), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(runs, st.integers(0, 2 ** 32 - 1))
def test_cm3_properties(runs, seed):
    doc = _document(runs)
    masked = random_cm3(doc, VOCAB, np.random.default_rng(seed))
    out = masked.tokens
    # Every original token appears exactly once; the rest are sentinels, <infill>, <eoss> and <eos>.
    structural = {VOCAB.infill_id, VOCAB.eoss_id, VOCAB.eos_id} | {VOCAB.sentinel_id(i) for i in range(MAX_SENTINELS)}
    assert collections.Counter(t for t in out.tolist() if t not in structural) == collections.Counter(doc.tolist())
    # Spans stay inside one modality and never hold a <break>.
    assert 1 <= len(masked.spans) <= MAX_SENTINELS
    for a, b in masked.spans:
        span = doc[a:b]
        assert VOCAB.is_text(span).all() or VOCAB.is_image(span).all()
    # The document comes back exactly; sentinels carry no loss, everything else does.
    assert np.array_equal(unmask(out, VOCAB), doc)
    sentinel = (out >= VOCAB.sentinel_id(0)) & (out < VOCAB.sentinel_id(0) + MAX_SENTINELS)
    assert np.array_equal(masked.loss_weights == 0, sentinel)
    assert out[-1] == VOCAB.eos_id and (out == VOCAB.infill_id).sum() == 1


def test_layout_matches_metaseq():
    doc = _document([("text", [1, 2, 3, 4, 5])])
    out = cm3_mask(doc, VOCAB, [(1, 3)]).tokens
    t = VOCAB.text_ids
    expected = [t([1])[0], VOCAB.sentinel_id(0), *t([4, 5]), VOCAB.infill_id, VOCAB.sentinel_id(0), *t([2, 3]),
                VOCAB.eoss_id, VOCAB.eos_id]
    assert out.tolist() == expected


def test_captioning_falls_out_of_the_objective():
    caption, image = [7, 8, 9], [1, 2, 3, 4]
    doc = _document([("text", caption), ("image", image)])
    prompt = infill_prompt(doc, VOCAB, (0, 3))
    assert prompt.tolist() == [VOCAB.sentinel_id(0), VOCAB.break_id, *VOCAB.image_ids(image), VOCAB.infill_id,
                               VOCAB.sentinel_id(0)]
    full = cm3_mask(doc, VOCAB, [(0, 3)]).tokens
    assert np.array_equal(full[:len(prompt)], prompt)
    assert full[len(prompt):].tolist() == [*VOCAB.text_ids(caption), VOCAB.eoss_id, VOCAB.eos_id]


def test_plain_causal_mode_and_bad_spans():
    doc = _document([("text", [1, 2]), ("image", [3, 4, 5, 6])])
    assert causal(doc, VOCAB).tokens.tolist() == doc.tolist() + [VOCAB.eos_id]
    assert causal(doc, VOCAB).loss_weights.all()
    with pytest.raises(UserError, match="special token"):
        cm3_mask(doc, VOCAB, [(1, 4)])
    with pytest.raises(UserError, match="overlap"):
        cm3_mask(doc, VOCAB, [(0, 2), (1, 2)])


def test_span_count_is_a_clamped_poisson():
    rng = np.random.default_rng(0)
    counts = np.array([number_of_spans(rng) for _ in range(20_000)])
    assert counts.min() == 1 and counts.max() <= MAX_SENTINELS
    # P(n=1) = P(Poisson(1) <= 1) = 2/e
    assert abs((counts == 1).mean() - 2 / np.e) < 0.015


def test_drawn_codes_are_weighted_through_cm3_masking_and_backgrounds_are_not():
    doc = _document([("text", [7, 8]), ("image", [3, 3, 9, 3])])
    assert most_frequent_code(doc, VOCAB) == VOCAB.image_ids(np.array([3]))[0]
    assert most_frequent_code(_document([("text", [7, 8])]), VOCAB) is None
    masked = cm3_mask(doc, VOCAB, [(3, 5)])  # the first two image codes move after <infill>
    weights = weight_drawn_codes(masked, {most_frequent_code(doc, VOCAB)}, VOCAB, 3.0)
    drawn = masked.tokens == VOCAB.image_ids(np.array([9]))[0]
    assert drawn.sum() == 1
    np.testing.assert_array_equal(weights, np.where(drawn, 3.0, 1.0) * masked.loss_weights)
