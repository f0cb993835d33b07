import numpy as np
import pytest

from cm3jax.shapes import spec
from cm3jax.shapes.render import render, shape_mask
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.world import sample_split

# Row widths of each shape at the base resolution, worked out by hand from docs/shapes.md.
ROW_WIDTHS = {
    ("square", 6): [6] * 6, ("square", 8): [8] * 8,
    ("circle", 6): [4, 6, 6, 6, 6, 4], ("circle", 8): [4, 6, 8, 8, 8, 8, 6, 4],
    ("diamond", 6): [2, 4, 6, 6, 4, 2], ("diamond", 8): [2, 4, 6, 8, 8, 6, 4, 2],
    ("triangle", 6): [2, 2, 4, 4, 6, 6], ("triangle", 8): [2, 2, 4, 4, 6, 6, 8, 8],
    ("cross", 6): [2, 2, 6, 6, 2, 2], ("cross", 8): [2, 2, 2, 8, 8, 2, 2, 2],
}


@pytest.mark.parametrize("shape,side", sorted(ROW_WIDTHS))
def test_shape_masks_match_the_spec(shape, side):
    mask = shape_mask(shape, side)
    assert mask.shape == (side, side)
    assert mask.sum(axis=1).tolist() == ROW_WIDTHS[shape, side]
    assert np.array_equal(mask, mask[:, ::-1]), "every shape is left-right symmetric"
    rows = np.nonzero(mask)[1].reshape(-1)
    assert rows.min() == 0 and rows.max() == side - 1, "every shape spans its box"


def test_object_box_is_placed_exactly():
    obj = ShapeObject.at_cell("square", "red", "small", "top left", jitter=(-1, 1))  # centre (4, 6)
    image = render(Scene("s", "black", (obj,)))
    ys, xs = np.nonzero((image == spec.COLORS["red"]).all(-1))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (1, 6, 3, 8)


def test_rendering_is_exact_and_scales():
    for scene in sample_split("train", 200):
        small, big = render(scene, 32), render(scene, 64)
        colors = {tuple(c) for c in small.reshape(-1, 3)}
        assert colors <= {tuple(c) for c in spec.PALETTE_RGB}, "no anti-aliasing"
        if scene.emblem is None:
            assert {tuple(c) for c in big.reshape(-1, 3)} == colors
            # A square scales to exactly the 2x2 upsampling of its base rendering.
            for obj in scene.objects:
                x0, y0, x1, y1 = obj.box()
                if obj.shape == "square":
                    assert np.array_equal(big[2 * y0:2 * y1, 2 * x0:2 * x1],
                                          small[y0:y1, x0:x1].repeat(2, 0).repeat(2, 1))


def test_later_objects_paint_over_earlier():
    a = ShapeObject.free("square", "red", (16, 16), 10)
    b = ShapeObject.free("circle", "blue", (16, 16), 6)
    image = render(Scene("s", "white", (a, b)))
    assert tuple(image[16, 16]) == spec.COLORS["blue"]
    assert tuple(image[12, 12]) == spec.COLORS["red"]


def test_unsupported_resolution_is_refused():
    with pytest.raises(spec.ShapesError, match="resolution 48"):
        render(sample_split("eval", 1)[0], 48)
