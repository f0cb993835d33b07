import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.vocab import MAX_SENTINELS, SPECIALS, MultimodalVocab


def _vocab(**changes):
    return MultimodalVocab(**{"text_size": 500, "image_codebook_size": 1024, "image_tokens": 64,
                              "text_fingerprint": "t" * 64, "image_fingerprint": "i" * 64, **changes})


def test_layout_is_specials_text_images_then_padding():
    vocab = _vocab()
    assert vocab.text_offset == len(SPECIALS) == 6 + MAX_SENTINELS
    assert vocab.image_offset == vocab.text_offset + 500
    assert vocab.size == vocab.image_offset + 1024
    assert vocab.padded_size % 128 == 0 and vocab.size <= vocab.padded_size < vocab.size + 128
    ids = np.arange(vocab.size)
    kinds = vocab.is_special(ids).astype(int) + 2 * vocab.is_text(ids) + 4 * vocab.is_image(ids)
    assert set(np.unique(kinds)) == {1, 2, 4}, "every id is exactly one kind"
    assert vocab.codes(vocab.image_ids([0, 1023])).tolist() == [0, 1023]
    assert vocab.pieces(vocab.text_ids([0, 499])).tolist() == [0, 499]
    assert [vocab.special_name(vocab.sentinel_id(i)) for i in range(3)] == ["<sentinel:0>", "<sentinel:1>", "<sentinel:2>"]
    with pytest.raises(UserError, match="Sentinel 16"):
        vocab.sentinel_id(16)


def test_json_round_trip_and_mismatch_messages():
    vocab = _vocab()
    assert MultimodalVocab.from_json(vocab.to_json()) == vocab
    assert vocab.differences(vocab) == []
    with pytest.raises(UserError, match=r"text_size is 400 in the checkpoint but 500 here.*image_fingerprint"):
        vocab.check_matches(_vocab(text_size=400, image_fingerprint="x"), "the checkpoint")
    with pytest.raises(UserError, match="unknown keys"):
        MultimodalVocab.from_json({**vocab.to_json(), "extra": 1})
