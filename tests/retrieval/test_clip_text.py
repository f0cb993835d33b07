import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.retrieval.clip_text import clip_vocab_size, encode_texts, eos_id, pad_id
from cm3jax.text_tokenizer import TextTokenizer


def test_ids_end_with_eos_then_padding_and_lengths_count_the_eos(text_model):
    tokenizer = TextTokenizer.load(text_model)
    texts = ["a large red circle in the top left", "", "the flag of jormark"]
    ids, lengths = encode_texts(tokenizer, texts, 24)
    assert ids.shape == (3, 24) and ids.dtype == np.int32 and lengths.dtype == np.int32
    assert eos_id(tokenizer) == tokenizer.vocab_size and pad_id(tokenizer) == tokenizer.vocab_size + 1
    assert clip_vocab_size(tokenizer) == tokenizer.vocab_size + 2
    for row, text in enumerate(texts):
        pieces = tokenizer.encode(text)
        assert lengths[row] == len(pieces) + 1
        np.testing.assert_array_equal(ids[row, : len(pieces)], pieces)
        assert ids[row, len(pieces)] == eos_id(tokenizer)
        assert np.all(ids[row, len(pieces) + 1:] == pad_id(tokenizer))
    assert tokenizer.decode(ids[0, : lengths[0] - 1].tolist()) == texts[0]


def test_long_texts_keep_their_first_pieces_and_the_eos(text_model):
    tokenizer = TextTokenizer.load(text_model)
    text = "there is a small blue square at the bottom right and a large yellow cross in the middle"
    ids, lengths = encode_texts(tokenizer, [text], 6)
    assert lengths[0] == 6
    np.testing.assert_array_equal(ids[0, :5], tokenizer.encode(text)[:5])
    assert ids[0, 5] == eos_id(tokenizer)


def test_bad_input_is_a_user_error(text_model):
    tokenizer = TextTokenizer.load(text_model)
    with pytest.raises(UserError, match="one string"):
        encode_texts(tokenizer, "a red circle", 8)
    with pytest.raises(UserError, match="not a string"):
        encode_texts(tokenizer, ["a red circle", None], 8)
    with pytest.raises(UserError, match="at least 1"):
        encode_texts(tokenizer, ["a"], 0)
