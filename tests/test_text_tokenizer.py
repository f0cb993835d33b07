import pytest

from cm3jax.errors import UserError
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.text_tokenizer import TextTokenizer, train_text_tokenizer


@pytest.fixture(scope="module")
def corpus():
    return shapes_corpus(num_scenes=1500)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_text_tokenizer(corpus, 512)


def test_training_is_deterministic(corpus, tokenizer):
    assert train_text_tokenizer(corpus, 512).model_proto == tokenizer.model_proto


def test_round_trips_any_text_with_byte_fallback(tokenizer):
    for text in ["a big red circle in the top left", "  two  spaces ", "ünïcødé ✓ 漢字", "what color is the cross?",
                 "the flag of vexland", "tab\tand\nnewline", ""]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_learns_the_corpus_words(corpus, tokenizer):
    for word in ("circle", "triangle", "background", "bottom", "purple"):
        assert tokenizer.encode(word) == [tokenizer.encode(" " + word)[-1]] or len(tokenizer.encode(word)) == 1
    assert sum(len(tokenizer.encode(c)) for c in corpus[:500]) < sum(len(c) for c in corpus[:500]) / 3


def test_save_load_and_bad_files(tokenizer, tmp_path):
    path = tmp_path / "t.model"
    tokenizer.save(str(path))
    assert TextTokenizer.load(str(path)).fingerprint == tokenizer.fingerprint
    with pytest.raises(UserError, match="No text tokenizer at"):
        TextTokenizer.load(str(tmp_path / "missing.model"))
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match="junk.model is not a sentencepiece model"):
        TextTokenizer.load(str(tmp_path / "junk.model"))
    with pytest.raises(UserError, match="at least 300"):
        train_text_tokenizer(["a b c"], 100)
    # Above the floor yet below what this corpus needs: 256 bytes, unk, 53 characters and the word marker
    with pytest.raises(UserError, match="characters alone need 311 pieces"):
        train_text_tokenizer(["".join(chr(ord("a") + i) + chr(ord("A") + i) for i in range(26)) + "!"], 300)
    with pytest.raises(UserError, match="outside"):
        tokenizer.decode([tokenizer.vocab_size])
