"""load_codec: the text and image tokenizers a config names make one vocabulary (text pieces, then
the codebook) whose sizes and fingerprints are the tokenizers', and a codec with their grid."""

import ml_collections
import numpy as np
import pytest

from cm3jax.data.tokenizers import load_codec
from cm3jax.documents import ImageSegment, TextSegment
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.pretokenize import tokenizer_fingerprint


def _config(text_path, image_dir):
    return ml_collections.ConfigDict({"data": {"text_tokenizer": text_path, "image_tokenizer": image_dir}})


def test_the_vocabulary_is_made_of_the_two_tokenizers(tokenizer_files):
    text_path, image_dir, model, text = tokenizer_files
    codec, image_model = load_codec(_config(text_path, image_dir))
    vocab = codec.vocab
    assert image_model.config == model.config and image_model.config.codebook_size == 32
    assert vocab.text_size == text.vocab_size and vocab.image_codebook_size == 32
    assert vocab.image_tokens == 64 and codec.grid == (8, 8)
    assert vocab.text_fingerprint == text.fingerprint
    assert vocab.image_fingerprint == tokenizer_fingerprint(model) == tokenizer_fingerprint(image_model)
    grid = model.config.grid_size()
    assert grid == 8
    assert vocab.check_matches(vocab, "itself") is None
    document = (TextSegment("a red circle"), ImageSegment(np.arange(64).reshape(8, 8) % 32))
    ids = codec.encode(document)
    decoded = codec.decode(ids)
    assert decoded[0].text == "a red circle"
    np.testing.assert_array_equal(decoded[1].codes, document[1].codes)


def test_missing_tokenizers_are_named(tokenizer_files, tmp_path):
    text_path, image_dir, _, _ = tokenizer_files
    with pytest.raises(UserError, match="No text tokenizer at"):
        load_codec(_config(str(tmp_path / "none.model"), image_dir))
    with pytest.raises(UserError, match="No checkpoints in .*cm3jax tokenizer image"):
        load_codec(_config(text_path, str(tmp_path / "no_run")))
