import dataclasses

import numpy as np
import pytest

from cm3jax.shapes import spec
from cm3jax.shapes.detect import detect
from cm3jax.shapes.render import render, render_many
from cm3jax.shapes.scene import Scene
from cm3jax.shapes.score import score
from cm3jax.shapes.spec import ShapesError
from cm3jax.shapes.world import sample_split


def _ground_truth(resolution):
    scenes = (sample_split("train", 1200, resolution=resolution) + sample_split("eval", 400, resolution=resolution)
              + sample_split("novel", 200, resolution=resolution) + sample_split("memory", 200, resolution=resolution))
    return scenes, render_many(scenes)


@pytest.mark.parametrize("resolution", [32, 64])
def test_detector_scores_100_percent_on_2000_rendered_scenes(resolution):
    scenes, images = _ground_truth(resolution)
    assert len(scenes) == 2000
    report = score(scenes, images)
    assert report["num_emblem_scenes"] > 50
    for key in ("exact_match", "count", "background", "color", "shape", "size", "position", "box_iou",
                "emblem_pixel_accuracy", "emblem_exact_match"):
        assert report[key] == 1.0, key
    for scene, image in list(zip(scenes, images))[:300]:
        found = detect(image)
        assert found.emblem == scene.emblem and found.background == scene.background
        assert sorted(found.objects, key=repr) == sorted(scene.objects, key=repr), "exact centres and sides too"


def _corrupt(scene: Scene, how: str, rng) -> Scene:
    objects = list(scene.objects)
    i = int(rng.integers(len(objects)))
    obj = objects[i]
    if how == "color":
        taken = {(o.color, o.shape) for o in objects}
        color = next(c for c in spec.COLORS if c != obj.color and (c, obj.shape) not in taken)
        objects[i] = dataclasses.replace(obj, color=color)
    elif how == "shift":
        free = [p for p in spec.POSITIONS if p not in {o.position for o in objects}]
        objects[i] = type(obj).at_cell(obj.shape, obj.color, obj.size, free[0])
    else:
        del objects[i]
    return scene.replace(objects=tuple(objects))


@pytest.mark.parametrize("how,attribute", [("color", "color"), ("shift", "position"), ("remove", "count")])
def test_scorer_fails_corrupted_images(how, attribute):
    rng = np.random.default_rng(0)
    scenes = [s for s in sample_split("eval", 300) if s.emblem is None and (how != "remove" or len(s.objects) > 1)]
    images = np.stack([render(_corrupt(s, how, rng)) for s in scenes])
    report = score(scenes, images)
    assert report["exact_match"] == 0.0
    assert report[attribute] < 0.75
    clean = score(scenes, render_many(scenes))
    assert clean["exact_match"] == 1.0


def test_emblem_pixel_accuracy_counts_pixels():
    scene = next(s for s in sample_split("memory", 32) if s.emblem)
    image = render(scene)
    image[:8] = (0, 0, 0) if tuple(image[0, 0]) != (0, 0, 0) else (255, 255, 255)
    report = score([scene], image[None])
    assert report["emblem_pixel_accuracy"] == pytest.approx(0.75, abs=0.02)


def test_colours_snap_within_60_and_noise_is_ignored():
    scene = sample_split("eval", 5)[4]
    image = render(scene).astype(int)
    rng = np.random.default_rng(1)
    noisy = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    specks = noisy.copy()
    specks[0, 31] = (90, 255, 0)  # far from every palette colour
    assert score([scene], noisy[None])["exact_match"] == 1.0
    assert score([scene], specks[None])["exact_match"] == 1.0


def test_scenes_and_images_must_pair_up():
    scenes = sample_split("eval", 2)
    images = render_many(scenes)
    with pytest.raises(ShapesError, match="2 scenes but 1 images"):
        score(scenes, images[:1])
