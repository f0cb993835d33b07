"""The retriever's embedding side for the memory bank: texts, images and documents to
L2-normalised float32 keys of a trained CLIP.

    embedder = ClipEmbedder.load("runs/clip_shapes")
    keys_ND = embedder.embed_documents(["the flag of jormark", None], [image_RR3, other_RR3])

A text+image document's key is the normalised mean of its normalised text and image
embeddings (CM3Leon); a one-modality document's key is that modality's embedding. Inputs
are embedded in jitted batches, each padded to `batch_size` rows so one compile serves every
call, with a tqdm bar for long inputs.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from cm3jax.errors import UserError
from cm3jax.retrieval.clip import CLIP, ClipConfig, document_keys
from cm3jax.retrieval.clip_checkpoints import load_trained
from cm3jax.retrieval.clip_preprocess import preprocess_batch
from cm3jax.retrieval.clip_text import clip_vocab_size, encode_texts, eos_id
from cm3jax.text_tokenizer import TextTokenizer

@functools.lru_cache(maxsize=8)
def _programs(config: ClipConfig) -> tuple[Callable, Callable]:
    """Jitted (texts, images) embedding functions of one CLIP architecture, shared by its embedders."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: CLIP(config, nnx.Rngs(0))))
    texts = jax.jit(lambda params, ids, lengths: nnx.merge(graphdef, params).embed_texts(ids, lengths))
    images = jax.jit(lambda params, pixels: nnx.merge(graphdef, params).embed_images(pixels))
    return texts, images


class ClipEmbedder:
    def __init__(self, model: CLIP, tokenizer: TextTokenizer, batch_size: int = 256, progress: bool = True):
        config = model.config
        if config.vocab_size != clip_vocab_size(tokenizer) or config.eos_token_id != eos_id(tokenizer):
            raise UserError(f"This CLIP's text vocabulary ({config.vocab_size} ids, EOS {config.eos_token_id}) does "
                            f"not fit the {tokenizer.vocab_size}-piece text tokenizer (it needs "
                            f"{clip_vocab_size(tokenizer)} ids, EOS {eos_id(tokenizer)}); use the tokenizer it was "
                            f"trained with.")
        if batch_size < 1:
            raise UserError(f"batch_size must be positive, got {batch_size}.")
        self.model, self.config, self.tokenizer = model, config, tokenizer
        self.batch_size, self.progress = batch_size, progress
        _, self.params = nnx.split(model)
        self._texts, self._images = _programs(config)

    @classmethod
    def load(cls, workdir: str) -> "ClipEmbedder":
        """The newest checkpoint of a `cm3jax retrieval clip` run and its text tokenizer."""
        model, tokenizer, _ = load_trained(workdir)
        return cls(model, tokenizer)

    @property
    def dim(self) -> int:
        return self.config.projection_dim

    def _batched(self, n: int, run, desc: str) -> np.ndarray:
        """run(start, stop, pad) embeds rows start..stop padded by `pad` rows; out come the n rows."""
        out = np.zeros((n, self.dim), np.float32)
        starts = range(0, n, self.batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=not self.progress or len(starts) < 4):
            stop = min(start + self.batch_size, n)
            out[start:stop] = np.asarray(run(start, stop, self.batch_size - (stop - start)))[: stop - start]
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [N, D], L2-normalised."""
        ids, lengths = encode_texts(self.tokenizer, texts, self.config.max_length)

        def run(start: int, stop: int, pad: int):
            return self._texts(self.params, np.pad(ids[start:stop], ((0, pad), (0, 0)), mode="edge"),
                               np.pad(lengths[start:stop], (0, pad), mode="edge"))
        return self._batched(len(ids), run, "embed texts")

    def embed_images(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """float32 [N, D], L2-normalised, from uint8 [N, H, W, 3] (or a list of uint8 images of
        any size, grey or RGBA too): preprocessed as CLIP does (clip_preprocess.py)."""
        if isinstance(images, np.ndarray) and images.ndim != 4:
            raise UserError(f"embed_images takes uint8 [N, H, W, 3] images, got an array of shape {images.shape}.")

        def run(start: int, stop: int, pad: int):
            pixels_BHWC = preprocess_batch(images[start:stop], self.config.image_size)
            return self._images(self.params, np.pad(pixels_BHWC, ((0, pad), (0, 0), (0, 0), (0, 0))))
        return self._batched(len(images), run, "embed images")

    def embed_documents(self, texts: Sequence[str | None],
                        images: Sequence[np.ndarray | None] | np.ndarray) -> np.ndarray:
        """float32 [N, D] keys of N documents; document i has text texts[i] and image images[i],
        either of which may be None (not both)."""
        if len(texts) != len(images):
            raise UserError(f"embed_documents got {len(texts)} texts but {len(images)} images; give one of each per "
                            f"document (None where a document has no text or no image).")
        has_text = np.array([t is not None for t in texts], bool)
        has_image = np.array([im is not None for im in images], bool)
        empty = np.flatnonzero(~has_text & ~has_image)
        if len(empty):
            raise UserError(f"Document {empty[0]} has neither text nor image; every document needs one or both.")
        keys = np.zeros((len(texts), self.dim), np.float32)
        text_rows, image_rows = np.flatnonzero(has_text), np.flatnonzero(has_image)
        text_emb = self.embed_texts([texts[i] for i in text_rows])
        image_emb = self.embed_images([images[i] for i in image_rows])
        keys[text_rows] = text_emb
        keys[image_rows] = image_emb
        both = has_text & has_image
        # row r's embedding sits at (number of rows before r with that modality)
        keys[both] = document_keys(text_emb[(np.cumsum(has_text) - 1)[both]],
                                   image_emb[(np.cumsum(has_image) - 1)[both]])
        return keys
