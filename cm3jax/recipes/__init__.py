"""The recipe folders, `experiments/`, `tokenizers/` and `retrieval/`: the repository's top-level
folders in a source checkout, shipped inside the package (cm3jax/recipes/...) in a wheel, so a
command's `--config experiments/NAME.py` and the demo's configs work however cm3jax was installed."""

from __future__ import annotations

import os

PACKAGED = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(PACKAGED))
FOLDERS = ("experiments", "tokenizers", "retrieval")


def packaged_recipe(path: str) -> str | None:
    """The shipped copy of `path` (a path into a recipe folder, such as experiments/NAME.py): the
    package's in a wheel, the checkout's in a source tree; None for any other path."""
    parts = os.path.normpath(path).split(os.sep)
    if os.path.isabs(path) or parts[0] not in FOLDERS:
        return None
    for root in (PACKAGED, CHECKOUT):
        candidate = os.path.join(root, *parts)
        if os.path.exists(candidate):
            return candidate
    return None


def recipe_path(path: str) -> str:
    """`path` itself when it exists (from the working directory, or absolute), else its shipped
    copy, else `path` unchanged (for the caller's message)."""
    if os.path.exists(path):
        return path
    return packaged_recipe(path) or path
