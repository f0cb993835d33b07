"""A small deterministic stand-in for CLIP in retrieval tests: a hashed bag of words and 8 x 8
block-averaged pixels, each through its own fixed random projection, L2-normalised. Documents
with shared words (or similar pictures) get close keys; nothing in it knows the tests' answers."""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

BUCKETS = 512
PIXELS = 8


def _unit(x_ND: np.ndarray) -> np.ndarray:
    return (x_ND / np.maximum(np.linalg.norm(x_ND, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class ToyEmbedder:
    def __init__(self, dim: int = 32, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.text_projection = rng.standard_normal((BUCKETS, dim))
        self.image_projection = rng.standard_normal((PIXELS * PIXELS * 3, dim))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        counts = np.zeros((len(texts), BUCKETS))
        for i, text in enumerate(texts):
            for word in text.lower().split():
                counts[i, zlib.crc32(word.encode()) % BUCKETS] += 1
        return _unit(counts @ self.text_projection + 1e-6)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float64) / 255.0
        n, h, w, c = images.shape
        blocks = images.reshape(n, PIXELS, h // PIXELS, PIXELS, w // PIXELS, c).mean(axis=(2, 4))
        return _unit((blocks.reshape(n, -1) - 0.5) @ self.image_projection)

    def embed_documents(self, texts: Sequence[str | None], images: list[np.ndarray | None]) -> np.ndarray:
        keys = np.zeros((len(texts), self.dim), np.float32)
        for i, (text, image) in enumerate(zip(texts, images)):
            parts = []
            if text is not None:
                parts.append(self.embed_texts([text])[0])
            if image is not None:
                parts.append(self.embed_images(np.asarray(image)[None])[0])
            if not parts:
                raise ValueError(f"document {i} has neither text nor image")
            keys[i] = _unit(np.mean(parts, axis=0)[None])[0]
        return keys
