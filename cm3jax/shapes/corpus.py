"""The Shapes world's texts as a corpus, for training the text tokenizer on."""

from __future__ import annotations

from cm3jax.shapes.dataset import make_example
from cm3jax.shapes.emblems import EMBLEM_NAMES


def shapes_corpus(num_scenes: int = 20_000, seed: int = 0) -> list[str]:
    """Every text the Shapes tasks produce for `num_scenes` training scenes plus the memory
    bank: captions (full, short, long), questions, answers, edit instructions, grounding
    captions. Deterministic."""
    keys = ("caption", "caption_short", "caption_long", "question", "answer", "edit_instruction",
            "grounding_caption")
    lines = []
    for split, num in (("train", num_scenes), ("memory", max(len(EMBLEM_NAMES), num_scenes // 10))):
        for i in range(num):
            example = make_example(split, i, seed, 32)
            lines.extend(example[k] for k in keys if example[k])
    return lines
