"""The Shapes vocabulary's checks: unsupported resolutions and unknown words are refused with a
message naming them (and the nearest valid words), and the position and size helpers."""

import pytest

from cm3jax.errors import UserError
from cm3jax.shapes import spec
from cm3jax.shapes.spec import ShapesError


def test_check_resolution_accepts_the_supported_sides_only():
    for resolution in spec.RESOLUTIONS:
        assert spec.check_resolution(resolution) == resolution
    for bad in (48, 16, 512, 0):
        with pytest.raises(ShapesError, match=f"Unsupported resolution {bad}; use one of 32, 64, 128, 256"):
            spec.check_resolution(bad)


def test_check_word_returns_valid_words_and_suggests_near_ones():
    assert spec.check_word("circle", spec.SHAPES, "shape") == "circle"
    with pytest.raises(ShapesError, match=r"Unknown shape 'circel'\. Did you mean 'circle'\?") as e:
        spec.check_word("circel", spec.SHAPES, "shape")
    assert "Valid shapes: square, circle, diamond, triangle, cross." in str(e.value)
    with pytest.raises(ShapesError, match="Did you mean 'top left' or 'bottom left' or 'top'\\?"):
        spec.check_word("top lef", spec.POSITIONS, "position")
    with pytest.raises(ShapesError) as e:
        spec.check_word("zzzz", spec.COLORS, "color")
    assert "Did you mean" not in str(e.value) and "Unknown color 'zzzz'." in str(e.value)
    assert issubclass(ShapesError, UserError)


def test_positions_cells_and_sizes():
    assert [spec.position_of_cell(c, r) for r, c in [(0, 0), (1, 1), (2, 2)]] == ["top left", "center",
                                                                                 "bottom right"]
    for position in spec.POSITIONS:
        assert spec.position_of_cell(*spec.cell_of_position(position)) == position
    for col, x in enumerate(spec.CELL_CENTERS):
        for row, y in enumerate(spec.CELL_CENTERS):
            assert spec.position_of_point(x, y) == spec.position_of_cell(col, row)
    assert spec.position_of_point(10.4, 21.6) == "bottom left"
    assert spec.position_of_point(10.5, 21.5) == "bottom"
    assert spec.size_of_side(6) == "small" and spec.size_of_side(8) == "large" and spec.size_of_side(7) == "large"
    with pytest.raises(ShapesError, match="Unknown position 'middle'"):
        spec.cell_of_position("middle")


def test_the_palette_lists_objects_then_backgrounds():
    assert spec.PALETTE_NAMES == tuple(spec.COLORS) + tuple(spec.BACKGROUNDS)
    assert spec.PALETTE_RGB.shape == (11, 3)
    assert tuple(spec.PALETTE_RGB[spec.PALETTE_NAMES.index("gray")]) == (128, 128, 128)
