"""Task prompts: each layout token by token, and the guidance streams that drop the condition."""

import numpy as np
import pytest

from cm3jax.documents import ImageSegment, TextSegment
from cm3jax import prompts
from tests.retrieval.bank_fixtures import make_codec

CODES = np.array([[1, 2], [3, 4]], np.int32)


@pytest.fixture(scope="module")
def codec():
    return make_codec()


def test_text_to_image_opens_an_image_after_the_caption_and_guides_with_mask(codec):
    vocab = codec.vocab
    caption = codec.encode_text("a red circle")
    (cond,) = prompts.text_to_image(codec, "a red circle", guided=False)
    np.testing.assert_array_equal(cond, np.concatenate([caption, [vocab.break_id]]))
    guided = prompts.text_to_image(codec, "a red circle", guided=True)
    np.testing.assert_array_equal(guided[0], cond)
    np.testing.assert_array_equal(guided[1], [vocab.mask_id, vocab.break_id])
    assert all(p.dtype == np.int32 for p in guided)


def test_caption_and_answer_follow_the_image(codec):
    vocab = codec.vocab
    image = codec.encode((ImageSegment(CODES),))
    (caption,) = prompts.caption(codec, CODES)
    np.testing.assert_array_equal(caption, np.concatenate([image, [vocab.break_id]]))
    (answer,) = prompts.answer(codec, CODES, "what color is the circle?")
    expected = codec.encode((ImageSegment(CODES), TextSegment("Question: what color is the circle? Answer:")))
    np.testing.assert_array_equal(answer, expected)
    assert vocab.is_image(answer).sum() == CODES.size


@pytest.mark.parametrize("detail", ["short", "long"])
def test_short_and_long_captions_follow_their_instruction(codec, detail):
    (prompt,) = prompts.caption(codec, CODES, detail)
    expected = codec.encode((ImageSegment(CODES), TextSegment(prompts.CAPTION_INSTRUCTIONS[detail])))
    np.testing.assert_array_equal(prompt, expected)
    assert not np.array_equal(prompts.caption(codec, CODES, "short")[0], prompts.caption(codec, CODES, "long")[0])
    with pytest.raises(Exception, match="choose one of full, short, long"):
        prompts.caption(codec, CODES, "medium")


def test_structure_reads_the_map_then_the_caption_and_guides_without_either(codec):
    vocab = codec.vocab
    cond, uncond = prompts.structure(codec, CODES, "edge", "a red circle", guided=True)
    expected = codec.encode((TextSegment(prompts.STRUCTURE_PREFIX.format("edge")), ImageSegment(CODES),
                             TextSegment("a red circle")), then="image")
    np.testing.assert_array_equal(cond, expected)
    assert vocab.is_image(uncond).sum() == 0 and (uncond == vocab.mask_id).sum() == 2
    assert codec.encode_text("a red circle").tobytes() not in uncond.tobytes()
    with pytest.raises(Exception, match="choose one of edge, segmentation"):
        prompts.structure(codec, CODES, "depth", "a red circle", guided=False)


def test_edit_streams_drop_the_instruction_then_the_image(codec):
    vocab = codec.vocab
    full, image_only, unconditional = prompts.edit(codec, CODES, "make it blue", guided=True)
    instruction = codec.encode_text("make it blue")
    assert vocab.is_image(full).sum() == vocab.is_image(image_only).sum() == CODES.size
    assert vocab.is_image(unconditional).sum() == 0
    for stream in (full, image_only, unconditional):
        assert stream[-1] == vocab.break_id
        np.testing.assert_array_equal(stream[:len(codec.encode_text(prompts.EDIT_PREFIX))],
                                      codec.encode_text(prompts.EDIT_PREFIX))
    assert instruction.tobytes() in full.tobytes() and instruction.tobytes() not in image_only.tobytes()
    assert (image_only == vocab.mask_id).sum() == 1 and (unconditional == vocab.mask_id).sum() == 2
    assert len(prompts.edit(codec, CODES, "make it blue", guided=False)) == 1


def test_infill_is_cm3s_sentinel_layout(codec):
    vocab = codec.vocab
    (ids,) = prompts.infill(codec, "a large", "circle")
    before, after = codec.encode_text("a large"), codec.encode_text("circle")
    expected = np.concatenate([before, [vocab.sentinel_id(0)], after, [vocab.infill_id, vocab.sentinel_id(0)]])
    np.testing.assert_array_equal(ids, expected)
