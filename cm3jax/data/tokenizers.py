"""The tokenizers a run's config names (`data.text_tokenizer`, `data.image_tokenizer`) and the
vocabulary and document codec they make together. A text tokenizer ending in `.json` is an
imported Chameleon checkpoint's tokenizer.json, whose vocabulary holds the image codes too."""

from __future__ import annotations

import ml_collections
from flax import nnx

from cm3jax.chameleon.text import ChameleonTextTokenizer
from cm3jax.chameleon.vocabulary import ChameleonVocab
from cm3jax.documents import DocumentCodec
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.checkpoints import load_tokenizer
from cm3jax.image_tokenizer.pretokenize import tokenizer_fingerprint
from cm3jax.text_tokenizer import TextTokenizer
from cm3jax.vocab import MultimodalVocab


def is_chameleon_tokenizer(path: str) -> bool:
    return path.endswith(".json")


def load_codec(config: ml_collections.ConfigDict) -> tuple[DocumentCodec, nnx.Module]:
    """The document codec of the text tokenizer and image tokenizer, and the image tokenizer."""
    image_model, _ = load_tokenizer(config.data.image_tokenizer)
    grid = image_model.config.grid_size()
    if is_chameleon_tokenizer(config.data.text_tokenizer):
        text = ChameleonTextTokenizer.load(config.data.text_tokenizer)
        vocab = ChameleonVocab.from_map(text.vocabulary(), text.special_tokens, grid * grid, text.fingerprint,
                                        tokenizer_fingerprint(image_model), where=config.data.text_tokenizer)
        if vocab.image_codebook_size != image_model.config.codebook_size:
            raise UserError(f"{config.data.text_tokenizer} names {vocab.image_codebook_size} image codes but the image "
                            f"tokenizer {config.data.image_tokenizer} has {image_model.config.codebook_size}.")
    else:
        text = TextTokenizer.load(config.data.text_tokenizer)
        vocab = MultimodalVocab(text.vocab_size, image_model.config.codebook_size, grid * grid, text.fingerprint,
                                tokenizer_fingerprint(image_model))
    return DocumentCodec(vocab, text, (grid, grid)), image_model


def vocab_from_json(data: dict) -> MultimodalVocab | ChameleonVocab:
    """A checkpoint's vocabulary record, of either kind."""
    if data.get("kind") == "chameleon":
        return ChameleonVocab.from_json(data)
    return MultimodalVocab.from_json(data)
