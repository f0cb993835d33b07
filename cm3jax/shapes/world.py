"""Scene sampling and the splits: every scene is a pure function of (split, index, seed, version)."""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from cm3jax.shapes import spec
from cm3jax.shapes.captions import CaptionStyle, caption
from cm3jax.shapes.emblems import EMBLEM_NAMES, NUM_EMBLEMS, SEEN_EMBLEMS, UNSEEN_EMBLEMS
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.spec import ShapesError

# `dev` is never stored: the evaluation suite draws it on the fly, to choose recipes on without
# touching `eval` (new splits go last: a split's position seeds its scenes).
SPLITS = ("train", "eval", "novel", "emblems_unseen", "memory", "dev")
NOVEL_SEED = 1729
NUM_NOVEL_PAIRS = 4  # 10% of the 8 x 5 colour-shape pairs
EMBLEM_RATE = 0.05  # share of seen-emblem scenes in train, eval and dev
ALL_PAIRS = tuple((c, s) for c in spec.COLORS for s in spec.SHAPES)


@functools.lru_cache(maxsize=None)
def novel_pairs() -> frozenset[tuple[str, str]]:
    """The held-out colour-shape pairs: distinct colours and distinct shapes, fixed by NOVEL_SEED."""
    rng = np.random.Generator(np.random.PCG64(NOVEL_SEED))
    colors = rng.choice(len(spec.COLORS), NUM_NOVEL_PAIRS, replace=False)
    shapes = rng.choice(len(spec.SHAPES), NUM_NOVEL_PAIRS, replace=False)
    names = list(spec.COLORS)
    return frozenset((names[c], spec.SHAPES[s]) for c, s in zip(colors, shapes))


def seen_pairs() -> tuple[tuple[str, str], ...]:
    novel = novel_pairs()
    return tuple(p for p in ALL_PAIRS if p not in novel)


def check_split(split: str) -> str:
    return spec.check_word(split, SPLITS, "split")


@functools.lru_cache(maxsize=None)
def _version_key() -> int:
    return int.from_bytes(hashlib.sha256(spec.WORLD_VERSION.encode()).digest()[:4], "little")


def scene_rng(split: str, index: int, seed: int, stream: int = 0) -> np.random.Generator:
    """The random stream of one scene; `stream` separates a scene's task draws from its layout."""
    key = [_version_key(), int(seed), SPLITS.index(split), int(index), stream]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def sample_jitter(rng: np.random.Generator) -> tuple[int, int]:
    x, y = rng.integers(spec.JITTERS[0], spec.JITTERS[-1] + 1, size=2)
    return int(x), int(y)


def _sample_objects(rng: np.random.Generator, first_pairs, other_pairs) -> tuple[ShapeObject, ...]:
    n = int(rng.integers(1, spec.MAX_OBJECTS + 1))
    cells = rng.permutation(len(spec.POSITIONS))[:n]
    objects: list[ShapeObject] = []
    used: set[tuple[str, str]] = set()
    for i, cell in enumerate(cells):
        pairs = [p for p in (first_pairs if i == 0 else other_pairs) if p not in used]
        color, shape = pairs[rng.integers(len(pairs))]
        used.add((color, shape))
        size = ("small", "large")[rng.integers(2)]
        objects.append(ShapeObject.at_cell(shape, color, size, spec.POSITIONS[cell], sample_jitter(rng)))
    return tuple(objects)


def sample_scene(split: str, index: int, seed: int = 0, resolution: int = spec.BASE_RESOLUTION) -> Scene:
    check_split(split)
    spec.check_resolution(resolution)
    rng = scene_rng(split, index, seed)
    scene_id = f"{split}-{index:06d}"
    emblem = None
    if split == "emblems_unseen":
        emblem = UNSEEN_EMBLEMS[index % len(UNSEEN_EMBLEMS)]
    elif split == "memory" and index < NUM_EMBLEMS:
        emblem = EMBLEM_NAMES[index]
    elif split in ("train", "eval", "dev") and rng.random() < EMBLEM_RATE:
        emblem = SEEN_EMBLEMS[rng.integers(len(SEEN_EMBLEMS))]
    if emblem is not None:
        scene = Scene(scene_id, emblem=emblem, resolution=resolution)
    else:
        background = tuple(spec.BACKGROUNDS)[rng.integers(len(spec.BACKGROUNDS))]
        seen = seen_pairs()
        first = tuple(sorted(novel_pairs())) if split == "novel" else seen
        objects = _sample_objects(rng, first, ALL_PAIRS if split == "novel" else seen)
        scene = Scene(scene_id, background, objects, resolution=resolution)
    return scene.replace(caption=caption(scene, CaptionStyle.sample(rng)))


def sample_split(split: str, num: int, seed: int = 0, resolution: int = spec.BASE_RESOLUTION,
                 start: int = 0) -> list[Scene]:
    if num < 0:
        raise ShapesError(f"--num must be zero or more, got {num}.")
    return [sample_scene(split, i, seed, resolution) for i in range(start, start + num)]
