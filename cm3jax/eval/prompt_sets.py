"""Fixed prompt sets for the evaluation suite, drawn from the Shapes world of a run's dataset.

A prompt set is the first `size` scenes of a split (each with every task drawn from it, as
`cm3jax shapes make` stores them) whose caption is new and whose meaning never occurs in what a
decoder of the world trains on: the training split and the memory bank's documents (retrieved
documents are trained on; the unseen emblems' documents are never retrieved in training). A scene
described the same way as a trained scene (same objects, sizes, cells and background, or the same
emblem) is skipped, so a score never rests on a memorised picture. Scenes
are pure functions of (split, index, seed), so a set can hold more scenes than the dataset stored,
and `dev` (never stored) can be drawn at all. Its fingerprint hashes the scenes it holds.

    trained = trained_meanings(world_spec)
    prompts = draw(world_spec, "eval", 128, trained)     # prompts.scenes, prompts.tasks, prompts.fingerprint
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools

from cm3jax.errors import UserError
from cm3jax.shapes.captions import meaning
from cm3jax.shapes.dataset import WorldSpec, example_tasks
from cm3jax.shapes.emblems import UNSEEN_EMBLEMS
from cm3jax.shapes.scene import Scene
from cm3jax.shapes.tasks import SceneTasks
from cm3jax.shapes.world import sample_scene

PROMPT_SPLITS = ("eval", "dev", "novel", "emblems_unseen")
SCAN_LIMIT = 20  # indices looked at per scene wanted before a set is declared exhausted


@functools.lru_cache(maxsize=4)
def trained_meanings(world_spec: WorldSpec) -> frozenset:
    """The meaning of every scene a decoder of the world trains on: the training split's, and the
    memory bank's but for the unseen emblems' documents."""
    train = (sample_scene("train", i, world_spec.seed) for i in range(world_spec.num_train))
    memory = (sample_scene("memory", i, world_spec.seed) for i in range(world_spec.num_memory))
    return frozenset(map(meaning, itertools.chain(train, (s for s in memory if s.emblem not in UNSEEN_EMBLEMS))))


@dataclasses.dataclass(frozen=True)
class PromptSet:
    name: str  # the split
    tasks: tuple[SceneTasks, ...]
    indices: tuple[int, ...]  # of each scene in its split
    skipped_as_trained: int
    skipped_as_repeated: int
    exhausted: bool  # the split holds fewer new scenes than asked for

    @property
    def scenes(self) -> list[Scene]:
        return [t.scene for t in self.tasks]

    @property
    def captions(self) -> list[str]:
        return [t.scene.caption for t in self.tasks]

    @functools.cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for t in self.tasks:
            digest.update(t.scene.dumps().encode())
        return "sha256:" + digest.hexdigest()

    def to_json(self) -> dict:
        return {"split": self.name, "size": len(self.tasks), "fingerprint": self.fingerprint,
                "first_index": self.indices[0] if self.indices else None,
                "last_index": self.indices[-1] if self.indices else None,
                "skipped_as_trained": self.skipped_as_trained, "skipped_as_repeated": self.skipped_as_repeated,
                "exhausted": self.exhausted}


def draw(world_spec: WorldSpec, split: str, size: int, trained: frozenset, start: int = 0) -> PromptSet:
    """The first `size` scenes of `split` from index `start` with a caption not seen before in the
    set and a meaning not in `trained`; fewer (`exhausted`) when SCAN_LIMIT * size indices hold no more."""
    if split not in PROMPT_SPLITS:
        raise UserError(f"Prompt sets come from {', '.join(PROMPT_SPLITS)}, not {split!r} (train is what a "
                        f"model learns from).")
    if size < 1:
        raise UserError(f"A prompt set needs at least one prompt, got {size}.")
    kept, indices, captions = [], [], set()
    in_trained = repeated = 0
    for index in range(start, start + SCAN_LIMIT * size):
        if len(kept) == size:
            break
        scene = sample_scene(split, index, world_spec.seed, world_spec.resolution)
        if meaning(scene) in trained:
            in_trained += 1
            continue
        if scene.caption in captions:
            repeated += 1
            continue
        captions.add(scene.caption)
        kept.append(example_tasks(split, index, world_spec.seed, world_spec.resolution))
        indices.append(index)
    return PromptSet(split, tuple(kept), tuple(indices), in_trained, repeated, len(kept) < size)
