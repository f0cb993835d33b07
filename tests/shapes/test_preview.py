"""captioned_grid: N images in rows of `columns` cells, each scaled to CELL pixels with its
caption beneath; save_png writes it as a PNG."""

import numpy as np
import pytest
from PIL import Image

from cm3jax.shapes.preview import CAPTION_LINES, CELL, LINE_HEIGHT, captioned_grid, save_png

CELL_H = CELL + CAPTION_LINES * LINE_HEIGHT + 6


@pytest.mark.parametrize("n,columns,grid", [(1, 8, (1, 1)), (5, 8, (5, 1)), (8, 8, (8, 1)), (9, 8, (8, 2)),
                                             (7, 3, (3, 3)), (4, 0, (1, 4))])
def test_grid_size_follows_the_number_of_images_and_columns(n, columns, grid):
    images = np.zeros((n, 32, 32, 3), np.uint8)
    image = captioned_grid(images, [f"image {i}" for i in range(n)], columns)
    cols, rows = grid
    assert image.size == (cols * (CELL + 4) + 4, rows * CELL_H + 4)


def test_images_are_scaled_nearest_into_their_cells():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[0] = (255, 0, 0)
    images[1, :, 16:] = (0, 0, 255)
    grid = np.asarray(captioned_grid(images, ["red", "half blue"], columns=2))
    assert tuple(grid[4 + CELL // 2, 4 + CELL // 2]) == (255, 0, 0)
    x1 = 4 + CELL + 4
    assert tuple(grid[4 + 10, x1 + 10]) == (0, 0, 0) and tuple(grid[4 + 10, x1 + CELL - 10]) == (0, 0, 255)
    below = grid[4 + CELL + 2:4 + CELL + 2 + LINE_HEIGHT, 4:4 + CELL]
    assert (below != 255).any(), "the caption is drawn under the cell"
    assert (grid[-3:] == 255).all(), "white margin"


def test_save_png_writes_a_png(tmp_path):
    image = captioned_grid(np.zeros((3, 32, 32, 3), np.uint8), ["a", "b", "c"], 2)
    path = str(tmp_path / "grid.png")
    save_png(image, path)
    with Image.open(path) as read:
        assert read.format == "PNG" and read.size == image.size
        np.testing.assert_array_equal(np.asarray(read.convert("RGB")), np.asarray(image))
