"""Shapes (caption, image) pairs for CLIP training and evaluation.

A pair's `key` says what its caption determines (the scene's description without pixel
jitter, or the emblem's name): two pairs with one key are interchangeable matches, so the
contrastive loss treats them all as positives and recall counts any of them as a hit.

Augmentation is exact: a scene mirrored left to right (`mirror`) renders to its image
flipped, since every shape is symmetric about its vertical axis; its caption says the
mirrored places. Emblems are never mirrored (their patterns are not symmetric).

Training texts are drawn afresh each step (`caption_of`): a scene gets its caption in a
random production of the Shapes grammar, an emblem document one of the recipe's emblem
templates. The batch of a step is a pure function of (pool, seed, step), so a resumed run
sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tqdm import tqdm

from cm3jax.errors import UserError
from cm3jax.shapes import spec
from cm3jax.shapes.captions import CaptionStyle, caption, describe
from cm3jax.shapes.dataset import data_source, scene_of
from cm3jax.shapes.scene import Scene

EMBLEM_PREFIX = "the flag of "
HELD_OUT_SPLITS = ("eval",)


@dataclasses.dataclass
class Pairs:
    images: np.ndarray  # uint8 [N, R, R, 3]
    scenes: list[Scene]
    captions: list[str]  # the dataset's own captions
    splits: list[str]

    def __len__(self) -> int:
        return len(self.scenes)

    def keys(self) -> np.ndarray:
        """int32 [N]: equal where the captions' content is equal."""
        ids: dict = {}
        return np.array([ids.setdefault(describe(s), len(ids)) for s in self.scenes], np.int32)

    def emblem_documents(self) -> np.ndarray:
        """Indices of the memory bank's emblem documents (one per emblem)."""
        return np.array([i for i, (s, split) in enumerate(zip(self.scenes, self.splits))
                         if split == "memory" and s.emblem is not None], np.int64)


def load_pairs(shapes_dir: str, splits, progress: bool = True) -> Pairs:
    images, scenes, captions, names = [], [], [], []
    for split in splits:
        source = data_source(shapes_dir, split)
        for i in tqdm(range(len(source)), desc=f"read {split}", unit="scene", leave=False, disable=not progress):
            example = source[i]
            value = example["caption"]
            images.append(np.asarray(example["image"], np.uint8))
            scenes.append(scene_of(example))
            captions.append(value.decode() if isinstance(value, bytes) else str(value))
            names.append(split)
    if not scenes:
        raise UserError(f"The {'+'.join(splits)} split(s) of {shapes_dir} hold no scenes; make the dataset with "
                        f"`cm3jax shapes make --out {shapes_dir}`.")
    return Pairs(np.stack(images), scenes, captions, names)


_MIRRORED_POSITION = {p: p.replace("left", "<").replace("right", "left").replace("<", "right")
                      for p in spec.POSITIONS}


def mirror(scene: Scene) -> Scene:
    """The scene mirrored left to right (objects at x -> 32 - x, left and right swapped)."""
    if scene.emblem is not None:
        raise UserError(f"Scene {scene.id!r} shows an emblem, whose pattern has no mirrored name.")
    objects = tuple(dataclasses.replace(o, position=_MIRRORED_POSITION[o.position],
                                        center=(spec.BASE_RESOLUTION - o.center[0], o.center[1]))
                    for o in scene.objects)
    return scene.replace(objects=objects, caption="")


def land_of(emblem: str) -> str:
    return emblem[len(EMBLEM_PREFIX):] if emblem.startswith(EMBLEM_PREFIX) else emblem


def emblem_text(emblem: str, template: str) -> str:
    """`template` ('{land}'s flag', ...) filled with the emblem's land ('jormark')."""
    return template.format(land=land_of(emblem))


def made_up_word(rng: np.random.Generator) -> str:
    """3 to 10 random lowercase letters: a stand-in for any word the Shapes grammar never uses."""
    return "".join(chr(ord("a") + int(c)) for c in rng.integers(26, size=int(rng.integers(3, 11))))


def with_made_up_words(text: str, rng: np.random.Generator) -> str:
    """`text` with one or two made-up words inserted between its words."""
    words = text.split(" ")
    for _ in range(int(rng.integers(1, 3))):
        words.insert(int(rng.integers(len(words) + 1)), made_up_word(rng))
    return " ".join(words)


def caption_of(scene: Scene, rng: np.random.Generator, emblem_templates, emblem_noise_rate: float = 0.0) -> str:
    if scene.emblem is not None:
        text = emblem_text(scene.emblem, emblem_templates[rng.integers(len(emblem_templates))])
        return with_made_up_words(text, rng) if rng.random() < emblem_noise_rate else text
    return caption(scene, CaptionStyle.sample(rng))


def signature(scene: Scene) -> tuple | None:
    """The colours and shapes a scene holds, whatever their sizes, places and background (None
    for emblems): scenes that share it differ only in what fine-grained matching must tell apart."""
    if scene.emblem is not None or not scene.objects:
        return None
    return tuple(sorted((o.color, o.shape) for o in scene.objects))


class TrainBatches:
    """Batches drawn without replacement within a step; memory-bank emblem documents are drawn
    so they make up `emblem_share` of a batch on average (there are only 32 of them). A
    `hard_share` of each batch comes in pairs of scenes with one signature (the same coloured
    shapes, elsewhere or of other sizes): hard negatives for each other. An `emblem_noise_rate`
    of emblem texts get made-up words inserted, so a query's words from outside the grammar
    ('the national flag of ...') do not drown the emblem's name."""

    def __init__(self, pairs: Pairs, batch_size: int, seed: int, emblem_share: float, emblem_templates,
                 recaption: bool = True, hard_share: float = 0.0, mirror_rate: float = 0.0,
                 emblem_noise_rate: float = 0.0):
        if batch_size > len(pairs):
            raise UserError(f"config.training.batch_size={batch_size} exceeds the {len(pairs)} training pairs; "
                            f"lower it or make a larger Shapes dataset.")
        if not 0 <= emblem_share < 1:
            raise UserError(f"config.data.emblem_share={emblem_share} must lie in [0, 1).")
        if not emblem_templates or any("{land}" not in t for t in emblem_templates):
            raise UserError(f"config.data.emblem_templates={tuple(emblem_templates)!r}: give at least one template, "
                            f"each with a {{land}} field, e.g. \"the flag of {{land}}\".")
        self.pairs, self.batch_size, self.seed = pairs, batch_size, seed
        self.templates, self.recaption = tuple(emblem_templates), recaption
        self.keys = pairs.keys()
        weights = np.ones(len(pairs))
        emblems = pairs.emblem_documents()
        if len(emblems) and emblem_share > 0:
            others = len(pairs) - len(emblems)
            weights[emblems] = emblem_share / (1 - emblem_share) * others / len(emblems)
        self.p = weights / weights.sum()
        if not 0 <= mirror_rate <= 1:
            raise UserError(f"config.data.mirror_rate={mirror_rate} must lie in [0, 1].")
        if mirror_rate and not recaption:
            raise UserError("config.data.mirror_rate > 0 needs config.data.recaption=True: a mirrored scene needs "
                            "a caption of its own.")
        if not 0 <= emblem_noise_rate <= 1:
            raise UserError(f"config.data.emblem_noise_rate={emblem_noise_rate} must lie in [0, 1].")
        self.mirror_rate, self.emblem_noise_rate = mirror_rate, emblem_noise_rate
        self._key_ids = {describe(s): int(k) for s, k in zip(pairs.scenes, self.keys)}
        if not 0 <= hard_share <= 1:
            raise UserError(f"config.data.hard_share={hard_share} must lie in [0, 1].")
        groups: dict = {}
        for row, scene in enumerate(pairs.scenes):
            if signature(scene) is not None:
                groups.setdefault(signature(scene), []).append(row)
        self.group_of = {row: members for members in groups.values() if len(members) > 1 for row in members}
        self.num_hard_pairs = int(batch_size * hard_share) // 2

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, step])))

    def _draw_rows(self, rng: np.random.Generator) -> np.ndarray:
        rows = rng.choice(len(self.pairs), self.batch_size, replace=False, p=self.p)
        if not self.num_hard_pairs:
            return rows
        # Replace the tail of the draw by partners of anchors from its head.
        taken = set(rows[: self.batch_size - self.num_hard_pairs].tolist())
        out = list(rows[: self.batch_size - self.num_hard_pairs])
        anchors = [r for r in out if r in self.group_of][: self.num_hard_pairs]
        for anchor in anchors:
            free = [m for m in self.group_of[anchor] if m not in taken]
            if free:
                partner = free[rng.integers(len(free))]
                out.append(partner)
                taken.add(partner)
        for row in rows[self.batch_size - self.num_hard_pairs:]:  # anchors without partners: the draw's own rows
            if len(out) == self.batch_size:
                break
            if row not in taken:
                out.append(row)
                taken.add(row)
        while len(out) < self.batch_size:
            row = int(rng.integers(len(self.pairs)))
            if row not in taken:
                out.append(row)
                taken.add(row)
        return np.array(out, np.int64)

    def rows(self, step: int) -> np.ndarray:
        """Indices into the pairs of step `step`'s batch."""
        return self._draw_rows(self._rng(step))

    def batch(self, step: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(uint8 images [B, R, R, 3], texts [B], keys int32 [B]) of step `step`."""
        rng = self._rng(step)
        rows = self._draw_rows(rng)
        images = self.pairs.images[rows]
        if not self.recaption:
            return images, [self.pairs.captions[r] for r in rows], self.keys[rows]
        texts, keys = [], np.empty(len(rows), np.int32)
        flips = rng.random(len(rows)) < self.mirror_rate
        for i, row in enumerate(rows):
            scene = self.pairs.scenes[row]
            if flips[i] and scene.emblem is None:
                scene = mirror(scene)
                images[i] = images[i, :, ::-1]
            texts.append(caption_of(scene, rng, self.templates, self.emblem_noise_rate))
            keys[i] = self._key_ids.setdefault(describe(scene), len(self._key_ids))
        return images, texts, keys
