"""Chameleon's vocabulary: code names, the image-token mapping, and image prompts laid out as the
reference processor and model lay them out."""

import numpy as np
import pytest

from cm3jax.chameleon.vocabulary import ChameleonVocab, code_of, image_token_name
from cm3jax.documents import ImageSegment, SpecialToken, TextSegment
from cm3jax.errors import UserError
from cm3jax import prompts
from cm3jax.sampling.modality import AFTER, CLOSING, IMAGE, TEXT, allowed_table, state_after
from tests.chameleon.hf_reference import IMAGE_CODES, build_tokenizer, specials


def test_code_names_round_trip_and_other_entries_are_not_codes():
    assert image_token_name(0) == "IMGIMGAZ" and image_token_name(8191) == "IMGIMGIBJBZ"
    assert all(code_of(image_token_name(c)) == c for c in (0, 7, 10, 123, 8191))
    assert [code_of(n) for n in ("IMGIMGZ", "IMGIMGKZ", "<image>", "IMGIMGAB", "hello")] == [None] * 5


def _vocab():
    tokenizer = build_tokenizer()
    return ChameleonVocab.from_map(tokenizer.get_vocab(), specials(), image_tokens=4), tokenizer


def test_ids_and_codes_map_by_name_not_by_order():
    vocab, tokenizer = _vocab()
    ids = tokenizer.get_vocab()
    assert vocab.image_codebook_size == IMAGE_CODES and (vocab.image_offset, vocab.image_end) == (4, 4 + IMAGE_CODES)
    assert vocab.image_ids([10])[0] == ids["IMGIMGBAZ"] == 5  # sorted by name, code 10 follows code 0
    np.testing.assert_array_equal(vocab.codes(vocab.image_ids(np.arange(IMAGE_CODES))), np.arange(IMAGE_CODES))
    assert (vocab.break_id, vocab.eoss_id, vocab.eos_id, vocab.bos_id) == (
        ids["<racm3:break>"], ids["<eoss>"], ids["</s>"], ids["<s>"])
    assert vocab.is_text(ids["a"]) and not vocab.is_text(ids["<image>"]) and vocab.is_image(ids["IMGIMGBAZ"])
    with pytest.raises(UserError, match="no '<sentinel:0>'"):
        vocab.sentinel_id(0)


def test_a_vocabulary_that_is_not_chameleons_is_refused():
    vocab = build_tokenizer().get_vocab()
    with pytest.raises(UserError, match="no <racm3:break>"):
        ChameleonVocab.from_map({k: v for k, v in vocab.items() if k != "<racm3:break>"}, specials(), 4)
    with pytest.raises(UserError, match="not the codes 0..N-1"):
        ChameleonVocab.from_map({k: v for k, v in vocab.items() if k != "IMGIMGDZ"}, specials(), 4)


def test_json_record_round_trips():
    vocab, _ = _vocab()
    assert ChameleonVocab.from_json(vocab.to_json()) == vocab


def test_images_are_wrapped_and_the_sampler_closes_them_with_eoss():
    from cm3jax.documents import DocumentCodec
    from cm3jax.chameleon.text import ChameleonTextTokenizer
    vocab, tokenizer = _vocab()
    codec = DocumentCodec(vocab, ChameleonTextTokenizer(tokenizer.to_str().encode()), (2, 2))
    codes = np.array([[0, 10], [3, 15]])
    ids = codec.encode((TextSegment("a red circle"), ImageSegment(codes), TextSegment(" more")))
    open_at = list(ids).index(vocab.break_id)
    assert ids[0] == vocab.bos_id and list(ids[open_at + 5:open_at + 6]) == [vocab.eoss_id]
    np.testing.assert_array_equal(vocab.codes(ids[open_at + 1:open_at + 5]), codes.reshape(-1))
    segments = codec.decode(ids)
    assert segments[1:] == (TextSegment("a red circle"), ImageSegment(codes), TextSegment(" more"))
    assert segments[0] == SpecialToken("<bos>")
    # the unconditional stream of guidance drops the caption: Chameleon has no <mask>
    cond, uncond = prompts.text_to_image(codec, "a red circle", guided=True)
    assert list(uncond) == [vocab.bos_id, vocab.break_id] and cond[-1] == vocab.break_id
    assert list(prompts.caption(codec, codes)[0][-1:]) == [vocab.eoss_id]
    table = allowed_table(vocab, vocab.size)
    assert state_after(cond, vocab) == (IMAGE, 0) and table[IMAGE].sum() == IMAGE_CODES
    assert list(np.nonzero(table[CLOSING])[0]) == sorted([vocab.eoss_id, vocab.eos_id])
    assert state_after(ids[:open_at + 5], vocab) == (CLOSING, 4)
    assert state_after(ids[:open_at + 6], vocab)[0] == TEXT != AFTER


def test_image_prompts_are_the_reference_processors_ids(trained, hf_checkpoint):
    """Text and an image through transformers' ChameleonProcessor (placeholders) and the model's own
    image-token mapping (VQ codes -> BPE ids) give the ids cm3jax's codec gives."""
    torch = pytest.importorskip("torch")
    from transformers import ChameleonImageProcessorPil, ChameleonProcessor, PreTrainedTokenizerFast
    _, reference = hf_checkpoint
    side = trained.image_model.config.resolution
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(), bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    processor = ChameleonProcessor(ChameleonImageProcessorPil(size={"shortest_edge": side},
                                                              crop_size={"height": side, "width": side}),
                                   tokenizer, image_seq_length=trained.vocab.image_tokens)
    image = (np.random.default_rng(0).random((side, side, 3)) * 255).astype(np.uint8)
    ids = processor(text="a red circle<image>", images=[image], return_for_text_completion=True,
                    return_tensors="pt")["input_ids"][0].numpy()
    placeholder = tokenizer.convert_tokens_to_ids("<image>")
    pixels = torch.as_tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        image_ids = reference.model.get_image_tokens(pixels)[0].numpy()
    assert len(np.unique(image_ids)) > 1
    want = ids.copy()
    want[ids == placeholder] = image_ids
    codes = trained.encode_images(image[None])[0]
    ours = trained.codec.encode((TextSegment("a red circle"), ImageSegment(codes)))
    np.testing.assert_array_equal(ours[1:], want)  # ours begins with <s>, which this tokenizer leaves out
