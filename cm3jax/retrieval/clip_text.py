"""Texts to CLIP text-tower input with the project's sentencepiece tokenizer.

A text becomes its piece ids, then an end-of-text id, then padding up to a fixed length;
CLIP pools at the end-of-text position (`lengths - 1`). The two extra ids sit just past the
tokenizer's pieces: EOS = vocab_size, PAD = vocab_size + 1, so the CLIP's vocabulary is the
tokenizer's plus two. Texts longer than the length keep their first max_length - 1 pieces
(CLIP's tokenizer truncates the same way).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cm3jax.errors import UserError
from cm3jax.text_tokenizer import TextTokenizer

EXTRA_IDS = 2  # EOS, PAD


def eos_id(tokenizer: TextTokenizer) -> int:
    return tokenizer.vocab_size


def pad_id(tokenizer: TextTokenizer) -> int:
    return tokenizer.vocab_size + 1


def clip_vocab_size(tokenizer: TextTokenizer) -> int:
    return tokenizer.vocab_size + EXTRA_IDS


def encode_texts(tokenizer: TextTokenizer, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [N, max_length], lengths int32 [N]); lengths count the EOS token."""
    if isinstance(texts, str):
        raise UserError("encode_texts takes a sequence of texts, got one string; wrap it in a list.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise UserError(f"Text {bad[0]} is a {type(texts[bad[0]]).__name__}, not a string.")
    if max_length < 1:
        raise UserError(f"max_length must be at least 1 (room for the end-of-text token), got {max_length}.")
    ids = np.full((len(texts), max_length), pad_id(tokenizer), np.int32)
    lengths = np.zeros(len(texts), np.int32)
    for row, pieces in enumerate(tokenizer.encode_batch(list(texts)) if texts else []):
        pieces = pieces[: max_length - 1] + [eos_id(tokenizer)]
        ids[row, : len(pieces)] = pieces
        lengths[row] = len(pieces)
    return ids, lengths
