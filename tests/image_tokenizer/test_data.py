"""Tokenizer training images: render_split gives the scenes of a split and exactly what render()
draws; TrainImages serves each epoch as a permutation without replacement, a step's batch is a
pure function of (images, seed, step), and a batch larger than the set is refused."""

import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.image_tokenizer import data
from cm3jax.image_tokenizer.data import TrainImages, render_split
from cm3jax.shapes.render import render
from cm3jax.shapes.world import sample_split


def _numbered(n):
    """Images whose first pixel holds their index, so a batch shows which images it took."""
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return images


def _ids(batch):
    return batch[:, 0, 0, 0].tolist()


def test_render_split_renders_what_render_gives(monkeypatch):
    monkeypatch.setattr(data, "RENDER_CHUNK", 4)  # several chunks
    scenes, images = render_split("eval", 10, 3, 64, progress=False)
    assert scenes == sample_split("eval", 10, 3, 64)
    assert images.shape == (10, 64, 64, 3) and images.dtype == np.uint8
    for scene, image in zip(scenes, images):
        np.testing.assert_array_equal(image, render(scene))
    with pytest.raises(UserError, match="Need at least one train scene"):
        render_split("train", 0, 0, 32, progress=False)


def test_each_epoch_is_a_permutation_without_replacement():
    images = TrainImages(_numbered(12), batch_size=4, shuffle_seed=0)
    for epoch in range(3):
        seen = sum((_ids(images.batch(epoch * 3 + s)) for s in range(3)), [])
        assert sorted(seen) == list(range(12)), epoch
    first = sum((_ids(images.batch(s)) for s in range(3)), [])
    second = sum((_ids(images.batch(s)) for s in range(3, 6)), [])
    assert first != second and first != list(range(12)), "reshuffled every epoch"


def test_batches_straddle_epochs_without_repeating():
    images = TrainImages(_numbered(10), batch_size=4, shuffle_seed=1)
    ids = sum((_ids(images.batch(s)) for s in range(5)), [])  # 20 images: two epochs exactly
    assert sorted(ids[:10]) == sorted(ids[10:]) == list(range(10))


def test_a_steps_batch_is_a_pure_function_of_seed_and_step():
    a = TrainImages(_numbered(16), batch_size=4, shuffle_seed=7)
    b = TrainImages(_numbered(16), batch_size=4, shuffle_seed=7)
    forward = [_ids(a.batch(s)) for s in range(10)]
    backward = [_ids(b.batch(s)) for s in reversed(range(10))][::-1]
    assert forward == backward, "the order steps are asked in does not matter (a resumed run)"
    other = TrainImages(_numbered(16), batch_size=4, shuffle_seed=8)
    assert [_ids(other.batch(s)) for s in range(10)] != forward


def test_a_batch_larger_than_the_set_is_refused():
    TrainImages(_numbered(4), batch_size=4, shuffle_seed=0)
    with pytest.raises(UserError, match="batch_size=5 exceeds the 4 training scenes"):
        TrainImages(_numbered(4), batch_size=5, shuffle_seed=0)
