"""A captioned grid of images, as a PNG a person can look at."""

from __future__ import annotations

import io
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cm3jax.fileio import atomic_write_bytes

CELL = 144
CAPTION_LINES = 6
LINE_HEIGHT = 12
CHARS_PER_LINE = 26


def captioned_grid(images_NRR3: np.ndarray, captions, columns: int = 8) -> Image.Image:
    """Each image scaled (nearest) to CELL pixels with its caption wrapped beneath."""
    n = len(images_NRR3)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    cell_h = CELL + CAPTION_LINES * LINE_HEIGHT + 6
    grid = Image.new("RGB", (columns * (CELL + 4) + 4, rows * cell_h + 4), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, (image, text) in enumerate(zip(images_NRR3, captions)):
        x, y = 4 + (i % columns) * (CELL + 4), 4 + (i // columns) * cell_h
        grid.paste(Image.fromarray(np.asarray(image)).resize((CELL, CELL), Image.NEAREST), (x, y))
        draw.rectangle((x - 1, y - 1, x + CELL, y + CELL), outline=(160, 160, 160))
        lines = textwrap.wrap(text, CHARS_PER_LINE)[:CAPTION_LINES]
        for j, line in enumerate(lines):
            draw.text((x, y + CELL + 2 + j * LINE_HEIGHT), line, fill="black", font=font)
    return grid


def save_png(image: Image.Image, path: str) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
