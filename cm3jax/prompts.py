"""Task prompts as documents, and their guidance streams.

The unconditional stream replaces the condition by `<mask>` (docs/paper.md; training drops captions
to `<mask>` the same way). Layouts follow the paper's Table 5 (docs/paper.md):

    text -> image   caption <break> | image
    caption         image <break> | caption                      (pretraining's image -> text)
    short / long    image <break> Describe the image briefly. | caption   (... in detail.)
    answer          image <break> Question: q Answer: | a
    edit            Edit first image following the instruction <break> image <break> instruction <break> | image
    structure       Generate an image from the {edge|segmentation} map <break> map <break> caption <break> | image
    infill          before <sentinel:0> after <infill> <sentinel:0> | span <eoss>   (CM3's layout)
"""

from __future__ import annotations

import numpy as np

from cm3jax.documents import DocumentCodec, ImageSegment, SpecialToken, TextSegment
from cm3jax.errors import UserError

MASK = SpecialToken("<mask>")
EDIT_PREFIX = "Edit first image following the instruction"
STRUCTURE_PREFIX = "Generate an image from the {} map"
STRUCTURE_KINDS = ("edge", "segmentation")
CAPTION_INSTRUCTIONS = {"full": None, "short": "Describe the image briefly.", "long": "Describe the image in detail."}


def _open_image(codec: DocumentCodec, document: tuple) -> np.ndarray:
    """The document's ids followed by the <break> that opens the image to generate."""
    return codec.encode(document, then="image")


def text_to_image(codec: DocumentCodec, caption: str, guided: bool) -> tuple[np.ndarray, ...]:
    cond = _open_image(codec, (TextSegment(caption),))
    return (cond, _open_image(codec, (MASK,))) if guided else (cond,)


def caption(codec: DocumentCodec, codes: np.ndarray, detail: str = "full") -> tuple[np.ndarray, ...]:
    """A `full` caption follows the image as in pretraining; `short` and `long` ones (what
    instruction tuning adds) follow an instruction that asks for them."""
    if detail not in CAPTION_INSTRUCTIONS:
        raise UserError(f"Unknown caption detail {detail!r}; choose one of {', '.join(CAPTION_INSTRUCTIONS)}.")
    instruction = CAPTION_INSTRUCTIONS[detail]
    if instruction is None:
        return (codec.encode((ImageSegment(codes),), then="text"),)
    return (codec.encode((ImageSegment(codes), TextSegment(instruction))),)


def answer(codec: DocumentCodec, codes: np.ndarray, question: str) -> tuple[np.ndarray, ...]:
    return (codec.encode((ImageSegment(codes), TextSegment(f"Question: {question} Answer:"))),)


def edit(codec: DocumentCodec, codes: np.ndarray, instruction: str, guided: bool) -> tuple[np.ndarray, ...]:
    """Streams (full, image only, unconditional) for instruct guidance, or just the full prompt."""
    def prompt(image, text):
        return _open_image(codec, (TextSegment(EDIT_PREFIX), image, text))
    full = prompt(ImageSegment(codes), TextSegment(instruction))
    return (full, prompt(ImageSegment(codes), MASK), prompt(MASK, MASK)) if guided else (full,)


def structure(codec: DocumentCodec, map_codes: np.ndarray, kind: str, caption: str,
              guided: bool) -> tuple[np.ndarray, ...]:
    """Streams (cond, uncond) for structure -> image: the map's codes and the caption (a map has
    no colours), or `<mask>` in place of each."""
    if kind not in STRUCTURE_KINDS:
        raise UserError(f"Unknown structure map {kind!r}; choose one of {', '.join(STRUCTURE_KINDS)}.")
    text = TextSegment(STRUCTURE_PREFIX.format(kind))
    cond = _open_image(codec, (text, ImageSegment(map_codes), TextSegment(caption)))
    return (cond, _open_image(codec, (text, MASK, MASK))) if guided else (cond,)


def infill(codec: DocumentCodec, before: str, after: str) -> tuple[np.ndarray, ...]:
    vocab = codec.vocab
    ids = [codec.encode_text(before), [vocab.sentinel_id(0)], codec.encode_text(after),
           [vocab.infill_id, vocab.sentinel_id(0)]]
    return (np.concatenate(ids).astype(np.int32),)
