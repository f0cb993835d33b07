"""The plain greedy loop: full forward passes, no cache. The reference the cached sampler is
checked against, and enough to draw eval images during training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.vocab import MultimodalVocab


def pad_rows(prompts: list[np.ndarray], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompts left-aligned in an int32 [N, width] buffer, and their lengths."""
    buffer = np.full((len(prompts), width), pad_id, np.int32)
    for row, prompt in enumerate(prompts):
        buffer[row, :len(prompt)] = prompt
    return buffer, np.array([len(p) for p in prompts], np.int32)


def greedy_image(model: nnx.Module, vocab: MultimodalVocab, prompts: list[np.ndarray], max_len: int) -> np.ndarray:
    """For each prompt (ending in <break>), the `vocab.image_tokens` image codes the model finds most
    likely one after another, sampling only image ids. Returns int32 codes [N, image_tokens]."""
    n_new = vocab.image_tokens
    longest = max(len(p) for p in prompts)
    if longest + n_new > max_len:
        raise UserError(f"A prompt of {longest} tokens plus {n_new} image tokens exceeds the context of "
                        f"{max_len}; shorten the prompt to at most {max_len - n_new} tokens.")
    buffer, lengths = pad_rows(prompts, longest + n_new, vocab.pad_id)
    graphdef, state = nnx.split(model)
    ids = _greedy(graphdef, state, jnp.asarray(buffer), jnp.asarray(lengths), n_new, vocab.image_offset, vocab.size)
    return np.asarray(ids) - vocab.image_offset


@jax.jit(static_argnums=(0, 4, 5, 6))
def _greedy(graphdef, state, buffer_BL, lengths_B, n_new: int, first_image_id: int, last_id: int):
    model = nnx.merge(graphdef, state)
    rows = jnp.arange(buffer_BL.shape[0])

    def step(i, buffer):
        logits = model(buffer)[rows, lengths_B + i - 1]
        ids = jnp.arange(logits.shape[-1])
        logits = jnp.where((ids >= first_image_id) & (ids < last_id), logits, -jnp.inf)
        return buffer.at[rows, lengths_B + i].set(jnp.argmax(logits, -1).astype(buffer.dtype))

    buffer = jax.lax.fori_loop(0, n_new, step, buffer_BL)
    return jax.vmap(lambda row, start: jax.lax.dynamic_slice(row, (start,), (n_new,)))(buffer, lengths_B)
