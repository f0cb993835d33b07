import hashlib
import os

import grain.python as grain
import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.shapes import dataset
from cm3jax.shapes.dataset import WorldSpec, data_source, make, scene_of
from cm3jax.shapes.render import render
from cm3jax.shapes.spec import ShapesError
from cm3jax.shapes.world import SPLITS, sample_scene

TINY = WorldSpec(num_train=40, num_eval=12, num_novel=8, num_emblems_unseen=16, num_memory=36)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world") / "shapes")
    result = make(out, TINY, workers=1, progress=False)
    assert result["status"] == "made" and result["scenes"] == sum(TINY.counts().values())
    return out


def _digests(directory):
    data = os.path.join(directory, dataset.NAME, TINY.version)
    return {name: hashlib.sha256(open(os.path.join(data, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(data)) if "array_record" in name}


def test_every_split_loads_through_tfds_and_grain(made):
    assert set(TINY.counts()) == set(SPLITS) - {"dev"}
    for split in TINY.counts():
        source = data_source(made, split)
        assert len(source) == TINY.counts()[split]
        example = source[len(source) - 1]
        scene = scene_of(example)
        assert scene == sample_scene(split, len(source) - 1, TINY.seed)
        assert np.array_equal(example["image"], render(scene))
        assert example["image"].dtype == np.uint8 and example["edges"].shape == (32, 32)
    loader = (grain.MapDataset.source(data_source(made, "train")).shuffle(seed=3)
              .map(lambda e: (e["image"], e["infill_box"])).batch(8))
    images, boxes = loader[0]
    assert images.shape == (8, 32, 32, 3) and boxes.shape == (8, 4)


def test_an_empty_split_reads_as_empty(tmp_path):
    out = str(tmp_path / "w")
    make(out, WorldSpec(num_train=3, num_eval=0, num_novel=0, num_emblems_unseen=0, num_memory=0), workers=1,
         progress=False)
    assert len(data_source(out, "eval")) == 0 and list(dataset.iterate(out, "eval")) == []
    assert len(data_source(out, "train")) == 3


def test_examples_hold_every_task_variant(made):
    example = next(e for e in dataset.iterate(made, "train") if e["edit_instruction"])
    assert np.array_equal(example["edit_image"], render(scene_of(example, "edit_scene")))
    assert np.array_equal(example["grounding_image"], render(scene_of(example, "grounding_scene")))
    for key in ("caption", "caption_short", "caption_long", "question", "answer", "grounding_caption"):
        assert example[key], key


def test_same_spec_same_bytes_in_parallel_too(made, tmp_path):
    again = str(tmp_path / "again")
    make(again, TINY, workers=2, progress=False)
    assert _digests(again) == _digests(made)


def test_making_the_same_dataset_again_is_a_no_op(made):
    before = _digests(made)
    assert make(made, TINY, progress=False)["status"] == "exists"
    assert _digests(made) == before


def test_a_directory_with_a_different_dataset_is_refused_untouched(made):
    before = _digests(made)
    with pytest.raises(UserError, match="different Shapes dataset.*num_train: 40 there, 41 asked"):
        make(made, WorldSpec(**{**TINY.__dict__, "num_train": 41}), progress=False)
    assert _digests(made) == before


def test_a_non_empty_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        make(str(tmp_path), TINY, progress=False)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_failed_make_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(dataset, "_write_info", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        make(str(tmp_path / "out"), TINY, workers=1, progress=False)
    assert os.listdir(tmp_path) == []


def test_bad_specs_are_refused(tmp_path):
    with pytest.raises(ShapesError, match="resolution 40"):
        make(str(tmp_path / "a"), WorldSpec(resolution=40))
    with pytest.raises(ShapesError, match="at least 32"):
        make(str(tmp_path / "a"), WorldSpec(num_memory=5))
    with pytest.raises(UserError, match="No Shapes dataset in .*`cm3jax shapes make --out"):
        data_source(str(tmp_path), "train")


def test_dev_is_drawn_not_stored_and_any_index_matches_what_make_stores(made):
    with pytest.raises(ShapesError, match="dev split is not stored.*example_tasks"):
        data_source(made, "dev")
    stored = data_source(made, "eval")[3]
    tasks = dataset.example_tasks("eval", 3, TINY.seed, TINY.resolution)
    assert scene_of(stored) == tasks.scene and np.array_equal(stored["edit_image"], tasks.edit_image)
    assert stored["edit_instruction"].decode() == tasks.edit_instruction
    dev = dataset.example_tasks("dev", 3, TINY.seed, TINY.resolution)
    assert dev.scene.id == "dev-000003" and dev.scene != tasks.scene
