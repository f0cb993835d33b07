"""Chameleon's one vocabulary, seen through the interface of cm3jax's MultimodalVocab.

Chameleon's BPE tokenizer owns every id: text pieces, its special tokens (`<s>`, `</s>`, `<pad>`,
`<racm3:break>` which opens an image, `<eoss>` which closes it, `<image>` the processor's
placeholder, reserved ones) and one entry per VQ code named `IMGIMG<digits as A..J>Z`
(`IMGIMGBCZ` is code 12). Sorted by id, the image entries are not in code order, so codes and
ids map by table. An image is `<racm3:break> codes <eoss>` (cm3jax's own vocabulary puts one
`<break>` between segments instead); the cm3jax names `<break>`, `<eos>`, `<eoss>`, `<pad>` and
`<bos>` stand for Chameleon's `<racm3:break>`, `</s>`, `<eoss>`, `<pad>` and `<s>`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import numpy as np

from cm3jax.errors import UserError

IMAGE_PREFIX = "IMGIMG"
NAMES = {"<bos>": "<s>", "<eos>": "</s>", "<pad>": "<pad>", "<break>": "<racm3:break>", "<eoss>": "<eoss>"}
REQUIRED = tuple(NAMES.values())


def image_token_name(code: int) -> str:
    return IMAGE_PREFIX + "".join(chr(ord("A") + int(c)) for c in str(int(code))) + "Z"


def code_of(name: str) -> int | None:
    """The VQ code an `IMGIMG...Z` entry stands for, None for any other entry."""
    body = name[len(IMAGE_PREFIX):-1]
    if not name.startswith(IMAGE_PREFIX) or not name.endswith("Z") or not body or any(not "A" <= c <= "J" for c in body):
        return None
    return int("".join(str(ord(c) - ord("A")) for c in body))


@dataclasses.dataclass(frozen=True)
class ChameleonVocab:
    vocabulary: tuple[tuple[str, int], ...]  # (token, id) of every entry, by id
    special_tokens: tuple[str, ...]  # the tokenizer's special tokens that are not image codes
    image_tokens: int  # codes per image (h * w)
    text_fingerprint: str = ""  # sha256 of tokenizer.json
    image_fingerprint: str = ""  # of the image tokenizer's weights

    @classmethod
    def from_map(cls, vocabulary_map: Mapping[str, int], special_tokens, image_tokens: int, text_fingerprint: str = "",
                 image_fingerprint: str = "", where: str = "the vocabulary") -> "ChameleonVocab":
        missing = [t for t in REQUIRED if t not in vocabulary_map]
        if missing:
            raise UserError(f"{where} has no {', '.join(missing)}: it is not a Chameleon vocabulary.")
        vocabulary = tuple(sorted(((str(t), int(i)) for t, i in vocabulary_map.items()), key=lambda e: e[1]))
        specials = tuple(sorted(t for t in special_tokens if code_of(t) is None and t in vocabulary_map))
        vocab = cls(vocabulary, specials, image_tokens, text_fingerprint, image_fingerprint)
        codes = vocab._code_table[vocab._code_table >= 0]
        if codes.size == 0 or not np.array_equal(np.sort(codes), np.arange(codes.size)):
            raise UserError(f"{where}: its {IMAGE_PREFIX} entries are not the codes 0..N-1 each once.")
        image_ids = vocab._image_id_of_code
        if image_ids.max() - image_ids.min() + 1 != image_ids.size:
            raise UserError(f"{where}: its {IMAGE_PREFIX} entries do not take one block of ids; cm3jax samples "
                            f"images from a contiguous block (the released Chameleon vocabulary has one).")
        return vocab

    # ---- tables
    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return dict(self.vocabulary)

    @functools.cached_property
    def _code_table(self) -> np.ndarray:
        """int32 [size]: each id's VQ code, -1 for an id that is not an image code."""
        table = np.full(self.size, -1, np.int32)
        for token, i in self.vocabulary:
            code = code_of(token)
            if code is not None:
                table[i] = code
        return table

    @functools.cached_property
    def _image_id_of_code(self) -> np.ndarray:
        ids = np.nonzero(self._code_table >= 0)[0]
        out = np.empty(ids.size, np.int32)
        out[self._code_table[ids]] = ids
        return out

    @functools.cached_property
    def _special_ids(self) -> frozenset[int]:
        return frozenset(self._ids[t] for t in self.special_tokens)

    @functools.cached_property
    def _names(self) -> dict[int, str]:
        return {i: t for t, i in self.vocabulary}

    # ---- layout
    @property
    def size(self) -> int:
        return self.vocabulary[-1][1] + 1

    @property
    def padded_size(self) -> int:
        return self.size

    @property
    def text_size(self) -> int:
        """Ids the text tokenizer can name: all of them (text ids are the tokenizer's own)."""
        return self.size

    @property
    def image_codebook_size(self) -> int:
        return int(self._image_id_of_code.size)

    @property
    def image_offset(self) -> int:
        """The first image id; image ids are the contiguous block [image_offset, image_end)."""
        return int(self._image_id_of_code.min())

    @property
    def image_end(self) -> int:
        return int(self._image_id_of_code.max()) + 1

    # ---- specials
    def has(self, special: str) -> bool:
        return NAMES.get(special, special) in self._ids

    def id(self, special: str) -> int:
        token = NAMES.get(special, special)
        if token not in self._ids:
            raise UserError(f"Chameleon's vocabulary has no {special!r} (CM3's masks and sentinels are cm3jax's own); "
                            f"this task needs a model trained by cm3jax.")
        return self._ids[token]

    pad_id = property(lambda self: self.id("<pad>"))
    eos_id = property(lambda self: self.id("<eos>"))
    bos_id = property(lambda self: self.id("<bos>"))
    break_id = property(lambda self: self.id("<break>"))
    eoss_id = property(lambda self: self.id("<eoss>"))
    mask_id = property(lambda self: self.id("<mask>"))
    infill_id = property(lambda self: self.id("<infill>"))
    image_open_id = property(lambda self: self.id("<break>"))
    image_close_id = property(lambda self: self.id("<eoss>"))
    document_prefix = property(lambda self: (self.bos_id,))

    def sentinel_id(self, i: int) -> int:
        return self.id(f"<sentinel:{i}>")

    def special_name(self, token_id: int) -> str:
        token = self._names[int(token_id)]
        return next((ours for ours, theirs in NAMES.items() if theirs == token), token)

    # ---- conversions
    def text_ids(self, pieces) -> np.ndarray:
        return np.asarray(pieces, np.int32)

    def pieces(self, text_ids) -> np.ndarray:
        return np.asarray(text_ids, np.int32)

    def image_ids(self, codes) -> np.ndarray:
        return self._image_id_of_code[np.asarray(codes, np.int64)]

    def codes(self, image_ids) -> np.ndarray:
        return self._code_table[np.asarray(image_ids, np.int64)]

    def is_image(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        inside = (ids >= 0) & (ids < self.size)
        return inside & (self._code_table[np.where(inside, ids, 0)] >= 0)

    def is_special(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return np.isin(ids, np.fromiter(self._special_ids, np.int64))

    def is_text(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= 0) & (ids < self.size) & ~self.is_image(ids) & ~self.is_special(ids)

    # ---- identity
    def to_json(self) -> dict:
        return {"kind": "chameleon", "vocabulary": dict(self.vocabulary), "special_tokens": list(self.special_tokens),
                "image_tokens": self.image_tokens, "text_fingerprint": self.text_fingerprint,
                "image_fingerprint": self.image_fingerprint}

    @classmethod
    def from_json(cls, data: dict) -> "ChameleonVocab":
        return cls.from_map(data["vocabulary"], data["special_tokens"], data["image_tokens"], data["text_fingerprint"],
                            data["image_fingerprint"])

    def check_matches(self, other, what: str = "the checkpoint") -> None:
        if other != self:
            differs = [f.name for f in dataclasses.fields(self) if getattr(other, f.name, None) != getattr(self, f.name)]
            raise UserError(f"The vocabulary of {what} differs from the tokenizers given ({', '.join(differs)}); use "
                            f"the tokenizer.json and image tokenizer it was imported with.")
