"""Documents (interleaved text and images) <-> one stream of token ids, and back.

    caption <break> image codes <break> more text

`<break>` marks every change of modality; special tokens placed in a document (e.g. the
`<mask>` that stands for a dropped caption) count as text. Encoding never yields a special token from
text: user text goes only through the text tokenizer, whose pieces cannot be specials.
Decoding splits any id sequence (a model's output included) back into segments: runs
of text, runs of image codes, and the special tokens between them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import numpy as np

from cm3jax.errors import UserError
from cm3jax.vocab import MultimodalVocab


@dataclasses.dataclass(frozen=True)
class TextSegment:
    text: str


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSegment:
    codes: np.ndarray  # int [h, w] when complete; 1-D when a decoded span had the wrong length

    @property
    def complete(self) -> bool:
        return self.codes.ndim == 2

    def __eq__(self, other) -> bool:
        return isinstance(other, ImageSegment) and np.array_equal(self.codes, other.codes) \
            and self.codes.shape == other.codes.shape


@dataclasses.dataclass(frozen=True)
class SpecialToken:
    name: str  # e.g. "<mask>", "<sentinel:0>"; never "<break>", which only separates segments


Segment = Union[TextSegment, ImageSegment, SpecialToken]
Document = tuple  # of Segments


class DocumentCodec:
    """Turns documents into ids and back with one vocabulary and text tokenizer (a TextTokenizer,
    or an imported Chameleon's ChameleonTextTokenizer: encode, decode, vocab_size, fingerprint)."""

    def __init__(self, vocab: MultimodalVocab, text_tokenizer, grid: tuple[int, int]):
        if vocab.text_size != text_tokenizer.vocab_size:
            raise UserError(f"The vocabulary expects {vocab.text_size} text pieces but the text tokenizer has "
                            f"{text_tokenizer.vocab_size}; build the vocabulary from this tokenizer.")
        if vocab.text_fingerprint and vocab.text_fingerprint != text_tokenizer.fingerprint:
            raise UserError("The text tokenizer is not the one this vocabulary was built with "
                            "(fingerprints differ); load the matching tokenizer.")
        if grid[0] * grid[1] != vocab.image_tokens:
            raise UserError(f"A {grid[0]}x{grid[1]} code grid does not hold the vocabulary's "
                            f"{vocab.image_tokens} tokens per image.")
        self.vocab, self.text_tokenizer, self.grid = vocab, text_tokenizer, grid

    def encode_text(self, text: str) -> np.ndarray:
        return self.vocab.text_ids(self.text_tokenizer.encode(text))

    def encode_image(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.shape != self.grid:
            raise UserError(f"Image codes have shape {codes.shape}; this tokenizer makes {self.grid} grids.")
        if codes.min() < 0 or codes.max() >= self.vocab.image_codebook_size:
            raise UserError(f"Image codes must lie in 0..{self.vocab.image_codebook_size - 1}, "
                            f"got {codes.min()}..{codes.max()}.")
        return self.vocab.image_ids(codes.reshape(-1))

    def encode(self, document: Sequence[Segment], eos: bool = False, then: str | None = None) -> np.ndarray:
        """int32 ids, with `<break>` between text and image segments (and between two images); a
        vocabulary whose images have their own opener and closer (Chameleon's) wraps each image in
        them instead, after its document prefix. `then` "image" or "text" appends what opens a
        segment of that kind next. A `<mask>` that the vocabulary lacks is left out: it stands for a
        removed condition."""
        vocab = self.vocab
        wraps = vocab.image_open_id != vocab.image_close_id
        parts, previous = [np.asarray(vocab.document_prefix, np.int32)], None
        for segment in document:
            if isinstance(segment, TextSegment):
                ids, kind = self.encode_text(segment.text), "text"
            elif isinstance(segment, ImageSegment):
                ids, kind = self.encode_image(segment.codes), "image"
                if wraps:
                    ids = np.concatenate([[vocab.image_open_id], ids, [vocab.image_close_id]]).astype(np.int32)
            elif isinstance(segment, SpecialToken):
                if segment.name == "<break>":
                    raise UserError("<break> is placed by the codec between segments; do not add it yourself.")
                if segment.name == "<mask>" and not vocab.has("<mask>"):
                    continue
                ids, kind = np.array([vocab.id(segment.name)], np.int32), "text"
            else:
                raise UserError(f"A document holds TextSegment, ImageSegment or SpecialToken, not {type(segment).__name__}.")
            if not wraps and previous is not None and (kind != previous or kind == "image"):
                parts.append(np.array([vocab.break_id], np.int32))
            parts.append(ids)
            previous = kind
        if then == "image" or (then == "text" and not wraps and previous == "image"):
            parts.append(np.array([vocab.image_open_id], np.int32))
        if eos:
            parts.append(np.array([vocab.eos_id], np.int32))
        return np.concatenate(parts).astype(np.int32)

    def decode(self, ids: Sequence[int]) -> tuple:
        """Segments of an id sequence: text runs, image runs (a grid when exactly one image
        long), and specials other than `<break>` and `<pad>`. Ids beyond the vocabulary are an error."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        bad = ids[(ids < 0) | (ids >= self.vocab.size)]
        if bad.size:
            raise UserError(f"Ids {bad[:5].tolist()} are outside the vocabulary (0..{self.vocab.size - 1}).")
        separators = {self.vocab.break_id, self.vocab.pad_id, self.vocab.image_close_id}
        segments: list[Segment] = []
        run: list[int] = []
        run_kind = None

        def flush():
            if not run:
                return
            if run_kind == "text":
                segments.append(TextSegment(self.text_tokenizer.decode(self.vocab.pieces(run).tolist())))
            else:
                codes = self.vocab.codes(run)
                grid = codes.reshape(self.grid) if codes.size == self.vocab.image_tokens else codes
                segments.append(ImageSegment(grid))
            run.clear()

        for token in ids.tolist():
            kind = "text" if self.vocab.is_text(token) else "image" if self.vocab.is_image(token) else None
            if kind is None or kind != run_kind or (kind == "image" and len(run) == self.vocab.image_tokens):
                flush()
            if kind is None:
                if token not in separators:
                    segments.append(SpecialToken(self.vocab.special_name(token)))
                run_kind = None
            else:
                run.append(token)
                run_kind = kind
        flush()
        return tuple(segments)
