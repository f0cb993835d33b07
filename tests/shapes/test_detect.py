"""The detector: images are checked (uint8 [R, R, 3] at a supported R), pixels snap to the
palette within SNAP_DISTANCE or become noise, and a rendered scene is read back exactly,
objects, background and emblem alike, at every scale."""

import numpy as np
import pytest

from cm3jax.shapes import spec
from cm3jax.shapes.detect import NOISE, check_image, detect, emblem_pixel_accuracy, snap
from cm3jax.shapes.emblems import EMBLEM_NAMES, render_emblem
from cm3jax.shapes.render import render, render_many
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.spec import ShapesError
from cm3jax.shapes.world import sample_split


def test_bad_images_are_refused_with_the_reason():
    images = render_many(sample_split("eval", 2))
    assert check_image(images[0]) is not None
    with pytest.raises(ShapesError, match="dtype float32"):
        check_image(images[0].astype(np.float32))
    with pytest.raises(ShapesError, match=r"shape \(32, 32\)"):
        check_image(images[0, :, :, 0])
    with pytest.raises(ShapesError, match=r"query has shape \(32, 30, 3\)"):
        check_image(images[0, :, :30], "query")
    with pytest.raises(ShapesError, match="resolution 30"):
        check_image(images[0, :30, :30])


def test_snap_finds_the_nearest_palette_colour_within_the_distance():
    image = np.zeros((1, 4, 3), np.uint8)
    image[0, 0] = spec.COLORS["red"]
    image[0, 1] = np.array(spec.COLORS["blue"]) + 20  # 34.6 away: still blue
    image[0, 2] = (90, 255, 0)  # far from every colour
    image[0, 3] = (120, 130, 125)  # near gray
    labels = snap(image)
    assert labels.tolist() == [[spec.PALETTE_NAMES.index("red"), spec.PALETTE_NAMES.index("blue"), NOISE,
                                spec.PALETTE_NAMES.index("gray")]]


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_a_drawn_scene_is_read_back_exactly(resolution):
    objects = (ShapeObject.at_cell("circle", "red", "large", "top left"),
               ShapeObject.at_cell("triangle", "cyan", "small", "center"),
               ShapeObject.at_cell("cross", "yellow", "large", "bottom right"))
    scene = Scene("s", "gray", objects, resolution=resolution)
    found = detect(render(scene), "found")
    assert found.id == "found" and found.resolution == resolution
    assert found.background == "gray" and found.emblem is None
    assert found.objects == objects, "in position order, with exact centres and sides"


def test_rendered_scenes_of_every_split_are_read_back():
    for scene in sample_split("train", 40) + sample_split("memory", 40):
        found = detect(render(scene))
        assert found.emblem == scene.emblem and found.background == scene.background
        assert sorted(found.objects, key=repr) == sorted(scene.objects, key=repr)


def test_emblems_are_recognised_and_specks_are_noise():
    name = EMBLEM_NAMES[5]
    image = render_emblem(name, 64)
    assert detect(image).emblem == name
    labels = snap(image)
    assert emblem_pixel_accuracy(labels, name) == 1.0
    assert emblem_pixel_accuracy(labels, EMBLEM_NAMES[6]) < 1.0
    scene = Scene("s", "white", (ShapeObject.at_cell("square", "blue", "small", "left"),))
    specked = render(scene)
    specked[0, 0] = spec.COLORS["red"]  # one pixel: under the 4-pixel floor
    assert detect(specked).objects == scene.objects
    assert detect(np.full((32, 32, 3), 255, np.uint8)).objects == ()
