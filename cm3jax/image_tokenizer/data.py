"""Shapes images for tokenizer training: rendered once, then served in a reshuffled order per
epoch; the batch of a step is a pure function of (scenes, seed, step), so a resumed run sees
exactly the batches an uninterrupted one would."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from cm3jax.errors import UserError
from cm3jax.shapes.render import render
from cm3jax.shapes.scene import Scene
from cm3jax.shapes.world import sample_split

RENDER_CHUNK = 2048


def render_split(split: str, num_scenes: int, seed: int, resolution: int,
                 progress: bool = True) -> tuple[list[Scene], np.ndarray]:
    """The first `num_scenes` scenes of a Shapes split and their uint8[N, R, R, 3] images."""
    if num_scenes <= 0:
        raise UserError(f"Need at least one {split} scene to train or evaluate the tokenizer, got {num_scenes}; "
                        f"raise config.data.num_train_scenes / config.training.eval_scenes.")
    scenes: list[Scene] = []
    images = np.empty((num_scenes, resolution, resolution, 3), np.uint8)
    with tqdm(total=num_scenes, desc=f"render {split}", unit="scene", disable=not progress, leave=False) as bar:
        for start in range(0, num_scenes, RENDER_CHUNK):
            chunk = sample_split(split, min(RENDER_CHUNK, num_scenes - start), seed, resolution, start=start)
            for i, scene in enumerate(chunk):
                images[start + i] = render(scene)
            scenes.extend(chunk)
            bar.update(len(chunk))
    return scenes, images


class TrainImages:
    """A fixed set of rendered training images, sampled epoch by epoch without replacement."""

    def __init__(self, images_NRR3: np.ndarray, batch_size: int, shuffle_seed: int):
        if batch_size > len(images_NRR3):
            raise UserError(f"config.training.batch_size={batch_size} exceeds the {len(images_NRR3)} training "
                            f"scenes; raise config.data.num_train_scenes or lower the batch size.")
        self.images = images_NRR3
        self.batch_size = batch_size
        self.shuffle_seed = shuffle_seed
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.shuffle_seed, epoch])))
            self._orders = {epoch: rng.permutation(len(self.images))}
        return self._orders[epoch]

    def batch(self, step: int) -> np.ndarray:
        """uint8[B, R, R, 3]: the images of training step `step` (0-based)."""
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = np.divmod(positions, len(self.images))
        indices = np.array([self._order(int(e))[o] for e, o in zip(epochs, offsets)])
        return self.images[indices]
