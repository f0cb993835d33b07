"""The fixed vocabulary of the Shapes world (docs/shapes.md is the contract)."""

from __future__ import annotations

import difflib

import numpy as np

from cm3jax.errors import UserError

WORLD_VERSION = "1.0.0"
BASE_RESOLUTION = 32
RESOLUTIONS = (32, 64, 128, 256)

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 50),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "pink": (240, 120, 180),
}
SHAPES = ("square", "circle", "diamond", "triangle", "cross")
SIZES: dict[str, int] = {"small": 6, "large": 8}
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
CELL_CENTERS = (5, 16, 27)
JITTERS = (-1, 0, 1)
MAX_OBJECTS = 3
GROUNDING_SIDES = tuple(range(4, 17, 2))
GRID_MAX = 255  # grounding boxes live on a 0..255 grid whatever the resolution

# Every named colour a pixel can be snapped to, in a fixed order (objects first).
PALETTE_NAMES: tuple[str, ...] = tuple(COLORS) + tuple(BACKGROUNDS)
PALETTE_RGB = np.array([COLORS.get(n) or BACKGROUNDS[n] for n in PALETTE_NAMES], dtype=np.int32)
SNAP_DISTANCE = 60.0

NUMBER_WORDS = ("zero", "one", "two", "three")


class ShapesError(UserError):
    """Input that the Shapes world cannot accept; the message says what and how to fix it."""


def check_word(word: str, allowed, what: str) -> str:
    """Returns `word` if it is one of `allowed`, else raises naming it and its nearest valid words."""
    if word in allowed:
        return word
    near = difflib.get_close_matches(str(word), list(allowed), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    raise ShapesError(
        f"Unknown {what} {word!r}.{hint} Valid {what}s: {', '.join(allowed)}."
    )


def check_resolution(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ShapesError(
            f"Unsupported resolution {resolution}; use one of {', '.join(map(str, RESOLUTIONS))}."
        )
    return resolution


def position_of_cell(col: int, row: int) -> str:
    return POSITIONS[row * 3 + col]


def cell_of_position(position: str) -> tuple[int, int]:
    index = POSITIONS.index(check_word(position, POSITIONS, "position"))
    return index % 3, index // 3


def position_of_point(x: float, y: float) -> str:
    """The 3x3 cell a point (in base-resolution pixels) falls in."""
    col = 0 if x < 10.5 else (1 if x < 21.5 else 2)
    row = 0 if y < 10.5 else (1 if y < 21.5 else 2)
    return position_of_cell(col, row)


def size_of_side(side: int) -> str:
    """The size word of an object whose box side is `side` base pixels (nearest of small/large)."""
    return "small" if side < (SIZES["small"] + SIZES["large"]) / 2 else "large"
