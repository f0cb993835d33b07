"""Chameleon's text tokenizer: its Hugging Face tokenizer.json, read by the `tokenizers` library.

Ids are the model's own. Encoding adds no special token (the codec places `<s>` and the image
markers); text never encodes to a special token or an image code.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

from cm3jax.errors import UserError
from cm3jax.fileio import atomic_write_bytes


class ChameleonTextTokenizer:
    def __init__(self, data: bytes, source: str = "<bytes>"):
        from tokenizers import Tokenizer
        self.data = data
        try:
            self._tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        except (UnicodeDecodeError, Exception) as e:  # tokenizers raises a bare Exception for bad JSON
            raise UserError(f"{source} is not a Hugging Face tokenizer.json ({str(e)[:200]}); give the tokenizer.json "
                            f"of the Chameleon checkpoint.") from None
        self.special_tokens = tuple(t["content"] for t in json.loads(data).get("added_tokens", []) if t.get("special"))

    @classmethod
    def load(cls, path: str) -> "ChameleonTextTokenizer":
        try:
            with open(path, "rb") as f:
                return cls(f.read(), source=path)
        except FileNotFoundError:
            raise UserError(f"No tokenizer.json at {path}; import the checkpoint again with `cm3jax import "
                            f"chameleon`.") from None

    def save(self, path: str) -> None:
        atomic_write_bytes(path, self.data)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def vocabulary(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, pieces: Sequence[int]) -> str:
        return self._tokenizer.decode([int(p) for p in pieces], skip_special_tokens=False)
