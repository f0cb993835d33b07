"""One vocabulary for the one token stream: special tokens, text pieces, image codes.

Ids are laid out as [specials | text pieces | image codes | padding]:
- specials: `<pad>`, `<eos>`, `<break>` (every switch of modality), `<mask>` (the
  unconditional prompt of classifier-free guidance and the caption hole), `<infill>`
  (CM3: where the masked spans are moved), `<eoss>` (ends a moved span) and the sentinels
  `<sentinel:0>` ... `<sentinel:15>` (CM3 masks at most 16 spans);
- text pieces: the sentencepiece model's ids, shifted;
- image codes: the image tokenizer's codebook, shifted;
- the embedding table is padded to a multiple of 128 (those ids are never produced).

Specials exist only as ids. Text never turns into a special: the literal string
"<break>" in user text is just text (see documents.py).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from cm3jax.errors import UserError

MAX_SENTINELS = 16
BASE_SPECIALS = ("<pad>", "<eos>", "<break>", "<mask>", "<infill>", "<eoss>")
PAD_MULTIPLE = 128


def sentinel(i: int) -> str:
    return f"<sentinel:{i}>"


SPECIALS: tuple[str, ...] = BASE_SPECIALS + tuple(sentinel(i) for i in range(MAX_SENTINELS))


@dataclasses.dataclass(frozen=True)
class MultimodalVocab:
    text_size: int  # pieces of the text tokenizer
    image_codebook_size: int  # codes of the image tokenizer
    image_tokens: int  # codes per image (h * w)
    text_fingerprint: str = ""  # sha256 of the text tokenizer model
    image_fingerprint: str = ""  # sha256 of the image tokenizer weights
    specials: tuple[str, ...] = SPECIALS

    def __post_init__(self):
        if self.text_size <= 0 or self.image_codebook_size <= 0 or self.image_tokens <= 0:
            raise UserError(f"Vocabulary sizes must be positive: text {self.text_size}, "
                            f"codebook {self.image_codebook_size}, tokens per image {self.image_tokens}.")

    # ---- layout
    @property
    def text_offset(self) -> int:
        return len(self.specials)

    @property
    def image_offset(self) -> int:
        return self.text_offset + self.text_size

    @property
    def size(self) -> int:
        """Ids in use."""
        return self.image_offset + self.image_codebook_size

    @property
    def image_end(self) -> int:
        """Image ids are the contiguous block [image_offset, image_end)."""
        return self.size

    @property
    def padded_size(self) -> int:
        """Rows of the embedding table: `size` rounded up to a multiple of 128."""
        return -(-self.size // PAD_MULTIPLE) * PAD_MULTIPLE

    def id(self, special: str) -> int:
        try:
            return self.specials.index(special)
        except ValueError:
            raise UserError(f"{special!r} is not a special token; specials: {', '.join(self.specials)}.") from None

    @property
    def pad_id(self) -> int:
        return self.id("<pad>")

    @property
    def eos_id(self) -> int:
        return self.id("<eos>")

    @property
    def break_id(self) -> int:
        return self.id("<break>")

    @property
    def mask_id(self) -> int:
        return self.id("<mask>")

    @property
    def infill_id(self) -> int:
        return self.id("<infill>")

    @property
    def eoss_id(self) -> int:
        return self.id("<eoss>")

    # Here one `<break>` between segments both opens and closes an image, and documents have no
    # prefix; Chameleon's vocabulary (cm3jax.chameleon.vocabulary) wraps each image in its own
    # opener and closer and begins documents with `<s>`. The codec and the sampler read these.
    image_open_id = property(lambda self: self.break_id)
    image_close_id = property(lambda self: self.break_id)
    document_prefix = property(lambda self: ())

    def has(self, special: str) -> bool:
        return special in self.specials

    def sentinel_id(self, i: int) -> int:
        if not 0 <= i < MAX_SENTINELS:
            raise UserError(f"Sentinel {i} is out of range 0..{MAX_SENTINELS - 1}.")
        return self.id(sentinel(i))

    # ---- conversions (vectorised over numpy arrays)
    def text_ids(self, pieces) -> np.ndarray:
        return np.asarray(pieces, np.int32) + self.text_offset

    def pieces(self, text_ids) -> np.ndarray:
        return np.asarray(text_ids, np.int32) - self.text_offset

    def image_ids(self, codes) -> np.ndarray:
        return np.asarray(codes, np.int32) + self.image_offset

    def codes(self, image_ids) -> np.ndarray:
        return np.asarray(image_ids, np.int32) - self.image_offset

    def is_special(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= 0) & (ids < self.text_offset)

    def is_text(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.text_offset) & (ids < self.image_offset)

    def is_image(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.image_offset) & (ids < self.size)

    def special_name(self, token_id: int) -> str:
        return self.specials[token_id]

    # ---- identity: saved with checkpoints, checked on load
    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"specials": list(self.specials)}

    @classmethod
    def from_json(cls, data: dict) -> "MultimodalVocab":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"Vocabulary record has unknown keys {sorted(unknown)}; it was written by another "
                            f"version of cm3jax.")
        return cls(**{**data, "specials": tuple(data.get("specials", SPECIALS))})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    def differences(self, other: "MultimodalVocab", what: str = "the other") -> list[str]:
        """Human-readable differences (`other` described as `what`), empty when they are the same."""
        out = []
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if mine != theirs:
                if field.name == "specials":
                    out.append(f"special tokens differ ({len(mine)} vs {len(theirs)}; first difference at "
                               f"{next(i for i, (a, b) in enumerate(zip(mine + ('',), theirs + ('',))) if a != b)})")
                else:
                    out.append(f"{field.name} is {theirs!r} in {what} but {mine!r} here")
        return out

    def check_matches(self, other: "MultimodalVocab", what: str = "the checkpoint") -> None:
        """Refuses `other` (e.g. a checkpoint's vocabulary) unless it is this one."""
        differences = self.differences(other, what)
        if differences:
            raise UserError(f"The vocabulary of {what} differs from the tokenizers given: "
                            f"{'; '.join(differences)}. Use the tokenizers it was trained with.")
