"""The tokenizers a run's config names (`data.text_tokenizer`, `data.image_tokenizer`) and the
vocabulary and document codec they make together."""

from __future__ import annotations

import ml_collections
from flax import nnx

from cm3jax.documents import DocumentCodec
from cm3jax.image_tokenizer.checkpoints import load_tokenizer
from cm3jax.image_tokenizer.pretokenize import tokenizer_fingerprint
from cm3jax.text_tokenizer import TextTokenizer
from cm3jax.vocab import MultimodalVocab


def load_codec(config: ml_collections.ConfigDict) -> tuple[DocumentCodec, nnx.Module]:
    """The document codec of the text tokenizer and image tokenizer, and the image tokenizer."""
    text = TextTokenizer.load(config.data.text_tokenizer)
    image_model, _ = load_tokenizer(config.data.image_tokenizer)
    grid = image_model.config.grid_size()
    vocab = MultimodalVocab(text.vocab_size, image_model.config.codebook_size, grid * grid, text.fingerprint,
                            tokenizer_fingerprint(image_model))
    return DocumentCodec(vocab, text, (grid, grid)), image_model
