import dataclasses

import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.eval.prompt_sets import draw, trained_meanings
from cm3jax.shapes.captions import meaning
from cm3jax.shapes.dataset import WorldSpec, example_tasks
from cm3jax.shapes.emblems import UNSEEN_EMBLEMS
from cm3jax.shapes.world import sample_scene

WORLD = WorldSpec(num_train=2_000, num_memory=2_000)


def test_prompt_sets_never_hold_a_training_scene_or_repeat_a_caption():
    train = trained_meanings(WORLD)
    assert len(train) > 1_000
    for split in ("eval", "dev", "novel"):
        prompts = draw(WORLD, split, 200, train)
        assert len(prompts.tasks) == 200 and not prompts.exhausted
        assert not {meaning(s) for s in prompts.scenes} & train
        assert len(set(prompts.captions)) == 200
        assert all(s.id.startswith(split) for s in prompts.scenes)
    eval_set = draw(WORLD, "eval", 200, train)
    assert eval_set.skipped_as_trained > 0  # single-object scenes and seen emblems recur in train
    assert not {s.id for s in eval_set.scenes} & {s.id for s in draw(WORLD, "dev", 200, train).scenes}


def test_prompt_sets_skip_what_the_memory_bank_trains_on_but_keep_the_unseen_emblems():
    memory = [sample_scene("memory", i, WORLD.seed) for i in range(WORLD.num_memory)]
    trained = trained_meanings(WORLD)
    train_only = trained_meanings(dataclasses.replace(WORLD, num_memory=0))
    banked = {meaning(s) for s in memory if s.emblem not in UNSEEN_EMBLEMS}
    assert banked <= trained and banked - train_only
    without_bank = draw(WORLD, "eval", 200, train_only)
    assert {meaning(s) for s in without_bank.scenes} & banked  # the bank would leak these prompts
    prompts = draw(WORLD, "eval", 200, trained)
    assert not {meaning(s) for s in prompts.scenes} & banked
    assert prompts.skipped_as_trained > without_bank.skipped_as_trained
    emblems = draw(WORLD, "emblems_unseen", 200, trained)
    assert {s.emblem for s in emblems.scenes} == set(UNSEEN_EMBLEMS)


def test_a_prompt_set_is_fixed_by_the_world_and_holds_every_task_of_its_scenes():
    train = trained_meanings(WORLD)
    a, b = draw(WORLD, "eval", 16, train), draw(WORLD, "eval", 16, train)
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("sha256:")
    assert draw(WorldSpec(num_train=2_000, seed=1), "eval", 16, train).fingerprint != a.fingerprint
    later = draw(WORLD, "novel", 16, train, start=100_000)
    assert min(later.indices) >= 100_000 and later.fingerprint != draw(WORLD, "novel", 16, train).fingerprint
    tasks = a.tasks[0]
    again = example_tasks("eval", a.indices[0], WORLD.seed, WORLD.resolution)
    assert tasks.scene == again.scene == sample_scene("eval", a.indices[0], WORLD.seed)
    assert np.array_equal(tasks.edit_image, again.edit_image) and tasks.question == again.question


def test_the_unseen_emblems_hold_only_their_distinct_captions():
    prompts = draw(WORLD, "emblems_unseen", 200, trained_meanings(WORLD))
    assert prompts.exhausted and len(prompts.tasks) == 3 * len(UNSEEN_EMBLEMS)  # three caption forms each
    assert {s.emblem for s in prompts.scenes} == set(UNSEEN_EMBLEMS)


@pytest.mark.parametrize("split, size, message", [("train", 4, "not 'train'"), ("eval", 0, "at least one")])
def test_bad_prompt_sets_are_refused(split, size, message):
    with pytest.raises(UserError, match=message):
        draw(WORLD, split, size, frozenset())
