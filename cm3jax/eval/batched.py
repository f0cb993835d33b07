"""Many prompts through a trained decoder in fixed-size chunks: one compiled program serves
every chunk (the last is padded with copies of its final request, whose samples are dropped), and
each request's sample id is its position in the whole list, so a result does not depend on the
chunk size.

    images = draw_images(trained, requests, settings, seed=0, bar=bar)   # uint8 [N, H, W, 3]
    texts = write_texts(trained, requests, settings, max_new=48, until="eos")
    log_probs, best = next_token_scores(trained, documents)   # teacher forcing: each token given those before
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
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


@nnx.jit
def _scores(model, tokens_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    log_probs_BTV = jax.nn.log_softmax(model(tokens_BT)[:, :-1], axis=-1)
    next_BT = tokens_BT[:, 1:]
    return (jnp.take_along_axis(log_probs_BTV, next_BT[..., None], axis=-1)[..., 0],
            jnp.argmax(log_probs_BTV, axis=-1).astype(jnp.int32))


def next_token_scores(trained: TrainedDecoder, documents: Sequence[np.ndarray], chunk: int = CHUNK
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Teacher forcing: for each document, the log-probability the model gives each of its tokens
    after the ones before it, and the token it ranks first there (both [len - 1])."""
    width = trained.model.config.max_seq_len
    longest = max((len(d) for d in documents), default=0)
    if longest > width:
        raise ValueError(f"A document of {longest} tokens exceeds the model's context of {width}.")
    log_probs, best = [], []
    for start in range(0, len(documents), chunk):
        batch = documents[start:start + chunk]
        tokens = np.zeros((chunk, width), np.int32)
        for i, d in enumerate(batch):
            tokens[i, :len(d)] = d
        lp, top = jax.device_get(_scores(trained.model, jnp.asarray(tokens)))
        log_probs += [lp[i, :len(d) - 1] for i, d in enumerate(batch)]
        best += [top[i, :len(d) - 1] for i, d in enumerate(batch)]
    return log_probs, best
