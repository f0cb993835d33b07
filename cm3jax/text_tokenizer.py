"""The text tokenizer: a sentencepiece model with byte fallback, trained on our own corpus.

Specials are not part of the sentencepiece model (they live in MultimodalVocab), so no
text, whatever it contains, encodes to a special token. Normalisation is the identity:
decode(encode(text)) == text.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Iterable, Sequence

import sentencepiece as spm

from cm3jax.errors import UserError
from cm3jax.fileio import atomic_write_bytes

MIN_VOCAB = 300  # 256 byte pieces, unk, and room for real pieces


class TextTokenizer:
    def __init__(self, model_proto: bytes, source: str = "<bytes>"):
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load_from_serialized_proto(model_proto)
        except (RuntimeError, OSError) as e:
            raise UserError(f"{source} is not a sentencepiece model ({e}). Train one with "
                            f"`cm3jax tokenizer text --out {source}`.") from None

    @classmethod
    def load(cls, path: str) -> "TextTokenizer":
        try:
            with open(path, "rb") as f:
                return cls(f.read(), source=path)
        except FileNotFoundError:
            raise UserError(f"No text tokenizer at {path}; train one with `cm3jax tokenizer text --out {path}`.") from None

    def save(self, path: str) -> None:
        atomic_write_bytes(path, self.model_proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_proto).hexdigest()

    def encode(self, text: str) -> list[int]:
        """Piece ids (0-based, sentencepiece's own) of `text`."""
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def decode(self, pieces: Sequence[int]) -> str:
        bad = [p for p in pieces if not 0 <= int(p) < self.vocab_size]
        if bad:
            raise UserError(f"Piece ids {bad[:5]} are outside this tokenizer's 0..{self.vocab_size - 1}.")
        return self._sp.decode([int(p) for p in pieces])

    def piece(self, piece_id: int) -> str:
        return self._sp.id_to_piece(int(piece_id))


def train_text_tokenizer(corpus: Iterable[str], vocab_size: int, model_type: str = "bpe") -> TextTokenizer:
    """Trains deterministically (one thread, every sentence used, no shuffling) with byte fallback."""
    if vocab_size < MIN_VOCAB:
        raise UserError(f"--vocab-size {vocab_size} is too small: byte fallback alone needs 256 pieces; "
                        f"use at least {MIN_VOCAB}.")
    lines = [line for line in corpus if line.strip()]
    if not lines:
        raise UserError("The text corpus is empty; give a file with one sentence per line.")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type=model_type,
            byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
            remove_extra_whitespaces=False, split_digits=True, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            input_sentence_size=0, shuffle_input_sentence=False, num_threads=1, hard_vocab_limit=False,
            minloglevel=2,
        )
    except RuntimeError as e:
        # Every character of the corpus needs its own piece (character coverage 1.0).
        needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
        if needed is None:
            raise
        raise UserError(f"--vocab-size {vocab_size} is too small for this corpus: its characters alone need "
                        f"{needed.group(1)} pieces; use at least that many.") from None
    return TextTokenizer(model.getvalue())
