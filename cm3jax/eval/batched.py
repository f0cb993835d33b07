"""Many prompts through a trained decoder in fixed-size chunks: one compiled program serves
every chunk (the last is padded with copies of its final request, whose samples are dropped), and
each request's sample id is its position in the whole list, so a result does not depend on the
chunk size.

    images = draw_images(trained, requests, settings, seed=0, bar=bar)   # uint8 [N, H, W, 3]
    texts = write_texts(trained, requests, settings, max_new=48, until="eos")
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tqdm import tqdm

from cm3jax.sampling.inference import TrainedDecoder
from cm3jax.sampling.sampler import Generation, generate
from cm3jax.sampling.strategies import SamplingSettings

CHUNK = 64
Request = tuple[np.ndarray, ...]


def run(trained: TrainedDecoder, requests: Sequence[Request], settings: SamplingSettings, max_new: int, until: str,
        seed: int = 0, chunk: int = CHUNK, bar: tqdm | None = None) -> Generation:
    """One generation of every request (see `cm3jax.sampling.sampler.generate`)."""
    parts = []
    for start in range(0, len(requests), chunk):
        batch = list(requests[start:start + chunk])
        real = len(batch)
        batch += [batch[-1]] * (min(chunk, len(requests)) - real)
        generation = generate(trained.model, trained.vocab, batch, settings, max_new, seed=seed, until=until,
                              sample_ids=list(range(start, start + len(batch))))
        parts.append(Generation(generation.tokens[:real], generation.lengths[:real], generation.finished[:real]))
        if bar is not None:
            bar.update(real)
    return Generation(np.concatenate([p.tokens for p in parts]), np.concatenate([p.lengths for p in parts]),
                      np.concatenate([p.finished for p in parts]))


def draw_images(trained: TrainedDecoder, requests: Sequence[Request], settings: SamplingSettings, seed: int = 0,
                bar: tqdm | None = None) -> np.ndarray:
    """uint8 [N, H, W, 3]: each request's image (black where a sample did not complete one)."""
    generation = run(trained, requests, settings, trained.vocab.image_tokens, "image", seed, bar=bar)
    return trained.decode_images(generation)


def write_texts(trained: TrainedDecoder, requests: Sequence[Request], settings: SamplingSettings, max_new: int,
                until: str, seed: int = 0, bar: tqdm | None = None) -> list[str]:
    """Each request's text up to its end (`until`), specials and images left out."""
    generation = run(trained, requests, settings, max_new, until, seed, bar=bar)
    return [trained.text(generation, i) for i in range(len(requests))]
