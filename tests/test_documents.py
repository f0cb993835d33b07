import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cm3jax.documents import DocumentCodec, ImageSegment, SpecialToken, TextSegment
from cm3jax.errors import UserError
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.text_tokenizer import train_text_tokenizer
from cm3jax.vocab import SPECIALS, MultimodalVocab

GRID = (8, 8)


@pytest.fixture(scope="module")
def codec():
    tokenizer = train_text_tokenizer(shapes_corpus(num_scenes=500), 400)
    vocab = MultimodalVocab(tokenizer.vocab_size, 1024, 64, tokenizer.fingerprint)
    return DocumentCodec(vocab, tokenizer, GRID)


def _image(seed):
    return ImageSegment(np.random.default_rng(seed).integers(0, 1024, GRID))


def test_caption_image_pair_layout(codec):
    v = codec.vocab
    ids = codec.encode([TextSegment("a red circle"), _image(0)], eos=True)
    assert ids[-1] == v.eos_id and ids[-66] == v.break_id
    assert v.is_text(ids[:-66]).all() and v.is_image(ids[-65:-1]).all()
    assert codec.decode(ids) == (TextSegment("a red circle"), _image(0), SpecialToken("<eos>"))


def test_break_at_every_change_of_modality_and_between_images(codec):
    doc = (TextSegment("edit this"), _image(1), _image(2), TextSegment("make the circle blue"), _image(3))
    ids = codec.encode(doc)
    assert (ids == codec.vocab.break_id).sum() == 4
    assert codec.decode(ids) == doc


@pytest.mark.parametrize("special", SPECIALS)
def test_special_token_strings_in_user_text_stay_text(codec, special):
    text = f"ignore this {special} and{special}that"
    ids = codec.encode([TextSegment(text)])
    assert not codec.vocab.is_special(ids).any()
    assert codec.decode(ids) == (TextSegment(text),)


def test_specials_are_only_made_on_purpose(codec):
    doc = (TextSegment("Image of"), SpecialToken("<mask>"), TextSegment(":"), _image(4), SpecialToken("<infill>"),
           TextSegment(" a chameleon"))
    ids = codec.encode(doc)
    assert codec.vocab.mask_id in ids and codec.vocab.infill_id in ids
    assert codec.decode(ids) == doc
    with pytest.raises(UserError, match="placed by the codec"):
        codec.encode([SpecialToken("<break>")])


def test_a_dropped_caption_keeps_its_break(codec):
    ids = codec.encode([SpecialToken("<mask>"), _image(5)])
    assert ids[:2].tolist() == [codec.vocab.mask_id, codec.vocab.break_id] and len(ids) == 66


def test_decoding_model_output_with_a_short_image(codec):
    v = codec.vocab
    ids = np.concatenate([codec.encode_text("a cat"), [v.break_id], v.image_ids([5, 6, 7]), [v.pad_id, v.pad_id]])
    text, image = codec.decode(ids)
    assert text == TextSegment("a cat") and not image.complete and image.codes.tolist() == [5, 6, 7]
    with pytest.raises(UserError, match="outside the vocabulary"):
        codec.decode([v.size])


def test_bad_images_and_mismatched_tokenizers(codec):
    with pytest.raises(UserError, match=r"shape \(4, 4\)"):
        codec.encode([ImageSegment(np.zeros((4, 4), int))])
    with pytest.raises(UserError, match="0..1023"):
        codec.encode([ImageSegment(np.full(GRID, 1024))])
    other = MultimodalVocab(codec.vocab.text_size, 1024, 64, "f" * 64)
    with pytest.raises(UserError, match="fingerprints differ"):
        DocumentCodec(other, codec.text_tokenizer, GRID)


segments = st.one_of(
    st.text(min_size=1, max_size=30).map(TextSegment),
    st.integers(0, 10_000).map(_image),
    st.sampled_from([s for s in SPECIALS if s not in ("<break>", "<pad>")]).map(SpecialToken),
)


def _normalise(doc):
    """Adjacent text segments are one run of text."""
    out = []
    for s in doc:
        if out and isinstance(s, TextSegment) and isinstance(out[-1], TextSegment):
            out[-1] = TextSegment(out[-1].text + s.text)
        else:
            out.append(s)
    return tuple(out)


@settings(max_examples=150, deadline=None)
@given(st.lists(segments, max_size=6))
def test_any_document_round_trips(codec, doc):
    doc = _normalise(doc)
    assert codec.decode(codec.encode(doc)) == doc
