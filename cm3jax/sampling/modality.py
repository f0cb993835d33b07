"""Modality masks: which ids may come next, from where the sequence stands.

States (with a count of the open image's codes):
    TEXT     text and specials; `<break>` (the image opener) opens an image. Never image codes.
    IMAGE    image codes only, until the vocabulary's `image_tokens` of them; then CLOSING.
    CLOSING  the image is complete: only its closer (cm3jax: `<break>`, more follows) or `<eos>`.
    AFTER    after an image's closing `<break>`: text, specials or the first code of another image
             (a vocabulary with its own closer, Chameleon's `<eoss>`, goes back to TEXT instead).
`<pad>` and the embedding table's padding ids are never allowed. The same transition runs on
the host (over a prompt, with NumPy) and in the jitted loop (with jax.numpy).
"""

from __future__ import annotations

import numpy as np

from cm3jax.vocab import MultimodalVocab

TEXT, IMAGE, CLOSING, AFTER = 0, 1, 2, 3


def allowed_table(vocab: MultimodalVocab, width: int) -> np.ndarray:
    """bool [4, width]: the ids allowed in each state (width = the model's padded vocabulary)."""
    ids = np.arange(width)
    image = (ids >= vocab.image_offset) & (ids < vocab.image_end)
    text_or_special = (ids < vocab.size) & ~image & (ids != vocab.pad_id)
    table = np.zeros((4, width), bool)
    table[TEXT] = text_or_special
    table[IMAGE] = image
    table[CLOSING, [vocab.image_close_id, vocab.eos_id]] = True
    table[AFTER] = (text_or_special | image) & (ids != vocab.image_open_id)
    return table


def advance(state, count, token, vocab: MultimodalVocab, xp=np):
    """(state, count) after `token`; elementwise over arrays, with `xp` NumPy or jax.numpy.
    Where one token opens and closes images (cm3jax's `<break>`), closing leads to AFTER; where
    an image has its own closer (Chameleon's `<eoss>`), back to TEXT."""
    is_image = (token >= vocab.image_offset) & (token < vocab.image_end)
    in_image = (state == IMAGE) | (state == CLOSING)
    closes = in_image & (token == vocab.image_close_id)
    opens = ~closes & (token == vocab.image_open_id)
    after_close = AFTER if vocab.image_open_id == vocab.image_close_id else TEXT
    count = xp.where(is_image, xp.where(state == IMAGE, count + 1, 1), 0)
    state = xp.where(is_image, IMAGE, xp.where(closes, after_close, xp.where(opens, IMAGE, TEXT)))
    state = xp.where(is_image & (count >= vocab.image_tokens), CLOSING, state)
    return state, count


def state_after(prompt: np.ndarray, vocab: MultimodalVocab) -> tuple[int, int]:
    """The state and open-image count after reading a prompt."""
    state, count = TEXT, 0
    for token in np.asarray(prompt).tolist():
        state, count = (int(v) for v in advance(state, count, token, vocab))
    return state, count
